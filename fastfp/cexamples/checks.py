"""Argument checks of the characteristic-examples API: every one runs before any work starts and
names the argument it rejects."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import _models, _validate
from ..suspects import SuspectError
from .settings import Settings


class Normalized(torch.nn.Module):
    """``model((x - mean) / std)``: how a model trained on normalised images sees pixels.

    Fingerprints live in pixel space; this wrapper is what the engine and ``verify`` run when a
    fingerprint records a normalisation. Its parameters are the model's own (nothing is copied).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: torch.nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        shape = (1, len(mean), 1, 1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(shape),
                             persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(shape),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.to(x.device, x.dtype), self.std.to(x.device, x.dtype)
        return self.model((x - mean) / std)


def normalized(model: torch.nn.Module, normalize: tuple | None) -> torch.nn.Module:
    """The model as the engine runs it: ``model`` itself, or wrapped by :class:`Normalized`."""
    if normalize is None:
        return model
    dev = model_device(model)
    return Normalized(model, *normalize).to(dev)


def check_model(model: object) -> torch.nn.Module:
    return _models.check_model(model)


def check_input_shape(input_shape: object) -> tuple[int, int, int]:
    if isinstance(input_shape, torch.Size):
        input_shape = tuple(input_shape)
    if not isinstance(input_shape, (tuple, list)):
        raise TypeError(f"input_shape: expected a (C, H, W) tuple, got "
                        f"{type(input_shape).__name__}")
    if len(input_shape) != 3:
        raise ValueError(f"input_shape: expected 3 dims (C, H, W), got {len(input_shape)}: "
                         f"{tuple(input_shape)}")
    c, h, w = (_validate.integer(f"input_shape[{i}]", v, lo=1) for i, v in enumerate(input_shape))
    if c * h * w > MAX_EXAMPLE_ELEMENTS:
        raise ValueError(f"input_shape: ({c}, {h}, {w}) is {c * h * w} values per example, more "
                         f"than the {MAX_EXAMPLE_ELEMENTS} fastfp generates (e.g. 3,224,224)")
    return c, h, w


# Sizes beyond these are typos (-n 1e11, 99999x99999), refused before anything is allocated.
MAX_EXAMPLE_ELEMENTS = 2 ** 27  # C * H * W of one example: 3 x 6688 x 6688
MAX_EXAMPLES = 10 ** 7
MAX_FINGERPRINT_ELEMENTS = 2 ** 32  # num * C * H * W: 16 GiB of float32


def check_num(num: object) -> int:
    """The number of examples: 1 .. :data:`MAX_EXAMPLES`."""
    return _validate.integer("num", num, lo=1, hi=MAX_EXAMPLES)


def check_size(num: int, input_shape: Sequence[int]) -> None:
    """``num`` examples of ``input_shape`` fit in :data:`MAX_FINGERPRINT_ELEMENTS` values."""
    total = int(num)
    for d in input_shape:
        total *= int(d)
    if total > MAX_FINGERPRINT_ELEMENTS:
        raise ValueError(f"num: {num} examples of shape {tuple(input_shape)} are {total} values, "
                         f"more than the {MAX_FINGERPRINT_ELEMENTS} (16 GiB) fastfp generates")


def check_model_name(model_name: object) -> None:
    if model_name is not None and not isinstance(model_name, str):  # it goes into meta["model"]
        raise TypeError(f"model_name: expected a str or None, got {type(model_name).__name__}")


def check_flag(name: str, value: object, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, bool):
        expected = "None, True or False" if optional else "a bool"
        raise TypeError(f"{name}: expected {expected}, got {type(value).__name__}")


def model_device(model: torch.nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def model_dtype(model: torch.nn.Module) -> torch.dtype | None:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def check_device(device: object, model: torch.nn.Module) -> torch.device:
    """The model's device; ``device`` (if given) must name it. Never moves the model."""
    mdev = model_device(model)
    if mdev.type == "meta":
        raise ValueError("model: its parameters are on the meta device (not materialised); load "
                         "its weights (e.g. model.to_empty(device=...) and a state dict) first")
    if device is None:
        return mdev
    try:
        want = torch.device(device)  # type: ignore[call-overload]
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device: not a torch device: {device!r}") from None
    if want.type != mdev.type or (want.index is not None and mdev.index is not None
                                  and want.index != mdev.index):
        raise ValueError(f"device: {want} given, but the model's parameters are on {mdev}; "
                         "move the model (model.to(device)) first")
    return mdev


def check_noisy_model(model: torch.nn.Module, s: Settings) -> None:
    """Weight noise needs float32 / bfloat16 / float16 parameters to perturb."""
    if not s.noisy:
        return
    params = list(model.parameters())
    if not params:
        raise ValueError(f"model: method {s.method!r} perturbs the weights, but the model has no "
                         "parameters (use method='vanilla' or delta=0)")
    bad = {str(p.dtype) for p in params if p.dtype not in (torch.float32, torch.bfloat16,
                                                              torch.float16)}
    if bad:
        raise TypeError(f"model: method {s.method!r} draws weight noise for float32, bfloat16 "
                        f"or float16 parameters, found {', '.join(sorted(bad))} (use "
                        "model.float(), or method='vanilla')")


def check_labels(labels: object, num: int, num_classes: int) -> torch.Tensor:
    """Target labels as a CPU int64 tensor of shape (num,), each in [0, num_classes)."""
    labels = _models.check_labels(labels, n=num, num_classes=num_classes)
    return labels.detach().to("cpu", torch.int64)


def check_images(name: str, images: object, num: int | None, input_shape: Sequence[int] | None,
                 lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """Start images: a float tensor (num, C, H, W), finite, in [lo, hi]; returned as CPU float32."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name}: expected a float tensor (num, C, H, W), got "
                        f"{type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"{name}: expected float images in [{lo}, {hi}], got {images.dtype} "
                        "(convert uint8 images with x.float() / 255)")
    if images.dim() != 4:
        raise ValueError(f"{name}: expected (num, C, H, W), got shape {tuple(images.shape)}")
    if num is not None and images.shape[0] != num:
        raise ValueError(f"{name}: expected {num} images, got {images.shape[0]}")
    if input_shape is not None and tuple(images.shape[1:]) != tuple(input_shape):
        raise ValueError(f"{name}: shape {tuple(images.shape[1:])} per example, but input_shape="
                         f"{tuple(input_shape)}")
    if images.numel():
        # NaN compares false with everything, so min/max alone would let it through.
        if not bool(torch.isfinite(images).all()):
            raise ValueError(f"{name}: contains NaN or inf values")
        if float(images.min()) < lo or float(images.max()) > hi:
            raise ValueError(f"{name}: expected values in [{lo}, {hi}], got values in "
                             f"[{float(images.min()):g}, {float(images.max()):g}]")
    return images.detach().to("cpu", torch.float32)


def probe(model: torch.nn.Module, x1: torch.Tensor, num_classes: int | None,
          device: torch.device) -> tuple[int, int]:
    """One forward on one example: checks the model is a classifier with ``num_classes`` finite
    logits.

    Returns (bytes of all leaf-module outputs for that example: the activation estimate that
    sizes batches, number of logits). ``num_classes=None`` skips the class-count check.
    """
    sizes = []

    def hook(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel() * output.element_size())

    # TorchScript modules take no hooks: their activations are then guessed from the input.
    leaves = [m for m in model.modules()
              if not list(m.children()) and not isinstance(m, torch.jit.ScriptModule)]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        mdtype = model_dtype(model)
        with torch.no_grad(), _models.eval_mode(model):
            out = model(x1.to(device, mdtype or torch.float32))
    except SuspectError:
        raise  # a suspect that misbehaved (a timeout, NaN): its message names it
    except Exception as exc:
        raise ValueError(f"input_shape: the model's forward pass on one input of shape "
                         f"{tuple(x1.shape)} failed ({type(exc).__name__}: {exc})") from exc
    finally:
        for h in handles:
            h.remove()
    check_logits(out, 1)
    if num_classes is not None and out.shape[1] != num_classes:
        raise ValueError(f"num_classes: {num_classes} given, but the model outputs "
                         f"{out.shape[1]} logits")
    guess = sum(sizes) if sizes else 16 * x1.numel() * x1.element_size()
    return int(guess) + x1.numel() * x1.element_size(), int(out.shape[1])


def check_logits(out: object, batch: int, name: str = "model") -> torch.Tensor:
    """A classifier's output must be finite 2-D float logits (batch, num_classes); errors start
    with ``name`` (the model)."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name}: expected a classifier returning a logits tensor, got "
                        f"{type(out).__name__}")
    if out.dim() != 2 or out.shape[0] != batch or not out.is_floating_point():
        raise ValueError(f"{name}: expected 2-D float logits (batch, num_classes), got "
                         f"{out.dtype} of shape {tuple(out.shape)} for a batch of {batch}")
    finite = torch.isfinite(out).all(dim=1)
    if not bool(finite.all()):  # argmax would read NaN as a class: refuse, never guess
        raise ValueError(f"{name}: non-finite outputs (NaN or inf) on {int((~finite).sum())} "
                         f"of {batch} inputs")
    return out
