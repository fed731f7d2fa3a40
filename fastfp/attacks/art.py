"""Characteristic examples as an Adversarial Robustness Toolbox (ART) evasion attack.

    from art.estimators.classification import PyTorchClassifier
    clf = PyTorchClassifier(model, loss, input_shape=(3, 224, 224), nb_classes=1000,
                            clip_values=(0, 1), preprocessing=(mean, std))
    attack = fastfp.attacks.art.CharacteristicExamples(clf, method="ltrc", steps=500)
    x_fp = attack.generate(x_start, y_targets)        # numpy in, numpy out

The estimator's own conventions are kept: its PyTorch model and device, its clip values (the
examples live in [min, max] of the estimator) and its mean/std preprocessing (the model sees
normalised inputs), channels first or last. ``y`` gives the target labels (indices or one-hot);
without it they are drawn uniformly from ``seed``. ``x`` may be ``None`` to start from uniform
noise (``num`` examples of the estimator's input shape).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from art.attacks import EvasionAttack
from art.estimators.classification import PyTorchClassifier

from ..cexamples import METHODS, generate

_SETTINGS = ["method", "k", "delta", "q", "alpha", "steps", "eta", "seed", "batch_size",
             "quantize"]


class _ChannelsLast(torch.nn.Module):
    """An estimator whose model takes (N, H, W, C): fastfp's (N, C, H, W) examples, permuted."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.permute(0, 2, 3, 1))


class CharacteristicExamples(EvasionAttack):
    """fastfp's characteristic-example generation behind ART's ``EvasionAttack`` interface."""

    attack_params = EvasionAttack.attack_params + _SETTINGS
    _estimator_requirements = (PyTorchClassifier,)

    def __init__(self, estimator: PyTorchClassifier, method: str = "ltrc", *,
                 k: int | None = None, delta: float | None = None, q: int = 10,
                 alpha: float | None = None, steps: int = 500, eta: float = 1e-6, seed: int = 0,
                 batch_size: int | None = None, quantize: int | None = None):
        if not isinstance(estimator, PyTorchClassifier):
            raise TypeError(f"estimator: expected an art PyTorchClassifier, got "
                            f"{type(estimator).__name__}")
        super().__init__(estimator=estimator)
        self.method, self.k, self.delta, self.q, self.alpha = method, k, delta, q, alpha
        self.steps, self.eta, self.seed, self.batch_size = steps, eta, seed, batch_size
        self.quantize = quantize
        self._check_params()

    def _check_params(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {', '.join(METHODS)}, got "
                             f"{self.method!r}")

    @property
    def targeted(self) -> bool:  # characteristic examples always are
        return True

    def _pixel_space(self) -> tuple[float, float, tuple | None]:
        """(lo, hi, normalize): fastfp works in [0, 1]; the estimator's inputs are
        lo + (hi - lo) * x and its model sees them standardised, which folds into one
        normalisation of x: ((x - (mean - lo) / (hi - lo)) / (std / (hi - lo)))."""
        clip = self.estimator.clip_values
        lo, hi = (0.0, 1.0) if clip is None else (float(np.min(clip[0])), float(np.max(clip[1])))
        if not hi > lo:
            raise ValueError(f"estimator: clip_values must satisfy min < max, got {clip}")
        channels = self.estimator.input_shape[0 if self.estimator.channels_first else -1]
        mean, std = np.zeros(channels), np.ones(channels)
        for op in self.estimator.preprocessing_operations:
            if hasattr(op, "mean") and hasattr(op, "std"):
                mean = np.broadcast_to(np.asarray(op.mean, dtype=np.float64).ravel(), (channels,))
                std = np.broadcast_to(np.asarray(op.std, dtype=np.float64).ravel(), (channels,))
            else:
                raise ValueError(f"estimator: preprocessing {type(op).__name__} is not a "
                                 "mean/std standardisation (the only one supported)")
        scale = hi - lo
        normalize = (tuple((mean - lo) / scale), tuple(std / scale))
        identity = all(m == 0 for m in normalize[0]) and all(s == 1 for s in normalize[1])
        return lo, hi, None if identity else normalize

    def generate(self, x: np.ndarray | None, y: np.ndarray | None = None,
                 num: int | None = None, **kwargs: Any) -> np.ndarray:
        """Characteristic examples from start images ``x`` (or noise) toward targets ``y``."""
        est = self.estimator
        lo, hi, normalize = self._pixel_space()
        shape = tuple(est.input_shape)
        chw = shape if est.channels_first else (shape[-1], *shape[:-1])
        x0 = None
        if x is not None:
            arr = np.asarray(x, dtype=np.float32)
            if arr.ndim != 4 or tuple(arr.shape[1:]) != shape:
                raise ValueError(f"x: expected (num, {', '.join(map(str, shape))}), got "
                                 f"{arr.shape}")
            if not est.channels_first:
                arr = arr.transpose(0, 3, 1, 2)
            x0 = torch.from_numpy(np.ascontiguousarray((arr - lo) / (hi - lo)))
            num = arr.shape[0]
        labels = None
        if y is not None:
            labels_np = np.asarray(y)
            if labels_np.ndim == 2:  # one-hot, as ART passes targets
                labels_np = labels_np.argmax(axis=1)
            labels = torch.from_numpy(labels_np.astype(np.int64))
            num = num or int(labels.shape[0])
        if num is None:
            raise ValueError("x: None (start from noise) needs y (targets) or num")
        model = est.model if est.channels_first else _ChannelsLast(est.model)
        fp = generate(model, num, chw, est.nb_classes, method=self.method, k=self.k,
                      delta=self.delta, q=self.q, alpha=self.alpha, steps=self.steps,
                      eta=self.eta, seed=self.seed, batch_size=self.batch_size, progress=False,
                      labels=labels, x0=x0, normalize=normalize, quantize=self.quantize)
        self.fingerprint = fp
        out = fp.inputs.numpy() * (hi - lo) + lo
        if not est.channels_first:
            out = out.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(out, dtype=np.float32)
