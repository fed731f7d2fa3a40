"""The embedded default model zoo: small classifiers of real handwritten digits, trained on the fly.

No downloads: the data is scikit-learn's bundled ``load_digits`` (1797 real 8x8 handwritten digits),
upsampled to 32x32, 1 channel, values in [0, 1]. Several architectures x several seeds are trained
deterministically on CPU and cached on disk under ``FASTFP_CACHE`` (default ``~/.cache/fastfp``,
or ``$XDG_CACHE_HOME/fastfp``). The cache key is a hash of the whole training recipe (the source of
the architecture and of the training code, epochs, seed, data preparation), so a changed recipe
retrains; an unreadable or mismatching cache entry retrains too (never stale weights).

Same-architecture, different-seed models are the papers' "other model of the same kind"
(transferability set); different architectures are other families.

Also :func:`load_arch` (from :mod:`fastfp.suspects`): a timm / torchvision architecture by name,
random init or a user's weights.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _validate
from ._models import check_labels
from ._training import deterministic, fit
from .suspects import load_arch  # noqa: F401  (its old home: zoo.load_arch keeps working)

NUM_CLASSES = 10
INPUT_SHAPE = (1, 32, 32)
DATA_VERSION = 1  # bump when the data preparation below changes (it is also hashed by source)
_TEST_SIZE = 500


# ----------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Digits:
    """Fixed split of the digits: ``x_*`` float32 (N, 1, 32, 32) in [0, 1], ``y_*`` int64 (N,)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


_DIGITS: Digits | None = None


def digits() -> Digits:
    """scikit-learn's ``load_digits`` upsampled to 32x32 (bilinear) with a fixed held-out split."""
    global _DIGITS
    if _DIGITS is None:
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N,1,8,8) in [0,1]
        # Upsample 8x8 -> 28x28 and pad 2 pixels: strokes stay inside the frame so that shifts and
        # rotations of the benign set do not cut them off (like MNIST's 20x20-in-28x28 framing).
        x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
        x = F.pad(x, (2, 2, 2, 2)).clamp_(0.0, 1.0)
        y = torch.tensor(d.target, dtype=torch.int64)
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))
        test, train = perm[:_TEST_SIZE], perm[_TEST_SIZE:]
        _DIGITS = Digits(x[train].contiguous(), y[train].contiguous(),
                         x[test].contiguous(), y[test].contiguous())
    return _DIGITS


def _affine(x: torch.Tensor, angle_deg: torch.Tensor, shift_px: torch.Tensor,
            scale: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate by ``angle_deg`` and shift by ``shift_px`` (N, 2) pixels, per image (zero fill)."""
    n, _, h, w = x.shape
    a = angle_deg * math.pi / 180.0
    s = torch.ones(n) if scale is None else scale
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    theta[:, 0, 2] = -2.0 * shift_px[:, 0] / w  # grid coords are in [-1, 1]
    theta[:, 1, 2] = -2.0 * shift_px[:, 1] / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment(x: torch.Tensor, generator: torch.Generator, *, max_angle: float, max_shift: float,
            noise: float = 0.0, contrast: float = 0.0, scale: float = 0.0) -> torch.Tensor:
    """Random rotation, shift, scale, contrast change and Gaussian noise; clipped to [0, 1]."""
    n = x.shape[0]
    g = generator
    angle = (torch.rand(n, generator=g) * 2 - 1) * max_angle
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * max_shift
    sc = 1.0 + (torch.rand(n, generator=g) * 2 - 1) * scale
    out = _affine(x, angle, shift, sc)
    if contrast > 0:
        c = (1.0 + (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * contrast)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * c + mean
    if noise > 0:
        sigma = torch.rand(n, 1, 1, 1, generator=g) * noise
        out = out + sigma * torch.randn(out.shape, generator=g)
    return out.clamp(0.0, 1.0)


def benign_inputs(n: int = 2000, seed: int = 0, *,
                  with_labels: bool = True) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
    """Benign but hard inputs for FBI: held-out digits under strong shifts, rotations, scale,
    contrast and noise, so that the zoo's models disagree on a fair share of them.

    Returns ``(x, y)`` (float32 (n, 1, 32, 32) in [0, 1], int64 ground truth) or ``x`` alone.
    The inputs come from the test split only, never from the training data.
    """
    n = _validate.integer("n", n, lo=1)
    seed = _validate.integer("seed", seed, lo=0)
    d = digits()
    g = torch.Generator().manual_seed(10_000 + seed)
    idx = torch.randint(0, len(d.y_test), (n,), generator=g)
    x = augment(d.x_test[idx], g, max_angle=25.0, max_shift=3.0, noise=0.25, contrast=0.5,
                scale=0.15)
    return (x, d.y_test[idx].clone()) if with_labels else x


# -------------------------------------------------------------------------------- architectures
class SmallCNN(nn.Module):
    def __init__(self, width: int = 16, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.short(x))


class TinyResNet(nn.Module):
    def __init__(self, width: int = 12, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        self.layers = nn.Sequential(_Block(width, width, 2), _Block(width, 2 * width, 2),
                                    _Block(2 * width, 2 * width, 2))
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class TinyVGG(nn.Module):
    def __init__(self, width: int = 12, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        w = width

        def stage(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(),
                    nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]

        self.features = nn.Sequential(*stage(1, w), *stage(w, 2 * w), *stage(2 * w, 2 * w))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * w * 16, 64), nn.ReLU(),
                                        nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MLP(nn.Module):
    def __init__(self, hidden: int = 128, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# name -> (class, constructor kwargs, training epochs)
ARCHITECTURES = {
    "cnn": (SmallCNN, {"width": 16}, 10),
    "widecnn": (SmallCNN, {"width": 32}, 10),
    "resnet": (TinyResNet, {"width": 12}, 10),
    "vgg": (TinyVGG, {"width": 12}, 10),
    "mlp": (MLP, {"hidden": 128}, 20),
}
SEEDS = (0, 1, 2)
QUICK_ARCHS = ("cnn", "resnet", "mlp")
QUICK_SEEDS = (0, 1)


def names(*, quick: bool = False) -> list[str]:
    """Names of the default zoo's models, ``"<arch>-s<seed>"`` (e.g. ``"cnn-s0"``)."""
    archs, seeds = (QUICK_ARCHS, QUICK_SEEDS) if quick else (tuple(ARCHITECTURES), SEEDS)
    return [f"{a}-s{s}" for a in archs for s in seeds]


def parse_name(name: str) -> tuple[str, int]:
    """``"cnn-s1"`` -> ``("cnn", 1)``; ValueError naming the known architectures otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str such as 'cnn-s0', got {type(name).__name__}")
    arch, sep, seed = name.rpartition("-s")
    if not sep or arch not in ARCHITECTURES or not seed.isdigit():
        raise ValueError(f"name: unknown zoo model {name!r}; expected '<arch>-s<seed>' with arch "
                         f"in {', '.join(ARCHITECTURES)} (e.g. 'cnn-s0'); known: "
                         f"{', '.join(names())}")
    return arch, int(seed)


def build(arch: str) -> nn.Module:
    """An untrained zoo architecture."""
    _validate.choice("arch", arch, tuple(ARCHITECTURES))
    cls, kwargs, _ = ARCHITECTURES[arch]
    return cls(**kwargs)


# ------------------------------------------------------------------------------------- training
BATCH = 64
LR = 2e-3


def _augment_train(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    # Mild augmentation: models generalise a bit, but the harder benign set still splits them.
    return augment(x, g, max_angle=15.0, max_shift=2.0, noise=0.1)


def _train(model: nn.Module, seed: int, epochs: int, data: Digits) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    model.train()
    fit(model, data.x_train, data.y_train, opt, epochs=epochs, batch_size=BATCH,
        generator=torch.Generator().manual_seed(seed), transform=_augment_train, scheduler=sched)
    model.eval()


def recipe(arch: str, seed: int) -> dict[str, Any]:
    """Everything that determines the trained weights; its hash is the cache key."""
    cls, kwargs, epochs = ARCHITECTURES[arch]
    src = "".join(inspect.getsource(o) for o in (cls, _Block, _train, _augment_train, fit, augment,
                                                  _affine, digits))
    return {"arch": arch, "class": cls.__name__, "kwargs": kwargs, "epochs": epochs, "seed": seed,
            "batch": BATCH, "lr": LR, "data_version": DATA_VERSION, "test_size": _TEST_SIZE,
            "source_sha256": hashlib.sha256(src.encode()).hexdigest(),
            "torch": torch.__version__.split("+")[0].rsplit(".", 1)[0]}


def recipe_hash(arch: str, seed: int) -> str:
    """The cache key: a short SHA-256 of :func:`recipe`."""
    return hashlib.sha256(json.dumps(recipe(arch, seed), sort_keys=True).encode()).hexdigest()[:20]


def cache_dir() -> Path:
    """``$FASTFP_CACHE``, else ``$XDG_CACHE_HOME/fastfp``, else ``~/.cache/fastfp``."""
    env = os.environ.get("FASTFP_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "fastfp"


def _cache_file(arch: str, seed: int) -> Path:
    return cache_dir() / "zoo" / f"{arch}-s{seed}-{recipe_hash(arch, seed)}.safetensors"


def _try_load(path: Path, arch: str, seed: int) -> nn.Module | None:
    """The cached model, or None when absent, unreadable, corrupt (checksum) or made by another
    recipe."""
    from .io import ZOO_MODEL, read_bytes, unpack

    if not path.is_file():
        return None
    try:
        state, meta = unpack(read_bytes(path), format=ZOO_MODEL, source=str(path))
        if meta.get("recipe_hash") != recipe_hash(arch, seed):
            return None
        model = build(arch)
        model.load_state_dict(state, strict=True)
        return model.eval()
    except Exception:  # corrupt file, foreign tensors, wrong shapes: retrain
        return None


def _save(path: Path, model: nn.Module, arch: str, seed: int) -> None:
    from .io import ZOO_MODEL, pack, write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"recipe_hash": recipe_hash(arch, seed), "recipe": recipe(arch, seed)}
    write_bytes(path, pack(model.state_dict(), meta, format=ZOO_MODEL))


def load(name: str, *, train: bool = True) -> nn.Module:
    """A trained zoo model by name (``"cnn-s0"``), from the cache or trained now (and cached).

    ``train=False`` raises FileNotFoundError instead of training when the cache lacks it.
    The model is in eval mode, on CPU, float32.
    """
    arch, seed = parse_name(name)
    path = _cache_file(arch, seed)
    model = _try_load(path, arch, seed)
    if model is not None:
        return model
    if not train:
        raise FileNotFoundError(f"name: {name!r} is not in the zoo cache {str(cache_dir())!r}")
    with deterministic():
        torch.manual_seed(seed)
        model = build(arch)
        _train(model, seed, ARCHITECTURES[arch][2], digits())
    try:
        _save(path, model, arch, seed)
    except OSError as exc:  # read-only cache: still usable, just not cached
        import warnings

        warnings.warn(f"fastfp.zoo: could not cache {name!r} in {str(path.parent)!r}: {exc}",
                      stacklevel=2)
    return model


def default_zoo(model_names: Iterable[str] | None = None, *, quick: bool = False,
                progress: bool = True) -> dict[str, nn.Module]:
    """``{name: trained model}`` for ``model_names`` (default: :func:`names`)."""
    if model_names is None:
        model_names = names(quick=quick)
    model_names = list(model_names)
    if not model_names:
        raise ValueError("model_names: expected at least one zoo model name")
    for n in model_names:
        parse_name(n)  # validate all before training any
    from tqdm.auto import tqdm

    out = {}
    bar = tqdm(model_names, desc="zoo", unit="model", disable=not progress)
    for n in bar:
        bar.set_postfix_str(n)
        out[n] = load(n)
    return out


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on images ``x`` (N, C, H, W) with classes ``y`` (N,)."""
    from .metrics import fp_accuracy

    _validate.tensor("x", x, floating=True)
    if x.dim() != 4 or len(x) == 0:
        raise ValueError(f"x: expected a non-empty batch of images (N, C, H, W), got shape "
                         f"{tuple(x.shape)}")
    check_labels(y, "y", n=len(x))
    return fp_accuracy((x, y), model, batch_size)
