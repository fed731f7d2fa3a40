"""The command line's one model loader: a default-zoo name, a torchvision/timm architecture (random
init or a weights file), or a model file (TorchScript, or a torch.save'd module: unpickled, so
trusted files only). ``generate`` / ``verify`` take it from their arguments, ``fbi`` from the
entries of a model list and from ``--blackbox``."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import torch

from fastfp.cli.main import UserError

MODEL_HELP = ("the model: a TorchScript file, a torch.save'd nn.Module (trusted files only: it is "
              "unpickled), or a default-zoo name such as cnn-s0 (see fastfp.zoo.names())")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """MODEL, --arch, --weights and --device, as :func:`load_model` reads them."""
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--arch", action="store_true",
                   help="MODEL is a torchvision/timm architecture name (random init unless "
                        "--weights)")
    p.add_argument("--weights", metavar="FILE", help="state dict for --arch (.safetensors or .pt)")
    p.add_argument("--device", default=None,
                   help="cpu, cuda or cuda:N (default: cuda when present)")


def load_file(path: str | Path, what: str = "MODEL") -> torch.nn.Module:
    """A model file: TorchScript first, else a pickled module; ``what`` names it in errors."""
    from fastfp.store import read_bytes

    data = read_bytes(path, name=what)  # a regular file only: a FIFO would hang the loader
    try:
        model = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception:  # not TorchScript: try a pickled module
        try:
            model = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        except Exception as exc:
            raise UserError(f"{what}: cannot read {str(path)!r} as TorchScript or a torch.save'd "
                            f"module ({type(exc).__name__}: {exc})") from None
    if not isinstance(model, torch.nn.Module):
        raise UserError(f"{what}: {str(path)!r} holds a {type(model).__name__}, not a "
                        "torch.nn.Module (save the module itself or a TorchScript file; a state "
                        "dict needs its architecture: --arch NAME --weights FILE, or 'arch' and "
                        "'weights' in an FBI model list)")
    return model


def load_entry(entry: dict[str, Any], base: Path, what: str | None = None) -> torch.nn.Module:
    """The model of an FBI model-list entry (``zoo``, ``arch`` [+ ``weights``] or ``path``);
    relative files lie in ``base``; ``what`` names it in errors (default: by its name)."""
    from fastfp import zoo

    what = what or f"model {entry.get('name')!r}"
    if "zoo" in entry:
        return zoo.load(entry["zoo"])
    if "arch" in entry:
        weights = entry.get("weights")
        return zoo.load_arch(entry["arch"], None if weights is None else str(base / weights))
    if "path" in entry:
        return load_file(base / entry["path"], what)
    raise UserError(f"{what}: give one of 'zoo', 'arch' or 'path'")


def load_model(args: argparse.Namespace) -> tuple[torch.nn.Module, str, tuple[int, ...] | None]:
    """(model on its device in eval mode, name, default input shape or None) from the arguments
    of :func:`add_model_args`."""
    from fastfp import _validate, zoo

    spec = args.model
    device = _validate.device("--device", args.device or
                              ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device: cuda asked for, but torch sees no CUDA device")
    if args.weights and not args.arch:
        raise UserError("--weights: only with --arch (a file MODEL already holds its weights)")
    shape: tuple[int, ...] | None = None
    if args.arch:
        model = zoo.load_arch(spec, args.weights)
        name, shape = spec, (3, 224, 224)
    elif Path(spec).exists():
        model = load_file(spec)
        name = Path(spec).stem
    else:
        try:
            zoo.parse_name(spec)
        except ValueError as exc:
            raise UserError(f"MODEL: {spec!r} is neither an existing file nor a zoo model "
                            f"({exc})") from None
        model = zoo.load(spec)
        name, shape = spec, tuple(zoo.INPUT_SHAPE)
    return model.to(device).eval(), name, shape
