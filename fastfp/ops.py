"""Functional fused ops ``highpass`` and ``sign_step``: validation, then one dispatch point.

Both are registered as ``torch.ops.fastfp.highpass`` / ``torch.ops.fastfp.sign_step`` (see
:mod:`fastfp._torch_ops`), so they work under autograd and ``torch.compile``. Implementations,
chosen per call from the tensor's device, its dtype and ``FASTFP_BACKEND``:

- ``triton``: the fused Triton kernel (CUDA tensors; CPU tensors only when forced and
  ``TRITON_INTERPRET=1``); float16 / bfloat16 / float32 (float64 goes to the torch path);
- ``cpu``: the low-rank torch path on CPU tensors (:mod:`fastfp._lowrank`) (optionally the
  compiled extension's elementwise step, see ``USE_EXT_STEP``);
- ``torch``: the same low-rank torch path on CUDA tensors (no Triton);
- ``reference``: the paper-literal twin in :mod:`fastfp.reference.dct`.

``fastfp.backend.last_used("highpass" | "sign_step")`` names the one that served the last call.
"""

from __future__ import annotations

import torch

from . import _lowrank, _validate, backend
from .reference import dct as _ref

# The extension's threaded elementwise step (fastfp._ext.sign_step_cpu, one pass) instead of
# torch's three: measured on the 2-core machine it was slower (1.3 ms vs 0.35 ms for the whole
# sign_step at 100x3x32x32, 270-430 ms vs 200 ms at 100x3x224x224, shared cores: its OpenMP pool
# competes with torch's), so it is off; kept switchable for machines where it pays.
USE_EXT_STEP = False


def _check_k(k, h: int, w: int) -> int:
    return _validate.integer("k", k, lo=0, hi=max(h + w - 2, 0))


def _check_highpass(x, k) -> int:
    _validate.tensor("x", x, min_dim=2, floating=True)
    return _check_k(k, *x.shape[-2:])


def _check_sign_step(x, grad, alpha, k, lo, hi):
    _validate.tensor("x", x, min_dim=2, floating=True)
    _validate.tensor("grad", grad, floating=True)
    _validate.same_layout("grad", grad, "x", x)
    alpha = _validate.real("alpha", alpha, lo=0.0)
    k = _check_k(k, *x.shape[-2:])
    lo = _validate.real("lo", lo)
    hi = _validate.real("hi", hi, lo=lo)
    return alpha, k, lo, hi


def highpass(x: torch.Tensor, k: int) -> torch.Tensor:
    """Per channel IDCT2(mask * DCT2(x)) with the frequencies 1 <= i + j <= k removed (k=0: copy).

    ``x``: float16/bfloat16/float32/float64 tensor with >= 2 dims (the last two are H, W), any
    device and strides; never modified. Returns a new contiguous tensor of x's dtype. Differentiable
    (the high-pass is linear and self-adjoint).
    """
    k = _check_highpass(x, k)
    return torch.ops.fastfp.highpass(x, k)


def sign_step(x: torch.Tensor, grad: torch.Tensor, alpha: float, k: int = 0,
              lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """highpass(clamp(x - alpha * sign(grad), lo, hi), k), fused (k=0: no high-pass).

    ``grad`` must match x's shape and device (its dtype may differ). Differentiable in ``x``
    (gradient: inside-clip mask * highpass(grad_out)); zero almost everywhere in ``grad``.
    """
    alpha, k, lo, hi = _check_sign_step(x, grad, alpha, k, lo, hi)
    return torch.ops.fastfp.sign_step(x, grad, alpha, k, lo, hi)


# ---- dispatch (runs inside the registered ops) ------------------------------------------------

def _choose(op: str, x: torch.Tensor) -> str:
    mode = backend.forced()
    if mode == "reference":
        return "reference"
    if mode == "triton":
        if not backend.triton_usable(x.device):
            raise backend.missing("triton", op)
        return "triton" if x.dtype != torch.float64 else _lowrank_name(x)
    if mode in ("auto", "cuda") and x.device.type == "cuda" and backend.triton_usable(x.device) \
            and x.dtype != torch.float64:
        return "triton"
    return _lowrank_name(x)


def _lowrank_name(x: torch.Tensor) -> str:
    return "cpu" if x.device.type == "cpu" else "torch"


def _triton(x, grad, k, alpha, lo, hi, step: bool) -> torch.Tensor:
    from .kernels import highpass_sign_step as kern  # imports triton: only here

    h, w = x.shape[-2:]
    x3 = x.reshape(-1, h, w)  # a view whenever the strides allow: the kernel takes any strides
    g3 = grad.reshape(-1, h, w) if step else x3
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    kept, h0, w0, rh, rw = _lowrank.plan(k, h, w) if k > 0 else (False, 0, 0, 0, 0)
    dh = _lowrank.dct_rows(h, rh, torch.float32, x.device, h0)
    dw = _lowrank.dct_rows(w, rw, torch.float32, x.device, w0)
    kern.launch(x3, g3, out.view(-1, h, w), dh, dw, k, alpha, lo, hi, step=step, kept=kept,
                h0=h0, w0=w0)
    return out


def _highpass_impl(x: torch.Tensor, k: int) -> torch.Tensor:
    k = _check_highpass(x, k)
    if x.numel() == 0:
        k = 0  # nothing to filter (H or W = 0: a DCT of size 0 would divide by 0)
    impl = _choose("highpass", x)
    backend.record("highpass", impl)
    if impl == "reference":
        out = _ref.highpass(x, k) if k > 0 else x.clone()
        return out.contiguous()
    if impl == "triton":
        return _triton(x, x, k, 0.0, 0.0, 0.0, step=False)
    return _lowrank.highpass(x, k)


def _step_torch(x: torch.Tensor, grad: torch.Tensor, alpha, lo, hi, wd) -> torch.Tensor:
    """clamp(x - alpha * sign(grad), lo, hi) as a fresh contiguous tensor of dtype ``wd``."""
    ext = backend.extension() if USE_EXT_STEP and backend.forced() != "torch" else None
    if (ext is not None and x.device.type == "cpu" and x.dtype == grad.dtype == torch.float32
            and x.is_contiguous() and grad.is_contiguous()):
        out = torch.empty(x.shape, dtype=torch.float32)
        ext.sign_step_cpu(x.reshape(-1), grad.reshape(-1), out.view(-1), alpha, lo, hi)
        return out
    if x.dtype == wd and grad.dtype == wd:
        # three passes: sign -> tmp, x - alpha * tmp -> s (fresh, contiguous), clamp s in place
        s = torch.add(x, torch.sign(grad), alpha=-alpha).contiguous()
    else:  # half inputs (or mixed): step in float32
        s = torch.sign(grad).to(wd).contiguous()  # a fresh tensor: ours to overwrite
        s.mul_(-alpha).add_(x)
    return s.clamp_(lo, hi)


def _sign_step_impl(x, grad, alpha, k, lo, hi) -> torch.Tensor:
    alpha, k, lo, hi = _check_sign_step(x, grad, alpha, k, lo, hi)
    if x.numel() == 0:
        k = 0  # as in _highpass_impl
    impl = _choose("sign_step", x)
    backend.record("sign_step", impl)
    if impl == "reference":
        # the twin steps in torch's promoted dtype (a float64 grad makes it float64): the op
        # returns x's dtype on every path, as its fake kernel promises
        return _ref.sign_step(x, grad, alpha, k, lo, hi).to(x.dtype).contiguous()
    if impl == "triton":
        return _triton(x, grad, k, alpha, lo, hi, step=True)
    wd = _lowrank.work_dtype(x.dtype)
    s = _step_torch(x, grad, alpha, lo, hi, wd)
    if k > 0:
        _lowrank.subtract_lowpass_(s, k)
    return s if s.dtype == x.dtype else s.to(x.dtype)


from . import _torch_ops  # noqa: E402,F401  (registers torch.ops.fastfp.*; needs the impls above)
