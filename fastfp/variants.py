"""Model variants: the FBI paper's list (Maho et al., TIFS'23, App. A) plus the C-examples paper's
unstructured global magnitude pruning (Wang et al., IJCAI'21, Sect. 4).

A variant is always an ``nn.Module`` built from a deep copy: the source model is never modified.
Input-side variants (JPEG, histogram equalisation, posterize, randomized smoothing) wrap the model.
Inputs are images in [0, 1], (N, C, H, W); the image-codec variants need C = 1 or 3.

Procedures and parameters (the paper's):

- identity; half precision (weights and activations in float16);
- JPEG compression, quality 30..90 step 10 (PIL, encode + decode, per image);
- histogram equalisation (PIL ``ImageOps.equalize``, torchvision's ``equalize`` does the same);
- posterize (colour depth reduction) to 3..7 bits (keep the top bits of the 8-bit value);
- randomized smoothing (Cohen et al.): majority vote over ``n`` Gaussian-noised copies, sigma in
  0.01, 0.02, 0.04, 0.06, 0.08, 0.1; the outputs are vote frequencies (so top-k works);
- fine-tuning all layers / only the last layer, on a given data set (SGD);
- pruning, ``torch.nn.utils.prune``: all layers (L1 unstructured per layer) 1..4 %, filters (L1 norm
  of conv output channels) 10..30 %, last layer (L1 unstructured) 70..95 %;
- global unstructured magnitude pruning (C-examples paper, Han et al.) 40..80 %.

Which variants stay in a family is the FBI paper's eq. (1), a relative accuracy drop of at most
15 %: :func:`fastfp.fbi.protocol.accuracy_filter` (:func:`accuracy_filter` here is a deprecated
model-level alias of the same rule).
"""

from __future__ import annotations

import copy
import functools
import io
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _validate
from ._models import check_labels, check_model
from ._training import check_data, deterministic, fit, prunable

Data = tuple[torch.Tensor, torch.Tensor]  # (x, y): images and their classes

JPEG_QUALITIES = (30, 40, 50, 60, 70, 80, 90)
POSTERIZE_BITS = (3, 4, 5, 6, 7)
SMOOTHING_SIGMAS = (0.01, 0.02, 0.04, 0.06, 0.08, 0.1)
PRUNE_ALL = (0.01, 0.02, 0.03, 0.04)
PRUNE_FILTERS = (0.10, 0.20, 0.30)
PRUNE_LAST = (0.70, 0.80, 0.90, 0.95)
PRUNE_GLOBAL = (0.40, 0.50, 0.60, 0.70, 0.80)
FINETUNE_EPOCHS = (1, 3)
MAX_DROP = 0.15  # eq. (1)'s tolerance, relative (fastfp.fbi.protocol.MAX_DROP)


# ------------------------------------------------------------------------- input transforms
def _check_images(x: torch.Tensor) -> torch.Tensor:
    _validate.tensor("x", x, floating=True)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"x: expected images (N, 1 or 3, H, W), got shape {tuple(x.shape)}")
    return x


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> uint8 (N, H, W, C), rounding to the nearest level."""
    u8 = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return u8.permute(0, 2, 3, 1).cpu().numpy()


def _from_uint8(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)
    return t.to(like.device, like.dtype) / 255.0


def _per_image_pil(x: torch.Tensor, fn: Callable[[Any], Any]) -> torch.Tensor:
    from PIL import Image

    a = _to_uint8(_check_images(x))
    mode = "L" if a.shape[-1] == 1 else "RGB"
    out = np.empty_like(a)
    for i in range(a.shape[0]):
        img = Image.fromarray(a[i, :, :, 0] if mode == "L" else a[i], mode=mode)
        res = np.asarray(fn(img), dtype=np.uint8)
        out[i] = res.reshape(out[i].shape)
    return _from_uint8(out, x)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG encode + decode each image at ``quality`` (1..95), via PIL."""
    quality = _validate.integer("quality", quality, lo=1, hi=95)
    from PIL import Image

    def fn(img: Any) -> Any:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        return Image.open(buf).convert(img.mode)

    return _per_image_pil(x, fn)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation of each image (PIL ``ImageOps.equalize`` on the 8-bit image)."""
    from PIL import ImageOps

    return _per_image_pil(x, ImageOps.equalize)


def posterize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Keep the top ``bits`` (1..8) bits of each 8-bit value (torchvision / PIL posterize)."""
    bits = _validate.integer("bits", bits, lo=1, hi=8)
    _check_images(x)
    u = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    mask = (0xFF << (8 - bits)) & 0xFF
    return (u & mask).to(x.dtype) / 255.0


class InputTransform(nn.Module):
    """``model(transform(x))``: an input-side variant that is still a model."""

    def __init__(self, model: nn.Module, transform: Callable[[torch.Tensor], torch.Tensor],
                 name: str) -> None:
        super().__init__()
        self.model = check_model(model)
        self.transform = transform
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.transform(x))

    def extra_repr(self) -> str:
        return f"transform={self.name}"


class HalfPrecision(nn.Module):
    """Weights and activations in float16; float32 in and out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(check_model(model)).half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


class RandomizedSmoothing(nn.Module):
    """Cohen et al.'s smoothed classifier: the outputs are the vote frequencies of the base
    model's top-1 over ``n`` copies of the input with N(0, sigma^2) noise (argmax = the smoothed
    prediction).

    The noise is drawn from a generator seeded with ``seed`` at every call, so the variant is a
    deterministic function, like the other variants.
    """

    def __init__(self, model: nn.Module, sigma: float, n: int = 100, seed: int = 0,
                 chunk: int = 4096) -> None:
        super().__init__()
        self.model = check_model(model)
        self.sigma = _validate.real("sigma", sigma, lo=0.0)
        self.n = _validate.integer("n", n, lo=1)
        self.seed = _validate.integer("seed", seed, lo=0)
        self.chunk = _validate.integer("chunk", chunk, lo=1)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _validate.tensor("x", x, min_dim=1, floating=True)  # the Gaussian noise needs float inputs
        g = torch.Generator(device=x.device).manual_seed(self.seed)
        counts: torch.Tensor | None = None
        per = max(1, self.chunk // max(x.shape[0], 1))  # noisy copies per model call
        done = 0
        while done < self.n:
            r = min(per, self.n - done)
            xr = x.unsqueeze(0).expand(r, *x.shape).reshape(r * x.shape[0], *x.shape[1:])
            noisy = xr + self.sigma * torch.randn(xr.shape, generator=g, device=x.device,
                                                  dtype=x.dtype)
            out = self.model(noisy)
            if not isinstance(out, torch.Tensor) or out.dim() != 2:
                raise TypeError("model: expected a classifier returning 2-D logits, got "
                                f"{type(out).__name__}")
            pred = out.argmax(-1).view(r, x.shape[0])
            c = F.one_hot(pred, self.num_classes(x)).sum(0)
            counts = c if counts is None else counts + c
            done += r
        assert counts is not None  # n >= 1
        return counts.float() / self.n

    def num_classes(self, x: torch.Tensor) -> int:
        """The base model's number of classes (from one forward pass, then remembered)."""
        if not hasattr(self, "_nc"):
            self._nc = int(self.model(x[:1]).shape[-1])
        return self._nc

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, n={self.n}, seed={self.seed}"


# ------------------------------------------------------------------------------------ pruning
def prune_global(model: nn.Module, rate: float, *,
                 retrain: Callable[[nn.Module], object] | None = None) -> nn.Module:
    """Unstructured global magnitude pruning (Han et al.): zero the ``rate`` fraction of all conv
    and linear weights with the smallest |w|, across layers. Returns a pruned deep copy.

    ``retrain(pruned)``, if given, runs while the mask is held (the pruned weights stay zero
    through optimizer steps), before the mask is baked into the weights."""
    from torch.nn.utils import prune

    rate = _validate.real("rate", rate, lo=0.0, hi=1.0)
    m = copy.deepcopy(check_model(model))
    params = [(layer, "weight") for layer in prunable(m)]
    if not params:
        raise ValueError("model: has no Conv2d or Linear layer to prune")
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=rate)
    if retrain is not None:
        retrain(m)
    for layer, name in params:
        prune.remove(layer, name)  # bake the mask in: weights stay exactly zero
    return m


def prune_all(model: nn.Module, amount: float) -> nn.Module:
    """L1 unstructured pruning of ``amount`` of the weights of every conv / linear layer."""
    from torch.nn.utils import prune

    amount = _validate.real("amount", amount, lo=0.0, hi=1.0)
    m = copy.deepcopy(check_model(model))
    for layer in prunable(m):
        prune.l1_unstructured(layer, "weight", amount=amount)
        prune.remove(layer, "weight")
    return m


def prune_filters(model: nn.Module, amount: float) -> nn.Module:
    """Filter pruning: zero ``amount`` of the output channels (smallest L1 norm) of every conv
    layer. Models without conv layers (an MLP) get their hidden linear layers' output units pruned
    instead."""
    from torch.nn.utils import prune

    amount = _validate.real("amount", amount, lo=0.0, hi=1.0)
    m = copy.deepcopy(check_model(model))
    layers = [x for x in m.modules() if isinstance(x, nn.Conv2d)] or prunable(m)[:-1]
    for layer in layers:
        prune.ln_structured(layer, "weight", amount=amount, n=1, dim=0)
        prune.remove(layer, "weight")
    return m


def prune_last(model: nn.Module, amount: float) -> nn.Module:
    """L1 unstructured pruning of ``amount`` of the weights of the last conv / linear layer."""
    from torch.nn.utils import prune

    amount = _validate.real("amount", amount, lo=0.0, hi=1.0)
    m = copy.deepcopy(check_model(model))
    layers = prunable(m)
    if not layers:
        raise ValueError("model: has no Conv2d or Linear layer to prune")
    prune.l1_unstructured(layers[-1], "weight", amount=amount)
    prune.remove(layers[-1], "weight")
    return m


# ----------------------------------------------------------------------------------- fine-tuning
def finetune(model: nn.Module, data: Data, *, layers: str = "all", epochs: int = 1,
             lr: float = 0.01, batch_size: int = 64, seed: int = 0) -> nn.Module:
    """Fine-tune a deep copy on ``data = (x, y)`` with SGD (momentum 0.9), deterministically.

    ``layers="all"`` trains every parameter (BatchNorm statistics update too); ``"last"`` only the
    last conv / linear layer, with the rest frozen and in eval mode.
    """
    check_model(model)
    _validate.choice("layers", layers, ("all", "last"))
    epochs = _validate.integer("epochs", epochs, lo=0)
    lr = _validate.real("lr", lr, lo=0.0)
    batch_size = _validate.integer("batch_size", batch_size, lo=1)
    seed = _validate.integer("seed", seed, lo=0)
    x, y = check_data(data)
    m = copy.deepcopy(model).float()
    if layers == "all":
        params = list(m.parameters())
        m.train()
    else:
        layers_ = prunable(m)
        if not layers_:
            raise ValueError("model: has no Conv2d or Linear layer to fine-tune")
        for p in m.parameters():
            p.requires_grad_(False)
        params = list(layers_[-1].parameters())
        for p in params:
            p.requires_grad_(True)
        m.eval()
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    with deterministic():
        fit(m, x, y, opt, epochs=epochs, batch_size=batch_size,
            generator=torch.Generator().manual_seed(seed))
    for p in m.parameters():
        p.requires_grad_(True)
    return m.eval()


# ------------------------------------------------------------------------------------ catalogue
@dataclass(frozen=True)
class Spec:
    """One variant procedure with its parameter: ``kind`` groups them (the paper's F(m, Psi))."""

    kind: str
    param: float | int | str | None = None
    options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def name(self) -> str:
        """``kind`` or ``kind:param`` (e.g. ``"jpeg:50"``)."""
        return self.kind if self.param is None else f"{self.kind}:{self.param}"

    def needs_data(self) -> bool:
        """Whether :meth:`apply` needs a fine-tuning data set."""
        return self.kind.startswith("finetune")

    def apply(self, model: nn.Module, data: Data | None = None) -> nn.Module:
        """The variant of ``model`` (a new module; ``model`` is left untouched)."""
        k, o = self.kind, self.options
        p: Any = self.param
        check_model(model)
        if k == "identity":
            return copy.deepcopy(model).eval()
        if k == "half":
            return HalfPrecision(model).eval()
        if k == "jpeg":
            return InputTransform(copy.deepcopy(model), functools.partial(jpeg, quality=p),
                                  f"jpeg(q={p})").eval()
        if k == "equalize":
            return InputTransform(copy.deepcopy(model), equalize, "equalize").eval()
        if k == "posterize":
            return InputTransform(copy.deepcopy(model), functools.partial(posterize, bits=p),
                                  f"posterize({p})").eval()
        if k == "smoothing":
            return RandomizedSmoothing(copy.deepcopy(model), p, n=o.get("n", 100),
                                       seed=o.get("seed", 0)).eval()
        if k in ("finetune_all", "finetune_last"):
            if data is None:
                raise ValueError(f"data: variant {self.name!r} needs a fine-tuning data set (x, y)")
            return finetune(model, data, layers=k.split("_")[1], epochs=int(p),
                            lr=o.get("lr", 0.01), seed=o.get("seed", 0))
        if k == "prune_all":
            return prune_all(model, p).eval()
        if k == "prune_filters":
            return prune_filters(model, p).eval()
        if k == "prune_last":
            return prune_last(model, p).eval()
        if k == "prune_global":
            return prune_global(model, p).eval()
        raise ValueError(f"kind: unknown variant kind {k!r}; expected one of {', '.join(KINDS)}")


KINDS = ("identity", "half", "jpeg", "equalize", "posterize", "smoothing", "finetune_all",
         "finetune_last", "prune_all", "prune_filters", "prune_last", "prune_global")


def catalog(*, quick: bool = False, smoothing_n: int = 100, with_global: bool = True,
            finetune: bool = True, per_range: int | None = None) -> list[Spec]:
    """The paper's procedures with its parameters (36 specs: fine-tuning at two epoch counts; 41
    with the C-examples paper's global pruning).

    ``per_range``: keep only the extremes (2) or the extremes and the middle (3) of each parameter
    range; ``quick`` is ``per_range=3`` (for tests and quick demos). Fine-tuning keeps one epoch
    count whenever ``per_range`` is set.
    """
    smoothing_n = _validate.integer("smoothing_n", smoothing_n, lo=1)
    if quick and per_range is None:
        per_range = 3
    if per_range is not None:
        _validate.choice("per_range", per_range, (2, 3))

    def pick(values: tuple[Any, ...]) -> tuple[Any, ...]:
        if per_range is None or len(values) <= per_range:
            return values
        if per_range == 3:
            return values[0], values[len(values) // 2], values[-1]
        return values[0], values[-1]

    specs = [Spec("identity"), Spec("half")]
    specs += [Spec("jpeg", q) for q in pick(JPEG_QUALITIES)]
    specs += [Spec("equalize")]
    specs += [Spec("posterize", b) for b in pick(POSTERIZE_BITS)]
    specs += [Spec("smoothing", s, {"n": smoothing_n}) for s in pick(SMOOTHING_SIGMAS)]
    if finetune:
        eps = FINETUNE_EPOCHS[:1] if per_range else FINETUNE_EPOCHS
        specs += [Spec("finetune_all", e) for e in eps] + [Spec("finetune_last", e) for e in eps]
    specs += [Spec("prune_all", a) for a in pick(PRUNE_ALL)]
    specs += [Spec("prune_filters", a) for a in pick(PRUNE_FILTERS)]
    specs += [Spec("prune_last", a) for a in pick(PRUNE_LAST)]
    if with_global:
        specs += [Spec("prune_global", r) for r in pick(PRUNE_GLOBAL)]
    return specs


def make_variants(model: nn.Module, specs: Iterable[Spec] | None = None, data: Data | None = None,
                  *, progress: bool = False) -> dict[str, nn.Module]:
    """``{spec.name: variant}`` for each spec (default :func:`catalog`)."""
    check_model(model)
    specs = catalog() if specs is None else list(specs)
    for s in specs:
        if not isinstance(s, Spec):
            raise TypeError(f"specs: expected fastfp.variants.Spec items, got {type(s).__name__}")
        if s.kind not in KINDS:
            raise ValueError(f"specs: unknown variant kind {s.kind!r}; expected one of "
                             f"{', '.join(KINDS)}")
        if s.needs_data() and data is None:
            raise ValueError(f"data: variant {s.name!r} needs a fine-tuning data set (x, y)")
    from tqdm.auto import tqdm

    bar = tqdm(specs, desc="variants", disable=not progress)
    return {s.name: s.apply(model, data) for s in bar}


def accuracy_filter(model: nn.Module, variants: Mapping[str, nn.Module], x: torch.Tensor,
                    y: torch.Tensor, *, max_drop: float = MAX_DROP
                    ) -> tuple[dict[str, nn.Module], dict[str | None, float]]:
    """Deprecated: put the models in a :class:`fastfp.fbi.Database` and use
    :func:`fastfp.fbi.protocol.accuracy_filter`.

    Keep the variants whose accuracy on ``(x, y)`` lost at most ``max_drop`` relative to
    ``model``'s (eq. (1), :func:`fastfp.fbi.protocol.within_accuracy_drop`). Returns ``(kept,
    accuracies)`` where ``accuracies`` covers every variant and the base model (key ``None``)."""
    from .cexamples import verify
    from .fbi.protocol import within_accuracy_drop
    from .fingerprint import Fingerprint

    warnings.warn("fastfp.variants.accuracy_filter is deprecated: use "
                  "fastfp.fbi.protocol.accuracy_filter on a Database", DeprecationWarning,
                  stacklevel=2)
    max_drop = _validate.real("max_drop", max_drop, lo=0.0, hi=1.0)
    check_model(model)
    _validate.tensor("x", x, floating=True)
    if x.dim() != 4 or len(x) == 0:
        raise ValueError(f"x: expected a non-empty batch of images (N, C, H, W), got shape "
                         f"{tuple(x.shape)}")
    data = Fingerprint(x, check_labels(y, "y", n=len(x)))  # top-1 accuracy = verify's rate
    base = verify(model, data, batch_size=512)
    accs: dict[str | None, float] = {None: base}
    kept = {}
    for name, v in variants.items():
        accs[name] = verify(v, data, batch_size=512)
        if within_accuracy_drop(accs[name], base, max_drop):
            kept[name] = v
    return kept, accs
