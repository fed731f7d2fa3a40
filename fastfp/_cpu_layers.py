"""A CPU fast path for the user model's max-pooling while fastfp's gradient loops run.

Characteristic examples evaluate the model (forward + input gradient) q times per step, so on a
CPU the model's own kernels are the cost. PyTorch's CPU max-pool of NCHW tensors branches per
element and is far slower than the work it does: 0.7 ms for a 16x16x32x32 input on 2 cores,
8x its own channels-last kernel (pytorch/pytorch#51393), a quarter of a small CNN's forward +
input gradient. The extension's kernel (csrc/cpu/max_pool.cpp) takes 0.025 ms for the common
non-overlapping windows (2x2, 3x3, 4x4 with stride = kernel, no padding) and returns the same
values and the same indices (same tie and NaN rules), so results are bit for bit PyTorch's; the
backward is PyTorch's own, from those indices.

:func:`enabled` gives a context in which exactly those calls are rerouted; every other call, and
every max-pool outside those conditions, runs PyTorch's own op. It is entered by the CPU
gradient loops of :mod:`fastfp.cexamples` and :func:`fastfp.noise.grad_mean`.
``FASTFP_CPU_LAYERS=0``, or ``FASTFP_BACKEND`` other than ``auto``, turns it off.
"""

from __future__ import annotations

import contextlib
import os
import threading

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

from . import backend

POOL_WINDOWS = (2, 3, 4)  # compiled in csrc/cpu/max_pool.cpp

_state = threading.local()


def available() -> bool:
    ext = backend.extension()
    return ext is not None and hasattr(ext, "max_pool2d_cpu")


def _wanted(device: torch.device) -> bool:
    if device.type != "cpu" or getattr(_state, "active", False):
        return False
    if os.environ.get("FASTFP_CPU_LAYERS", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return backend.forced() == "auto" and available()


@contextlib.contextmanager
def enabled(device):
    """Reroute the model's NCHW max-pools inside the block (a no-op off CPU or when nested)."""
    if not _wanted(torch.device(device)):
        yield
        return
    _state.active = True
    try:
        with _Router():
            yield
    finally:
        _state.active = False


def _pair(v):
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(
            isinstance(e, int) and not isinstance(e, bool) for e in v):
        return tuple(v)
    return None


class _MaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, k):
        n, c, h, w = x.shape
        out = x.new_empty((n, c, h // k, w // k))
        idx = torch.empty(out.shape, dtype=torch.int64)
        backend.extension().max_pool2d_cpu(x, out, idx, k, k)
        ctx.save_for_backward(x, idx)
        ctx.k = k
        ctx.mark_non_differentiable(idx)
        return out, idx

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, _grad_idx):
        x, idx = ctx.saved_tensors
        k = [ctx.k, ctx.k]
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad_out, x, k, k, [0, 0], [1, 1], False, idx), None


_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")


def max_pool(args, kwargs, *, with_indices_arg: bool = True, pair: bool = False):
    """``F.max_pool2d(*args, **kwargs)`` through the extension kernel, or ``NotImplemented`` when
    the call is outside its conditions (the caller then runs PyTorch's op). ``pair``: always
    return (values, indices), as ``F.max_pool2d_with_indices`` does."""
    a = dict(zip(_POOL_ARGS if with_indices_arg else _POOL_ARGS[:-1], args))
    a.update(kwargs)
    x, k = a.get("input"), _pair(a.get("kernel_size"))
    stride = a.get("stride")
    stride = k if stride is None or (isinstance(stride, (list, tuple)) and not stride) else _pair(stride)
    if (k is None or k[0] != k[1] or k[0] not in POOL_WINDOWS or stride != k
            or _pair(a.get("padding", 0)) != (0, 0) or _pair(a.get("dilation", 1)) != (1, 1)
            or a.get("ceil_mode", False) or type(x) is not torch.Tensor or x.device.type != "cpu"
            or x.dtype != torch.float32 or x.dim() != 4 or not x.is_contiguous()
            or x.shape[2] < k[0] or x.shape[3] < k[1] or x.numel() == 0):
        return NotImplemented
    out, idx = _MaxPool.apply(x, k[0])
    return (out, idx) if pair or a.get("return_indices", False) else out


class _Router(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = NotImplemented
        if not torch.is_autocast_enabled("cpu"):  # autocast picks its own kernels and dtypes
            if func is F.max_pool2d:
                out = max_pool(args, kwargs)
            elif func is F.max_pool2d_with_indices:  # F.max_pool2d(..., return_indices=True)
                out = max_pool(args, kwargs, pair=True)
            elif func is torch.max_pool2d:
                out = max_pool(args, kwargs, with_indices_arg=False)
        return func(*args, **kwargs) if out is NotImplemented else out
