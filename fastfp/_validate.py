"""Argument checks shared by every public entry point: fail early, name the argument."""

from __future__ import annotations

import numbers

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def tensor(name: str, x, *, min_dim: int = 0, floating: bool = False) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() < min_dim:
        raise ValueError(f"{name}: expected at least {min_dim} dims, got shape {tuple(x.shape)}")
    if floating and x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected float16, bfloat16, float32 or float64, got {x.dtype}")
    return x


def same_layout(name: str, y: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if y.shape != ref.shape:
        raise ValueError(f"{name}: shape {tuple(y.shape)} does not match {ref_name} {tuple(ref.shape)}")
    if y.device != ref.device:
        raise ValueError(f"{name}: on {y.device}, but {ref_name} is on {ref.device}")


def integer(name: str, v, *, lo: int | None = None, hi: int | None = None) -> int:
    """An int with lo <= v <= hi (bounds inclusive, None = unbounded)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ValueError(f"{name}: expected an int in [{lo_s}, {hi_s}], got {v}")
    return v


def real(name: str, v, *, lo: float | None = None, hi: float | None = None) -> float:
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


def choice(name: str, v, options) -> str:
    if v not in options:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, options))}, got {v!r}")
    return v
