"""Generation settings: the validated, complete set of choices one run of the engine follows.

:func:`settings_for` checks every argument before any work and fills the paper defaults
(:mod:`.defaults`) for the ones left as ``None``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from .. import _validate
from ..suspects import IMAGENET  # torchvision's / timm's default, defined once
from . import defaults

METHODS = ("vanilla", "rc", "rcgm", "ltrc")
PRECISIONS = ("fp32", "bf16")


@dataclasses.dataclass(frozen=True)
class Settings:
    method: str
    k: int          # high-pass band (0 unless ltrc)
    delta: float    # weight-noise bound (0 for vanilla)
    q: int          # noisy copies per step (1 for vanilla and rc)
    alpha: float
    steps: int
    eta: float
    seed: int
    precision: str = "fp32"
    copies: int = 1  # noisy copies evaluated per batched (vmap) call; 1: one after the other
    lo: float = 0.0
    hi: float = 1.0
    quantize: int | None = None  # bits per stored pixel (8, 16) or None: float32

    @property
    def noisy(self) -> bool:
        return self.method != "vanilla" and self.delta > 0

    @property
    def projects(self) -> bool:
        """Does the stored example differ from the iterate? (The high-pass leaves [lo, hi];
        quantisation rounds.) Only then does the early-stop test need its own forward."""
        return self.k > 0 or self.quantize is not None


QUANTIZE = (None, 8, 16)


def check_normalize(normalize: object, channels: int) -> tuple[tuple[float, ...],
                                                               tuple[float, ...]] | None:
    """``None`` / ``"none"`` (the model takes pixels), ``"imagenet"``, or ``(mean, std)`` with one
    value per channel (or one for all): the model sees ``(x - mean) / std``."""
    if normalize is None or normalize == "none":
        return None
    if normalize == "imagenet":
        normalize = IMAGENET
    if isinstance(normalize, str) or not isinstance(normalize, (tuple, list)) or \
            len(normalize) != 2:
        raise TypeError("normalize: expected None, 'imagenet' or a (mean, std) pair, got "
                        f"{normalize!r}")
    out = []
    for name, values in zip(("mean", "std"), normalize, strict=True):
        values = [values] if isinstance(values, (int, float)) else list(values)
        if len(values) == 1:
            values = values * channels
        if len(values) != channels:
            raise ValueError(f"normalize: {name} has {len(values)} values for {channels} "
                             "channels")
        values = [_validate.real(f"normalize {name}", v) for v in values]
        if name == "std" and min(values) <= 0:
            raise ValueError(f"normalize: std must be > 0, got {values}")
        out.append(tuple(values))
    return out[0], out[1]


def settings_for(method: str, input_shape: Sequence[int], *, k: int | None = None,
                 delta: float | None = None, q: int = 10, alpha: float | None = None,
                 steps: int = 500, eta: float = 1e-6, seed: int = 0,
                 precision: str = "fp32", quantize: int | None = None) -> Settings:
    """Validate the generation settings and fill the paper defaults for ``None`` ones."""
    method = _validate.choice("method", method, METHODS)
    if quantize not in QUANTIZE or isinstance(quantize, bool):
        raise ValueError(f"quantize: expected None, 8 or 16 (bits per pixel), got {quantize!r}")
    h, w = input_shape[-2:]
    steps = _validate.integer("steps", steps, lo=1)
    q = _validate.integer("q", q, lo=1)
    eta = _validate.real("eta", eta)
    seed = _validate.integer("seed", seed, lo=0, hi=2 ** 63 - 1)
    precision = _validate.choice("precision", precision, PRECISIONS)
    if k is not None:
        k = _validate.integer("k", k, lo=0, hi=max(h + w - 2, 0))
        if k > 0 and method != "ltrc":
            raise ValueError(f"k: only method 'ltrc' applies the high-pass, got k={k} with "
                             f"method {method!r}")
    if delta is not None:
        # The noise draws delta in float32 (fastfp.noise rejects more, but only once running).
        delta = _validate.real("delta", delta, lo=0.0, hi=float(torch.finfo(torch.float32).max))
        if delta > 0 and method == "vanilla":
            raise ValueError(f"delta: method 'vanilla' uses no weight noise, got delta={delta}")
    if alpha is not None:
        alpha = _validate.real("alpha", alpha, lo=0.0)
        if alpha == 0:
            raise ValueError("alpha: expected a positive step size, got 0")
    k = (defaults.k_for(input_shape) if k is None else k) if method == "ltrc" else 0
    delta = 0.0 if method == "vanilla" else (defaults.delta_for(input_shape) if delta is None
                                             else delta)
    q = q if method in ("rcgm", "ltrc") else 1
    alpha = defaults.alpha_for(steps, k=k, input_shape=input_shape) if alpha is None else alpha
    return Settings(method=method, k=k, delta=delta, q=q, alpha=alpha, steps=steps, eta=eta,
                    seed=seed, precision=precision, quantize=quantize)


def describe(s: Settings) -> dict:
    """The settings as they are recorded in a fingerprint's metadata."""
    return {"method": s.method, "k": s.k, "delta": s.delta, "q": s.q, "alpha": s.alpha,
            "steps": s.steps, "eta": s.eta, "seed": s.seed, "precision": s.precision,
            "quantize": s.quantize}
