"""Array plumbing for the FBI engine: numpy / torch / cupy in, same kind out (through DLPack).

Every public FBI function converts its array arguments with :func:`as_tensor`, works on torch
tensors (CPU or CUDA), and converts results back with :func:`restore` to the kind of its first
array argument. Symbol arrays are validated here once: integers, non-negative, and ``<= k`` when a
``k`` is given.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fastfp import _validate

Array = Any  # a numpy, torch or cupy array (or a nested list of numbers)

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def kind_of(x: object) -> str:
    """'torch', 'cupy' or 'numpy' (lists and tuples count as numpy)."""
    if isinstance(x, torch.Tensor):
        return "torch"
    if type(x).__module__.split(".")[0] == "cupy":
        return "cupy"
    return "numpy"


def as_tensor(name: str, x: Any, *, integer: bool = True) -> torch.Tensor:
    """A torch view of ``x`` (numpy, torch, cupy or a nested list), copied only when needed."""
    kind = kind_of(x)
    if kind == "torch":
        t = x
    elif kind == "cupy":
        t = torch.from_dlpack(x)
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(
                f"{name}: expected an array (numpy, torch or cupy), got {type(x).__name__}"
            ) from exc
        if arr.dtype.kind not in "biufc":  # objects, strings, dates: torch cannot hold them
            raise TypeError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
        if arr.dtype == np.bool_ and integer:
            arr = arr.astype(np.uint8)
        if arr.dtype.kind == "u" and arr.dtype.itemsize > 1:
            arr = arr.astype(np.int64)  # torch has no uint16/32/64 arithmetic
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if integer and t.dtype not in _INT_DTYPES:
        if t.dtype == torch.bool:
            t = t.to(torch.uint8)
        else:
            raise TypeError(f"{name}: expected an integer array, got {t.dtype}")
    return t


def restore(t: torch.Tensor, kind: str) -> Any:
    """Convert a result tensor back to the caller's array kind."""
    if kind == "torch":
        return t
    if kind == "cupy":
        import cupy

        return cupy.from_dlpack(t.contiguous())
    return t.detach().cpu().numpy()


def check_seed(seed: object, name: str = "seed", *, optional: bool = True) -> int | None:
    """A random seed: an int >= 0 (or None when ``optional``), checked before any work."""
    if seed is None and optional:
        return None
    return _validate.integer(name, seed, lo=0)


def check_k(k: object, name: str = "k") -> int | None:
    """An alphabet bound k in 0..254 (S_k symbols fit uint8), or None."""
    if k is None:
        return None
    return _validate.integer(name, k, lo=0, hi=254)


def symbols(name: str, x: object, k: int | None = None, *, min_dim: int = 1) -> torch.Tensor:
    """Validate a symbol array: integer, ``min_dim`` dims or more, values in 0..k (>= 0 if no k)."""
    t = as_tensor(name, x)
    if t.dim() < min_dim:
        raise ValueError(f"{name}: expected at least {min_dim} dims, got shape {tuple(t.shape)}")
    if t.numel() and t.dtype != torch.uint8:  # uint8 (the usual symbols) cannot be negative
        lo = int(t.min())
        if lo < 0:
            raise ValueError(f"{name}: symbols must be >= 0, found {lo}")
    if t.numel() and k is not None:
        hi = int(t.max())
        if hi > k:
            raise ValueError(f"{name}: symbols must lie in 0..k = 0..{k}, found {hi}")
    return t


def num_symbols(k: int | None, *tensors: torch.Tensor) -> int:
    """The alphabet size K: k + 1 when k is known, else one more than the largest symbol seen."""
    if k is not None:
        return k + 1
    hi = 0
    for t in tensors:
        if t.numel():
            hi = max(hi, int(t.max()))
    return hi + 1
