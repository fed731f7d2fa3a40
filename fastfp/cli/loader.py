"""The command line's model arguments, passed to the one suspect loader
(:func:`fastfp.suspects.load_model`): a default-zoo name, a torchvision/timm architecture
(``--arch NAME``: MODEL is its safetensors state dict, or ``random``), or a model file.

A suspect (``verify``, ``fbi detect/identify --blackbox``, FBI model lists) comes from the checked
party, so it is read only in formats that cannot run code: ONNX, or a state dict with ``--arch``.
Pickles, TorchScript and ``.pt2`` files need ``--trust-code`` (with a warning on stderr). The
owner's model in ``generate`` / ``evaluate`` is theirs: TorchScript and torch.save'd modules stay
allowed for it. Nothing here imports torch until a model is loaded (fast ``--help``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fastfp.cli.main import UserError

if TYPE_CHECKING:
    import torch

    from fastfp import suspects

SUSPECT_HELP = ("the suspect: a served model (an Open Inference Protocol URL "
                "http(s)://HOST:PORT/v2/models/NAME[/versions/V]), an ONNX file (.onnx, run by "
                "onnxruntime), with --arch NAME a safetensors state dict (or 'random'), a "
                "default-zoo name such as cnn-s0, or with --queries an answers file (CSV, JSON or "
                ".npy labels for the images `fastfp export` wrote). Pickles / TorchScript / .pt2 "
                "run code when loaded: refused unless --trust-code")
OWNER_HELP = ("your model: with --arch NAME a safetensors state dict of that torchvision/timm "
              "architecture (or 'random' for a seeded random init); else a default-zoo name such "
              "as cnn-s0, a TorchScript file or a torch.save'd nn.Module (yours: it is unpickled)")
TRUST_WARNING = ("fastfp: warning: --trust-code: loading {what} runs code from the file; use it "
                 "only for files you trust")
# fastfp.suspects.SUSPECT_TIMEOUT_S, said here without importing torch (fast --help); a test
# keeps the two equal
SUSPECT_TIMEOUT_HELP = ("stop a suspect ONNX model's inference (one batch) after SECONDS and "
                        "fail (exit 2): a hostile model may loop forever (default 60; 0: no "
                        "limit)")


def __getattr__(name: str) -> Any:
    if name == "Loaded":  # the loaded-model record moved into the library
        from fastfp.suspects import LoadedModel

        return LoadedModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def zoo_models() -> suspects.NamedModels:
    """The embedded default zoo as the named models of the suspect loader (``cnn-s0`` ...)."""
    from fastfp import suspects, zoo

    c, h, w = zoo.INPUT_SHAPE
    return suspects.NamedModels(zoo.load, (c, h, w), "zoo model")


@contextlib.contextmanager
def trust_warnings() -> Iterator[None]:
    """Each file loaded with ``--trust-code`` is said in one line on stderr, when it loads."""
    from fastfp.suspects import TrustCodeWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", TrustCodeWarning)
        shown = warnings.showwarning

        def show(message: Any, category: type[Warning], *args: Any, **kw: Any) -> None:
            if issubclass(category, TrustCodeWarning):
                what = str(message).removeprefix("trust_code: loading ")
                print(TRUST_WARNING.format(what=what.removesuffix(" runs code from the file")),
                      file=sys.stderr)
            else:
                shown(message, category, *args, **kw)

        warnings.showwarning = show
        yield


def add_model_args(p: argparse.ArgumentParser, *, suspect: bool) -> None:
    """MODEL, --arch, --num-classes, --seed, --device and --trust-code, as :func:`load_model`
    reads them. ``suspect``: MODEL comes from the checked party (safe formats only)."""
    p.add_argument("model", metavar="MODEL", help=SUSPECT_HELP if suspect else OWNER_HELP)
    p.add_argument("--arch", metavar="NAME",
                   help="torchvision/timm architecture of MODEL (e.g. resnet18, "
                        "mobilenetv3_small_050): MODEL is then its .safetensors state dict, or "
                        "'random' for a random init seeded by --seed")
    p.add_argument("--num-classes", type=int, metavar="N",
                   help="classes of the head --arch builds (default: the architecture's own); "
                        "for other models their own count, checked against the model")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the --arch random init (and of generation; default: 0)")
    p.add_argument("--device", default=None,
                   help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument("--trust-code", action="store_true",
                   help=("allow suspect model files that run code when loaded (pickle, "
                         "TorchScript, .pt2): only for files you trust; prints a warning")
                   if suspect else
                   ("also allow code-running formats (pickle, TorchScript, .pt2) for the other "
                    "models this command loads as suspects; MODEL itself, yours, needs no flag"))


def suspect_timeout(text: str) -> float:
    """``--suspect-timeout``: seconds > 0, or 0 for no limit (argparse ``type``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value <= 7 * 24 * 3600:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected seconds in [0, 604800] (0: no limit), got "
                                         f"{text!r}")
    return value


def add_suspect_timeout(p: argparse.ArgumentParser) -> None:
    """``--suspect-timeout SECONDS``, for every command that runs a suspect model."""
    p.add_argument("--suspect-timeout", type=suspect_timeout, default=None, metavar="SECONDS",
                   help=SUSPECT_TIMEOUT_HELP)


def timeout_of(args: argparse.Namespace) -> float | None:
    """The ``timeout=`` of the suspect loaders from ``--suspect-timeout`` (not given: the
    library's default; 0: None, no limit)."""
    value = getattr(args, "suspect_timeout", None)
    if value is None:
        from fastfp.suspects import SUSPECT_TIMEOUT_S

        return SUSPECT_TIMEOUT_S
    return float(value) or None


# the devices a model of the command line can run on
DEVICE_TYPES = ("cpu", "cuda", "mps")


def parse_shape(text: str) -> tuple[int, ...]:
    """``C,H,W`` (or ``CxHxW``) as a tuple of 3 ints."""
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise UserError(f"--input-shape: expected C,H,W such as 3,224,224, got {text!r}") from None
    if len(shape) != 3:
        raise UserError(f"--input-shape: expected 3 numbers C,H,W, got {text!r}")
    return shape


def check_sizes(args: argparse.Namespace) -> None:
    """``--num`` and ``--input-shape`` (of ``generate``) within what fastfp generates, before a
    model loads or a tensor of that size is allocated."""
    from fastfp.cexamples import checks

    num = getattr(args, "num", None)
    text = getattr(args, "input_shape", None)
    shape = parse_shape(text) if isinstance(text, str) else None
    try:
        if isinstance(num, int):
            checks.check_num(num)
        if shape is not None and min(shape) >= 1:
            checks.check_input_shape(shape)
            if isinstance(num, int) and num >= 1:
                checks.check_size(num, shape)
    except ValueError as exc:
        flag = "--input-shape" if str(exc).startswith("input_shape") else "--num"
        raise UserError(f"{flag}: {str(exc).split(': ', 1)[-1]}") from None


def check_device(value: str | None, flag: str = "--device") -> torch.device | None:
    """``--device`` as a torch device (None stays None), refused up front when absent here."""
    if value is None:
        return None
    import torch

    from fastfp import _validate

    device = _validate.device(flag, value)
    if device.type not in DEVICE_TYPES:  # meta holds no data: a model there cannot answer
        raise UserError(f"{flag}: expected cpu, cuda or cuda:N, got {value!r}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{flag}: mps asked for, but torch sees no MPS device")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{flag}: cuda asked for, but torch sees no CUDA device")
    if device.type == "cuda" and device.index is not None and \
            device.index >= torch.cuda.device_count():
        raise UserError(f"{flag}: {value!r} asked for, but torch sees "
                        f"{torch.cuda.device_count()} CUDA devices")
    return device


def load_model(args: argparse.Namespace, *, suspect: bool) -> suspects.LoadedModel:
    """The model named by the arguments of :func:`add_model_args`, on ``--device`` in eval mode.
    ``suspect``: refuse code-running files unless ``--trust-code``."""
    import torch

    from fastfp import suspects

    check_sizes(args)
    device = check_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    num_classes = getattr(args, "num_classes", None)
    if num_classes is not None and num_classes < 1:
        raise UserError(f"--num-classes: expected a positive number, got {num_classes}")
    seed = getattr(args, "seed", 0)
    if seed is None or seed < 0:
        raise UserError(f"--seed: expected a number >= 0, got {seed}")
    with trust_warnings():
        return suspects.load_model(args.model, arch=getattr(args, "arch", None),
                                   num_classes=num_classes, seed=seed,
                                   trust_code=bool(getattr(args, "trust_code", False)),
                                   own=not suspect, device=device, named=zoo_models(),
                                   what="MODEL", timeout=timeout_of(args))


def load_classifier(args: argparse.Namespace, spec: str, flag: str,
                    input_shape: tuple[int, ...], num_classes: int | None, *,
                    same_arch: bool = True) -> Any:
    """Another model given by ``flag`` (``--negative``, ``--others``), loaded as a suspect with
    MODEL's arguments (its ``--arch`` too when ``same_arch``) and checked to classify inputs of
    ``input_shape`` into ``num_classes`` classes, before any work."""
    import torch

    from fastfp import suspects
    from fastfp.cexamples import checks

    extra = {"model": spec} if same_arch else {"model": spec, "arch": None}
    model = load_model(argparse.Namespace(**{**vars(args), **extra}), suspect=True).model
    try:
        checks.probe(model, torch.zeros(1, *input_shape), num_classes, checks.model_device(model))
    except suspects.SuspectError:
        raise  # it names the model itself (a timeout, NaN outputs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{flag} {spec}: not a classifier of the fingerprint's inputs and "
                         f"classes ({exc})") from None
    return model
