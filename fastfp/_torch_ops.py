"""``torch.ops.fastfp.highpass`` / ``torch.ops.fastfp.sign_step``: torch.library custom ops.

Fake (meta) kernels let ``torch.compile`` trace through them without running them, and the
autograd formulas make them differentiable:

- highpass is linear and self-adjoint (an orthogonal projection in the DCT basis), so
  grad_x = highpass(grad_out, k);
- sign_step(x, g) = highpass(clamp(x - alpha * sign(g), lo, hi), k): the chain rule gives
  grad_x = [lo <= x - alpha * sign(g) <= hi] * highpass(grad_out, k) (the clip's derivative,
  inclusive at the bounds like torch.clamp); sign(g) is piecewise constant, so grad_g = 0.
"""

from __future__ import annotations

import torch

from . import ops as _ops


@torch.library.custom_op("fastfp::highpass", mutates_args=())
def highpass(x: torch.Tensor, k: int) -> torch.Tensor:
    return _ops._highpass_impl(x, k)


@highpass.register_fake
def _highpass_fake(x, k):
    return x.new_empty(x.shape)


def _highpass_setup(ctx, inputs, output):
    ctx.k = inputs[1]


def _highpass_backward(ctx, grad_out):
    return torch.ops.fastfp.highpass(grad_out, ctx.k), None


highpass.register_autograd(_highpass_backward, setup_context=_highpass_setup)


@torch.library.custom_op("fastfp::sign_step", mutates_args=())
def sign_step(x: torch.Tensor, grad: torch.Tensor, alpha: float, k: int, lo: float,
              hi: float) -> torch.Tensor:
    return _ops._sign_step_impl(x, grad, alpha, k, lo, hi)


@sign_step.register_fake
def _sign_step_fake(x, grad, alpha, k, lo, hi):
    return x.new_empty(x.shape)


def _sign_step_setup(ctx, inputs, output):
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


sign_step.register_autograd(_sign_step_backward, setup_context=_sign_step_setup)
