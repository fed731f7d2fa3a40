"""Fused ops ``highpass`` and ``sign_step``: the public functions and their torch.library ops.

Each is a ``torch.library.custom_op`` (``torch.ops.fastfp.highpass`` /
``torch.ops.fastfp.sign_step``) with its fake kernel and autograd registered right below it, so
both work under autograd and ``torch.compile``. They are registered when this module runs, which
``import fastfp`` arranges as soon as torch is loaded too (whichever of the two comes first), so a
``torch.export``-ed program holding them loads after ``import fastfp``. The op's kernel picks an
implementation per call from the tensor's device, its dtype and ``FASTFP_BACKEND``:

- ``triton``: the fused Triton kernel (CUDA tensors; CPU tensors only when forced and
  ``TRITON_INTERPRET=1``); float16 / bfloat16 / float32 (float64 goes to the torch path);
- ``cpu``: the low-rank torch path on CPU tensors (:mod:`fastfp._lowrank`);
- ``torch``: the same low-rank torch path on CUDA tensors (no Triton);
- ``reference``: the paper-literal twin in :mod:`fastfp.reference.dct`.

``fastfp.backend.last_used("highpass" | "sign_step")`` names the one that served the last call.

Validation runs once per call, inside the op: its real kernel checks the arguments for real
tensors, its fake kernel for meta / fake tensors (torch.compile's tracing, a meta ``grad``), and
exactly one of the two serves a call, so a direct ``torch.ops.fastfp.*`` call gets the same named
errors as the public function. The public functions only make sure the arguments have the types
of the op's schema (else the dispatcher would reject them first, with its own message).
"""

from __future__ import annotations

import numbers

import torch

from . import _lowrank, _validate, backend
from .reference import dct as _ref


def _check_k(k: object, h: int, w: int) -> int:
    k = _validate.integer("k", k, lo=0, hi=max(h + w - 2, 0))
    need = _lowrank.dct_elements(k, h, w)
    if need > _lowrank.MAX_DCT_ELEMENTS:
        raise ValueError(f"x: a {h} x {w} image at k={k} needs {need} DCT-matrix elements on one "
                         f"axis (rows x size); the fast path serves at most "
                         f"{_lowrank.MAX_DCT_ELEMENTS}")
    return k


def _check_highpass(x: object, k: object) -> int:
    x = _validate.tensor("x", x, min_dim=2, floating=True)
    return _check_k(k, *x.shape[-2:])


def _check_sign_step(x: object, grad: object, alpha: object, k: object, lo: object,
                     hi: object) -> tuple[float, int, float, float]:
    x = _validate.tensor("x", x, min_dim=2, floating=True)
    grad = _validate.tensor("grad", grad, floating=True)
    _validate.same_layout("grad", grad, "x", x)
    alpha = _validate.real("alpha", alpha, lo=0.0)
    k = _check_k(k, *x.shape[-2:])
    lo = _validate.real("lo", lo)
    hi = _validate.real("hi", hi, lo=lo)
    return alpha, k, lo, hi


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


# ---- public functions -------------------------------------------------------------------------

def highpass(x: torch.Tensor, k: int) -> torch.Tensor:
    """Per channel IDCT2(mask * DCT2(x)) with the frequencies 1 <= i + j <= k removed (k=0: copy).

    ``x``: float16/bfloat16/float32/float64 tensor with >= 2 dims (the last two are H, W), any
    device and strides; never modified. Returns a new contiguous tensor of x's dtype. Differentiable
    (the high-pass is linear and self-adjoint).
    """
    if not (isinstance(x, torch.Tensor) and _is_int(k)):
        _check_highpass(x, k)  # raises the named TypeError (the op checks everything else)
    return torch.ops.fastfp.highpass(x, int(k))


def sign_step(x: torch.Tensor, grad: torch.Tensor, alpha: float, k: int = 0,
              lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """highpass(clamp(x - alpha * sign(grad), lo, hi), k), fused (k=0: no high-pass).

    ``grad`` must match x's shape and device (its dtype may differ). Differentiable in ``x``
    (gradient: inside-clip mask * highpass(grad_out)); zero almost everywhere in ``grad``.
    """
    if not (isinstance(x, torch.Tensor) and isinstance(grad, torch.Tensor) and _is_int(k)
            and _is_real(alpha) and _is_real(lo) and _is_real(hi)):
        _check_sign_step(x, grad, alpha, k, lo, hi)  # raises the named TypeError
    return torch.ops.fastfp.sign_step(x, grad, float(alpha), int(k), float(lo), float(hi))


# ---- fastfp::highpass -------------------------------------------------------------------------
# Linear and self-adjoint (an orthogonal projection in the DCT basis): grad_x = highpass(grad_out).

@torch.library.custom_op("fastfp::highpass", mutates_args=())
def _highpass_op(x: torch.Tensor, k: int) -> torch.Tensor:
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


@_highpass_op.register_fake
def _highpass_fake(x: torch.Tensor, k: int) -> torch.Tensor:
    _check_highpass(x, k)
    return x.new_empty(x.shape)


def _highpass_setup(ctx, inputs, output) -> None:
    ctx.k = inputs[1]


def _highpass_backward(ctx, grad_out):
    return torch.ops.fastfp.highpass(grad_out, ctx.k), None


_highpass_op.register_autograd(_highpass_backward, setup_context=_highpass_setup)


# ---- fastfp::sign_step ------------------------------------------------------------------------
# sign_step(x, g) = highpass(clamp(x - alpha * sign(g), lo, hi), k): the chain rule gives
# grad_x = [lo <= x - alpha * sign(g) <= hi] * highpass(grad_out, k) (the clip's derivative,
# inclusive at the bounds like torch.clamp); sign(g) is piecewise constant, so grad_g = 0.

@torch.library.custom_op("fastfp::sign_step", mutates_args=())
def _sign_step_op(x: torch.Tensor, grad: torch.Tensor, alpha: float, k: int, lo: float,
                  hi: float) -> torch.Tensor:
    alpha, k, lo, hi = _check_sign_step(x, grad, alpha, k, lo, hi)
    if x.numel() == 0:
        k = 0  # as in _highpass_op
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


@_sign_step_op.register_fake
def _sign_step_fake(x: torch.Tensor, grad: torch.Tensor, alpha: float, k: int, lo: float,
                    hi: float) -> torch.Tensor:
    _check_sign_step(x, grad, alpha, k, lo, hi)
    return x.new_empty(x.shape)


def _sign_step_setup(ctx, inputs, output) -> None:
    x, grad, alpha, k, lo, hi = inputs
    ctx.k = k
    if ctx.needs_input_grad[0]:
        y = x - alpha * torch.sign(grad)
        ctx.save_for_backward((y >= lo) & (y <= hi))
    else:
        ctx.save_for_backward(None)


def _sign_step_backward(ctx, grad_out):
    (inside,) = ctx.saved_tensors
    grad_x = None
    if inside is not None:
        g = torch.ops.fastfp.highpass(grad_out, ctx.k) if ctx.k > 0 else grad_out
        grad_x = g * inside
    return grad_x, None, None, None, None, None


_sign_step_op.register_autograd(_sign_step_backward, setup_context=_sign_step_setup)


# ---- dispatch and the implementations' glue ---------------------------------------------------
# Hot path for CUDA tensors (the engine captures sign_step in a CUDA graph): shapes and Python
# scalars only, the DCT rows and masks come from _lowrank's device cache; no host sync, no copy.

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


def _triton(x: torch.Tensor, grad: torch.Tensor, k: int, alpha: float, lo: float, hi: float,
            step: bool) -> torch.Tensor:
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


def _step_torch(x: torch.Tensor, grad: torch.Tensor, alpha: float, lo: float, hi: float,
                wd: torch.dtype) -> torch.Tensor:
    """clamp(x - alpha * sign(grad), lo, hi) as a fresh contiguous tensor of dtype ``wd``."""
    if x.dtype == wd and grad.dtype == wd:
        # three passes: sign -> tmp, x - alpha * tmp -> s (fresh, contiguous), clamp s in place
        s = torch.add(x, torch.sign(grad), alpha=-alpha).contiguous()
    else:  # half inputs (or mixed): step in float32
        s = torch.sign(grad).to(wd).contiguous()  # a fresh tensor: ours to overwrite
        s.mul_(-alpha).add_(x)
    return s.clamp_(lo, hi)
