"""Drop-in adapters for attack-library users, in the style of torchattacks.

    atk = fastfp.attacks.LTRC(model, steps=500, q=10)          # like torchattacks.PGD(model, ...)
    x = atk(images, target_labels)     # start from given images in [0, 1] ...
    x = atk(None, target_labels)       # ... or from uniform noise (needs input_shape)
    atk.fingerprint                    # the last result as a fastfp.Fingerprint (with meta)

The attack is always *targeted*: it drives every input toward its label (characteristic
examples are fingerprints, not misclassifications). It returns a tensor on the model's device in
the dtype of ``images`` (float32 when starting from noise). ``Vanilla``, ``RC``, ``RCGM`` and
``LTRC`` differ only in the method; all settings are those of :func:`fastfp.cexamples.generate`.
"""

from __future__ import annotations

import torch

from . import _validate


class CharacteristicAttack:
    """Base adapter; subclasses fix :attr:`method`."""

    method = "ltrc"

    def __init__(self, model, *, input_shape=None, k=None, delta=None, q=10, alpha=None,
                 steps=500, eta=1e-6, seed=0, batch_size=None, progress=False, precision="fp32",
                 graphs=None):
        from . import cexamples

        self.model = cexamples._check_model(model)
        self.input_shape = (None if input_shape is None
                            else cexamples._check_input_shape(input_shape))
        self._kw = dict(k=k, delta=delta, q=q, alpha=alpha, steps=steps, eta=eta, seed=seed,
                        precision=precision)
        if self.input_shape is not None:  # validate now when we can (k depends on the shape)
            cexamples.settings_for(self.method, self.input_shape, **self._kw)
        else:
            cexamples.settings_for(self.method, (1, 224, 224), **{**self._kw, "k": None})
        if batch_size is not None:
            batch_size = _validate.integer("batch_size", batch_size, lo=1)
        if not isinstance(progress, bool):
            raise TypeError(f"progress: expected a bool, got {type(progress).__name__}")
        if graphs is not None and not isinstance(graphs, bool):  # as generate checks it
            raise TypeError(f"graphs: expected None, True or False, got {type(graphs).__name__}")
        self.batch_size, self.progress, self.graphs = batch_size, progress, graphs
        self.device = cexamples.model_device(self.model)
        self.fingerprint = None

    def __repr__(self) -> str:
        kw = ", ".join(f"{k}={v}" for k, v in self._kw.items() if v is not None)
        return f"{type(self).__name__}(model={type(self.model).__name__}, {kw})"

    def __call__(self, images, labels):
        return self.forward(images, labels)

    def forward(self, images, labels) -> torch.Tensor:
        from . import cexamples
        from .cexamples import engine
        from .fingerprint import Fingerprint

        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels: expected an int64 tensor of target labels, got "
                            f"{type(labels).__name__}")
        if labels.dim() != 1:
            raise ValueError(f"labels: expected shape (num,), got {tuple(labels.shape)}")
        num = int(labels.shape[0])
        if num < 1:
            raise ValueError("labels: expected at least one target label")
        if images is None:
            if self.input_shape is None:
                raise ValueError("images: None (start from noise) needs input_shape=(C, H, W) "
                                 f"when building {type(self).__name__}")
            shape = self.input_shape
            out_dtype = torch.float32
        else:
            _validate.tensor("images", images, floating=True)
            if images.dim() != 4:
                raise ValueError(f"images: expected (num, C, H, W), got {tuple(images.shape)}")
            if images.shape[0] != num:
                raise ValueError(f"labels: {num} labels for {images.shape[0]} images")
            # NaN compares false with everything, so min/max alone would let it through.
            if images.numel() and (bool(torch.isnan(images).any()) or float(images.min()) < 0
                                   or float(images.max()) > 1):
                raise ValueError("images: expected values in [0, 1] (like torchattacks)")
            shape = tuple(images.shape[1:])
            if self.input_shape is not None and shape != self.input_shape:
                raise ValueError(f"images: shape {shape} per example, but input_shape="
                                 f"{self.input_shape}")
            out_dtype = images.dtype
        s = cexamples.settings_for(self.method, shape, **self._kw)
        cexamples._check_noisy_model(self.model, s)
        x0, _ = engine.start(num, shape, 2, s.seed)
        if images is not None:
            x0 = images.detach().to("cpu", torch.float32)
        per_example, num_classes = cexamples.probe(self.model, x0[:1], None, self.device)
        targets = cexamples._check_labels(labels, num, num_classes)
        x, used, loss, impl = cexamples.optimize(
            self.model, x0, targets, s, self.device, batch_size=self.batch_size,
            progress=self.progress, graphs=self.graphs, per_example=per_example)
        meta = cexamples.describe(s, self.model, shape, num_classes)
        meta.update(steps_used=used.tolist(), final_loss=[float(v) for v in loss], engine=impl,
                    start="images" if images is not None else "uniform")
        self.fingerprint = Fingerprint(x, targets, meta)
        return x.to(self.device, out_dtype)


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
