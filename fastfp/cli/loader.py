"""The command line's one model loader: a default-zoo name, a torchvision/timm architecture
(``--arch NAME``: MODEL is its safetensors state dict, or ``random``), or a model file.

A suspect (``verify``, ``fbi detect/identify --blackbox``, FBI model lists) comes from the checked
party, so it is read only in formats that cannot run code (:mod:`fastfp.suspects`): ONNX, or a
state dict with ``--arch``. Pickles, TorchScript and ``.pt2`` files need ``--trust-code`` (with a
warning on stderr). The owner's model in ``generate`` is theirs: TorchScript and torch.save'd
modules stay allowed for it. Nothing here imports torch until a model is loaded (fast ``--help``).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastfp.cli.main import UserError

if TYPE_CHECKING:
    import torch

SUSPECT_HELP = ("the suspect model: an ONNX file (.onnx, run by onnxruntime), or with --arch NAME "
                "a safetensors state dict (or 'random'), or a default-zoo name such as cnn-s0. "
                "Pickles / TorchScript / .pt2 run code when loaded: refused unless --trust-code")
OWNER_HELP = ("your model: with --arch NAME a safetensors state dict of that torchvision/timm "
              "architecture (or 'random' for a seeded random init); else a default-zoo name such "
              "as cnn-s0, a TorchScript file or a torch.save'd nn.Module (yours: it is unpickled)")
TRUST_WARNING = ("fastfp: warning: --trust-code: loading {path!r} ({kind}) runs code from the "
                 "file; use it only for files you trust")


@dataclass(frozen=True)
class Loaded:
    """A loaded model and what the command line knows about it."""

    model: torch.nn.Module  # on its device, in eval mode
    name: str
    input_shape: tuple[int, int, int] | None  # (C, H, W) from the zoo / arch config / ONNX
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None  # the arch's own (mean, std)


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


def check_device(value: str | None, flag: str = "--device") -> torch.device | None:
    """``--device`` as a torch device (None stays None), refused up front when absent here."""
    if value is None:
        return None
    import torch

    from fastfp import _validate

    device = _validate.device(flag, value)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{flag}: cuda asked for, but torch sees no CUDA device")
    if device.type == "cuda" and device.index is not None and \
            device.index >= torch.cuda.device_count():
        raise UserError(f"{flag}: {value!r} asked for, but torch sees "
                        f"{torch.cuda.device_count()} CUDA devices")
    return device


def load_model(args: argparse.Namespace, *, suspect: bool) -> Loaded:
    """The model named by the arguments of :func:`add_model_args`, on ``--device`` in eval mode.
    ``suspect``: refuse code-running files unless ``--trust-code``."""
    import torch

    from fastfp import suspects, zoo

    spec = args.model
    device = check_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    num_classes = getattr(args, "num_classes", None)
    if num_classes is not None and num_classes < 1:
        raise UserError(f"--num-classes: expected a positive number, got {num_classes}")
    seed = getattr(args, "seed", 0)
    if seed is None or seed < 0:
        raise UserError(f"--seed: expected a number >= 0, got {seed}")
    trust = bool(getattr(args, "trust_code", False))
    arch = getattr(args, "arch", None)
    if arch:
        if spec != "random" and not Path(spec).is_file():
            raise UserError(f"MODEL: with --arch, expected a .safetensors state dict or 'random', "
                            f"got {spec!r} (no such file)")
        model = suspects.load_suspect(None if spec == "random" else spec, arch=arch,
                                      num_classes=num_classes, seed=seed, device=device)
        cfg = suspects.arch_config(arch, model)
        return Loaded(model, arch if spec == "random" else Path(spec).stem, cfg.input_shape,
                      cfg.normalize)
    if Path(spec).exists():
        model = load_file(spec, "MODEL", trust_code=trust or not suspect, warn=suspect)
        shape = getattr(model, "input_shape", None)  # an ONNX model's declared input
        return Loaded(model.to(device).eval(), Path(spec).stem, shape, None)
    try:
        zoo.parse_name(spec)
    except ValueError as exc:
        raise UserError(f"MODEL: {spec!r} is neither an existing file nor a zoo model "
                        f"({exc})") from None
    c, h, w = zoo.INPUT_SHAPE
    return Loaded(zoo.load(spec).to(device).eval(), spec, (c, h, w), None)


def load_file(path: str | Path, what: str = "MODEL", *, trust_code: bool = False,
              warn: bool = True) -> torch.nn.Module:
    """A model file (ONNX; pickle / TorchScript / .pt2 only with ``trust_code``, then with a
    warning on stderr when ``warn``); ``what`` names it in errors."""
    from fastfp import suspects

    try:
        kind = suspects.sniff(path)
        if kind in suspects.CODE_FORMATS and trust_code and warn:
            print(TRUST_WARNING.format(path=str(path), kind=kind), file=sys.stderr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", suspects.TrustCodeWarning)  # printed above
            return suspects.load_suspect(path, trust_code=trust_code)
    except (ValueError, TypeError, ImportError, OSError) as exc:  # refused, unreadable, no ort
        raise UserError(f"{what}: {str(exc).removeprefix('path: ')}") from None


def spec_file(value: Any, base: Path, *, allow_absolute: bool, what: str) -> Path:
    """A file named in an FBI model list: relative to the list's folder ``base`` and inside it
    (no ``..`` or symlink out of it), unless ``allow_absolute``."""
    if not isinstance(value, str) or not value:
        raise UserError(f"{what}: expected a file name, got {value!r}")
    p = Path(value)
    if allow_absolute:
        return p if p.is_absolute() else base / p
    root = base.resolve()
    full = (root / p).resolve()
    if p.is_absolute() or not full.is_relative_to(root):
        raise UserError(f"{what}: {value!r} lies outside the model list's folder {str(root)!r} "
                        "(pass --allow-absolute-paths to allow it)")
    return full


def check_entry(entry: dict[str, Any], base: Path, *, trust_code: bool = False,
                allow_absolute: bool = False) -> None:
    """Check an FBI model-list entry before any work: its files stay in ``base`` (see
    :func:`spec_file`) and a ``path`` is in a safe format (or ``trust_code``). Reads no model."""
    from fastfp import suspects

    what = f"model {entry.get('name')!r}"
    for key in ("path", "weights"):
        if key in entry:
            path = spec_file(entry[key], base, allow_absolute=allow_absolute, what=f"{what}: {key}")
            if key == "path" and not trust_code and path.is_file():
                kind = suspects.sniff(path)
                if kind in suspects.CODE_FORMATS:
                    raise UserError(f"{what}: {str(path)!r} is a {kind} file, whose loading "
                                    f"runs code from it: refused; {suspects.SAFE_FORMATS}; or "
                                    "pass --trust-code for files you trust")


def load_entry(entry: dict[str, Any], base: Path, what: str | None = None, *,
               trust_code: bool = False, allow_absolute: bool = False,
               num_classes: int | None = None) -> torch.nn.Module:
    """The model of an FBI model-list entry (``zoo``, ``arch`` [+ ``weights``, ``num_classes``,
    ``seed``] or ``path``), loaded as a suspect; files lie in ``base`` (see :func:`spec_file`);
    ``num_classes``: the head of an ``arch`` entry that gives none; ``what`` names it in errors
    (default: by its name)."""
    from fastfp import suspects, zoo

    what = what or f"model {entry.get('name')!r}"
    if "zoo" in entry:
        return zoo.load(entry["zoo"])
    if "arch" in entry:
        weights = entry.get("weights")
        path = None if weights is None else spec_file(weights, base, allow_absolute=allow_absolute,
                                                       what=f"{what}: weights")
        try:
            return suspects.load_suspect(path, arch=entry["arch"],
                                         num_classes=entry.get("num_classes", num_classes),
                                         seed=entry.get("seed", 0))
        except ValueError as exc:
            raise UserError(f"{what}: {exc}") from None
    if "path" in entry:
        path = spec_file(entry["path"], base, allow_absolute=allow_absolute, what=f"{what}: path")
        return load_file(path, what, trust_code=trust_code)
    raise UserError(f"{what}: give one of 'zoo', 'arch' or 'path'")


def load_classifier(args: argparse.Namespace, spec: str, flag: str,
                    input_shape: tuple[int, ...], num_classes: int | None, *,
                    same_arch: bool = True) -> Any:
    """Another model given by ``flag`` (``--negative``, ``--others``), loaded as a suspect with
    MODEL's arguments (its ``--arch`` too when ``same_arch``) and checked to classify inputs of
    ``input_shape`` into ``num_classes`` classes, before any work."""
    import torch

    from fastfp.cexamples import checks

    extra = {"model": spec} if same_arch else {"model": spec, "arch": None}
    model = load_model(argparse.Namespace(**{**vars(args), **extra}), suspect=True).model
    try:
        checks.probe(model, torch.zeros(1, *input_shape), num_classes, checks.model_device(model))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{flag} {spec}: not a classifier of the fingerprint's inputs and "
                         f"classes ({exc})") from None
    return model
