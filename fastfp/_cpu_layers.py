"""CPU fast paths for two of the user model's layers while fastfp's gradient loops run.

Characteristic examples evaluate the model (forward + input gradient) q times per step, so on a
CPU the model's own kernels are the cost, and two of PyTorch's CPU kernels are far slower than
the work they do at the sizes of a fingerprinting loop (2 cores, batch 16, 32x32 images):

- max-pooling of NCHW tensors: 0.7 ms for 16x16x32x32, 8x PyTorch's own channels-last kernel
  (pytorch/pytorch#51393), a quarter of a small CNN's forward + input gradient. The extension's
  branch-free kernel (csrc/cpu/max_pool.cpp) takes 0.025 ms for the common non-overlapping
  windows (2x2, 3x3, 4x4, stride = kernel, no padding) and returns the same values and indices
  (same tie and NaN rules): results are bit for bit PyTorch's; the backward is PyTorch's own.
- the input gradient of a stride-1 convolution with few input channels (an image's first layer,
  whose input gradient characteristic examples always need): oneDNN's backward-data takes
  ~0.5 ms for 1 -> 16 channels; the extension's direct kernel (csrc/cpu/conv_input_grad.cpp)
  ~0.1 ms. Equal up to float summation order; the forward stays PyTorch's.

:func:`enabled` gives a context in which exactly those calls are rerouted; every other call, and
every call outside a fast path's conditions (training with weight gradients, strides, groups,
padding of pools, other dtypes or layouts ...), runs PyTorch's own op. It is entered by the CPU
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
MAX_CONV_IN_CHANNELS = 4  # beyond a few input channels oneDNN's backward-data is efficient

_state = threading.local()


def available() -> bool:
    ext = backend.extension()
    return ext is not None and hasattr(ext, "max_pool2d_cpu") and hasattr(ext, "conv_input_grad_cpu")


def _switched_off() -> bool:
    return os.environ.get("FASTFP_CPU_LAYERS", "1").strip().lower() in ("0", "false", "no", "off")


def status() -> str:
    """One line for ``fastfp info``."""
    if not available():
        return "PyTorch's (the extension lacks the kernels)"
    if _switched_off():
        return "PyTorch's (FASTFP_CPU_LAYERS=0)"
    if backend.forced() != "auto":
        return f"PyTorch's (FASTFP_BACKEND={backend.forced()})"
    return "extension max-pool and small-input conv gradient (FASTFP_CPU_LAYERS=0: off)"


def _wanted(device: torch.device) -> bool:
    if device.type != "cpu" or getattr(_state, "active", False):
        return False
    return not _switched_off() and backend.forced() == "auto" and available()


@contextlib.contextmanager
def enabled(device, model=None):
    """Reroute the model's slow CPU layers inside the block (a no-op off CPU, when nested, or
    for a ``torch.compile``'d model: the compiler would trace the router at every call)."""
    if not _wanted(torch.device(device)) or hasattr(model, "_orig_mod"):
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


def conv_input_grad(grad_out: torch.Tensor, weight: torch.Tensor, size, padding) -> torch.Tensor:
    """d loss / d input of a stride-1, undilated, ungrouped convolution with the given padding,
    in torch: one matrix product (Ci kh kw x Co by Co x HoWo per image), then kh x kw shifted
    additions. The readable twin of the extension's float32 kernel, and its float64 path."""
    n, co, ho, wo = grad_out.shape
    _, ci, kh, kw = weight.shape
    (h, w), (ph, pw) = size, padding
    cols = torch.matmul(weight.reshape(co, ci * kh * kw).t(), grad_out.reshape(n, co, ho * wo))
    cols = cols.view(n, ci, kh, kw, ho, wo)
    full = grad_out.new_zeros((n, ci, h + 2 * ph, w + 2 * pw))
    for i in range(kh):
        for j in range(kw):
            full[:, :, i:i + ho, j:j + wo] += cols[:, :, i, j]
    return full[:, :, ph:ph + h, pw:pw + w].contiguous()


class _ConvSmallInput(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.save_for_backward(weight)
        ctx.size, ctx.padding = tuple(x.shape[2:]), padding
        return torch.conv2d(x, weight, bias, 1, padding, 1, 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        (weight,) = ctx.saved_tensors
        if grad_out.dtype != torch.float32:
            return conv_input_grad(grad_out, weight, ctx.size, ctx.padding), None, None, None
        grad_in = grad_out.new_empty((grad_out.shape[0], weight.shape[1], *ctx.size))
        backend.extension().conv_input_grad_cpu(grad_out.contiguous(), weight.contiguous(),
                                                grad_in, *ctx.padding)
        return grad_in, None, None, None


_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_PLAIN = (torch.Tensor, torch.nn.Parameter)  # not other tensor subclasses


def conv2d(args, kwargs):
    """``torch.conv2d(*args, **kwargs)`` with the extension's input gradient, or
    ``NotImplemented`` when the call is outside its conditions."""
    a = dict(zip(_CONV_ARGS, args))
    a.update(kwargs)
    x, weight, bias = a.get("input"), a.get("weight"), a.get("bias")
    padding = _pair(a.get("padding", 0))
    if (not torch.is_grad_enabled() or type(x) is not torch.Tensor or not x.requires_grad
            or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64)
            or x.dim() != 4 or not x.is_contiguous() or x.numel() == 0
            or x.shape[1] > MAX_CONV_IN_CHANNELS
            or type(weight) not in _PLAIN or weight.requires_grad  # weight gradients: PyTorch's op
            or weight.dtype != x.dtype or weight.dim() != 4 or weight.shape[1] != x.shape[1]
            or (bias is not None and (type(bias) not in _PLAIN or bias.requires_grad))
            or _pair(a.get("stride", 1)) != (1, 1) or _pair(a.get("dilation", 1)) != (1, 1)
            or a.get("groups", 1) != 1 or padding is None or min(padding) < 0
            or x.shape[2] + 2 * padding[0] < weight.shape[2]
            or x.shape[3] + 2 * padding[1] < weight.shape[3]):
        return NotImplemented
    return _ConvSmallInput.apply(x, weight, bias, padding)


def _transformed(args, kwargs) -> bool:
    """Any argument inside a torch.func transform (vmap, grad ...)? The fast paths are plain
    autograd Functions, which those transforms refuse."""
    wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return any(isinstance(t, torch.Tensor) and (wrapped is None or wrapped(t))
               for t in (*args, *kwargs.values()))


_ROUTES = {
    F.max_pool2d: max_pool,
    F.max_pool2d_with_indices: lambda a, k: max_pool(a, k, pair=True),  # return_indices=True
    torch.max_pool2d: lambda a, k: max_pool(a, k, with_indices_arg=False),
    torch.conv2d: conv2d,  # F.conv2d is torch.conv2d
}


class _Router(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        route = _ROUTES.get(func)
        out = NotImplemented
        # autocast picks its own kernels and dtypes; torch.func transforms refuse the Functions
        if route and not torch.is_autocast_enabled("cpu") and not _transformed(args, kwargs):
            out = route(args, kwargs)
        return func(*args, **kwargs) if out is NotImplemented else out
