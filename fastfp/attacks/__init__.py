"""Characteristic examples as attacks: torchattacks ``Attack`` subclasses (and ART, in :mod:`.art`).

    atk = fastfp.attacks.LTRC(model, steps=500, q=10)          # like torchattacks.PGD(model, ...)
    x = atk(images, target_labels)     # start from given images in [0, 1] ...
    x = atk(None, target_labels)       # ... or from uniform noise (needs input_shape)
    atk.fingerprint                    # the last result as a fastfp.Fingerprint (with meta)

When torchattacks is installed the classes are ``torchattacks.attack.Attack`` subclasses, so its
conventions hold: ``set_normalization_used(mean, std)`` (the model then sees normalised inputs;
images and results stay in pixel space), ``set_mode_targeted_by_label`` (the default here: the
labels given are the targets) / ``set_mode_targeted_random``, ``save``, ``MultiAttack``. The
methods are inherently targeted (characteristic examples are fingerprints, not
misclassifications): ``set_mode_default()`` makes a call raise instead of silently driving toward
the true labels. Without torchattacks they work standalone, always targeted by label.

A call returns a tensor on the model's device in the dtype of ``images`` (float32 when starting
from noise). ``Vanilla``, ``RC``, ``RCGM`` and ``LTRC`` differ only in the method; every call is
one :func:`fastfp.cexamples.generate` with the given start images (``x0``) and targets
(``labels``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .. import _validate
from ..cexamples import checks, settings_for
from ..fingerprint import Fingerprint

try:  # the real library when present: its base class, modes and normalisation
    from torchattacks.attack import Attack as AttackBase

    HAVE_TORCHATTACKS = True
except ImportError:  # standalone
    AttackBase = object
    HAVE_TORCHATTACKS = False


class CharacteristicAttack(AttackBase):
    """Base adapter; subclasses fix :attr:`method`."""

    method = "ltrc"

    def __init__(self, model: torch.nn.Module, *, input_shape: Sequence[int] | None = None,
                 k: int | None = None, delta: float | None = None, q: int = 10,
                 alpha: float | None = None, steps: int = 500, eta: float = 1e-6, seed: int = 0,
                 batch_size: int | None = None, progress: bool = False, precision: str = "fp32",
                 graphs: bool | None = None):
        checks.check_model(model)
        if HAVE_TORCHATTACKS:
            super().__init__(type(self).__name__, model)
            self.supported_mode = ["default", "targeted"]
            self.set_mode_targeted_by_label(quiet=True)
        else:
            self.model, self.targeted = model, True
        self.input_shape = (None if input_shape is None
                            else checks.check_input_shape(input_shape))
        self._kw: dict[str, Any] = dict(k=k, delta=delta, q=q, alpha=alpha, steps=steps,
                                        eta=eta, seed=seed, precision=precision)
        # validate now what can be (k's range depends on the shape)
        settings_for(self.method, self.input_shape or (1, 224, 224),
                     **(self._kw if self.input_shape else {**self._kw, "k": None}))
        if batch_size is not None:
            _validate.integer("batch_size", batch_size, lo=1)
        checks.check_flag("progress", progress)
        checks.check_flag("graphs", graphs, optional=True)
        self.batch_size, self.progress, self.graphs = batch_size, progress, graphs
        self.device = checks.model_device(self.model)
        self.fingerprint: Fingerprint | None = None

    def __repr__(self) -> str:
        kw = ", ".join(f"{k}={v}" for k, v in self._kw.items() if v is not None)
        return f"{type(self).__name__}(model={type(self.model).__name__}, {kw})"

    if not HAVE_TORCHATTACKS:
        def __call__(self, images: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
            return self.forward(images, labels)

    def _normalize(self) -> tuple | None:
        """torchattacks' ``set_normalization_used``: the model sees (x - mean) / std."""
        used = getattr(self, "normalization_used", None)
        if used is None:
            return None
        return used["mean"].flatten().tolist(), used["std"].flatten().tolist()

    def forward(self, images: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        from ..cexamples import generate

        if not self.targeted:
            raise ValueError(f"mode: {type(self).__name__} drives inputs toward target labels; "
                             "call set_mode_targeted_by_label() or set_mode_targeted_random() "
                             "(default mode would drive them toward the true labels)")
        if HAVE_TORCHATTACKS and images is not None and isinstance(labels, torch.Tensor):
            labels = self.get_target_label(images, labels)
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels: expected an int64 tensor of target labels, got "
                            f"{type(labels).__name__}")
        if labels.dim() != 1 or labels.shape[0] < 1:
            raise ValueError(f"labels: expected shape (num,) with num >= 1, got "
                             f"{tuple(labels.shape)}")
        num = int(labels.shape[0])
        if images is None:
            if self.input_shape is None:
                raise ValueError("images: None (start from noise) needs input_shape=(C, H, W) "
                                 f"when building {type(self).__name__}")
            shape, out_dtype, x0 = self.input_shape, torch.float32, None
        else:
            x0 = checks.check_images("images", images, None, self.input_shape)
            if x0.shape[0] != num:
                raise ValueError(f"labels: {num} labels for {x0.shape[0]} images")
            shape, out_dtype = checks.check_input_shape(tuple(x0.shape[1:])), images.dtype
        start = x0[:1] if x0 is not None else torch.zeros((1, *shape))
        _, num_classes = checks.probe(self.model, start, None, self.device)
        fp = generate(self.model, num, shape, num_classes, method=self.method, **self._kw,
                      batch_size=self.batch_size, progress=self.progress, graphs=self.graphs,
                      labels=labels, x0=x0, normalize=self._normalize())
        self.fingerprint = fp
        return fp.inputs.to(self.device, out_dtype)


class Vanilla(CharacteristicAttack):
    """C-examples: plain targeted sign-gradient descent (paper eq. 2)."""

    method = "vanilla"


class RC(CharacteristicAttack):
    """RC-examples: fresh weight noise U(-delta, delta) at every step."""

    method = "rc"


class RCGM(CharacteristicAttack):
    """RC-examples + gradient mean over q noisy weight copies per step."""

    method = "rcgm"


class LTRC(CharacteristicAttack):
    """LTRC-examples: RC+GM followed by a DCT high-pass of band k after every step (eq. 3-4)."""

    method = "ltrc"


ATTACKS = {"vanilla": Vanilla, "rc": RC, "rcgm": RCGM, "ltrc": LTRC}
