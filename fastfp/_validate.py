"""Argument checks shared by every public entry point: fail early, name the argument."""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
T = TypeVar("T")


def tensor(name: str, x: object, *, min_dim: int = 0, floating: bool = False) -> torch.Tensor:
    """A tensor with at least ``min_dim`` dims (and a float dtype if ``floating``)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() < min_dim:
        raise ValueError(f"{name}: expected at least {min_dim} dims, got shape {tuple(x.shape)}")
    if floating and x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected float16, bfloat16, float32 or float64, got {x.dtype}")
    return x


def same_layout(name: str, y: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """``y`` has the shape and device of ``ref``."""
    if y.shape != ref.shape:
        raise ValueError(f"{name}: shape {tuple(y.shape)} does not match {ref_name} "
                         f"{tuple(ref.shape)}")
    if y.device != ref.device:
        raise ValueError(f"{name}: on {y.device}, but {ref_name} is on {ref.device}")


def integer(name: str, v: object, *, lo: int | None = None, hi: int | None = None) -> int:
    """An int with lo <= v <= hi (bounds inclusive, None = unbounded)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ValueError(f"{name}: expected an int in [{lo_s}, {hi_s}], got {v}")
    return v


def real(name: str, v: object, *, lo: float | None = None, hi: float | None = None) -> float:
    """A finite real with lo <= v <= hi (bounds inclusive, None = unbounded)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(v).__name__}")
    v = float(v)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{name}: expected a finite number, got {v}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ValueError(f"{name}: expected a number in [{lo_s}, {hi_s}], got {v}")
    return v


def choice(name: str, v: T, options: Sequence[T]) -> T:
    """``v`` is one of ``options``."""
    if v not in options:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, options))}, got {v!r}")
    return v


def device(name: str, value: object) -> torch.device:
    """A torch device from a string, index-less name or ``torch.device``."""
    if isinstance(value, torch.device):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a device such as 'cpu' or 'cuda:0', got "
                        f"{type(value).__name__}")
    try:
        return torch.device(value)
    except (RuntimeError, ValueError):
        raise ValueError(f"{name}: not a torch device: {value!r} (e.g. 'cpu', 'cuda', "
                         "'cuda:1')") from None


def path(name: str, value: object) -> Path:
    """A file-system path from a ``str`` or ``os.PathLike`` (never None, bytes or a number)."""
    if isinstance(value, Path):
        return value
    if isinstance(value, str) or (isinstance(value, os.PathLike)
                                  and isinstance(os.fspath(value), str)):
        if not os.fspath(value):
            raise ValueError(f"{name}: expected a file path, got an empty string")
        return Path(value)
    raise TypeError(f"{name}: expected a file path (str or os.PathLike), got "
                    f"{type(value).__name__}")
