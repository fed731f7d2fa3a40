"""Baselines for the fused ops: the DCT high-pass (and LTRC's sign step) as a user would write it.

(a) ``highpass_fft``: a full 2-D DCT via FFT, torch-dct's algorithm (Makhoul's even/odd reorder,
    an FFT and a twiddle for the forward DCT-II, the mirrored twiddle and an inverse real FFT for
    the inverse; norm="ortho"), applied along both axes, mask, inverse. This is what
    ``pip install torch-dct`` + ``dct_2d`` / ``idct_2d`` computes.
(b) ``highpass_dense``: full H x H and W x W orthonormal DCT matrices (built once, cached) and
    four matmuls, the mask in between.

``sign_step_fft`` / ``sign_step_dense``: clamp(x - alpha * sign(grad), lo, hi) then (a) / (b).
"""

from __future__ import annotations

import functools
import math

import torch

from fastfp.reference import dct as ref

# ---- (a) torch-dct's DCT-II / DCT-III via FFT -------------------------------------------------

def dct(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II along the last dim (torch-dct ``dct(x, norm="ortho")``)."""
    shape = x.shape
    n = shape[-1]
    x = x.contiguous().view(-1, n)
    v = torch.cat([x[:, ::2], x[:, 1::2].flip([1])], dim=1)          # Makhoul reorder
    vc = torch.view_as_real(torch.fft.fft(v, dim=1))
    k = -torch.arange(n, dtype=x.dtype, device=x.device)[None, :] * math.pi / (2 * n)
    w_r, w_i = torch.cos(k), torch.sin(k)
    out = vc[:, :, 0] * w_r - vc[:, :, 1] * w_i
    out[:, 0] /= math.sqrt(n) * 2
    out[:, 1:] /= math.sqrt(n / 2) * 2
    return (2 * out).view(*shape)


def idct(c: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct` (torch-dct ``idct(X, norm="ortho")``)."""
    shape = c.shape
    n = shape[-1]
    x_v = c.contiguous().view(-1, n) / 2
    x_v[:, 0] *= math.sqrt(n) * 2
    x_v[:, 1:] *= math.sqrt(n / 2) * 2
    k = torch.arange(n, dtype=c.dtype, device=c.device)[None, :] * math.pi / (2 * n)
    w_r, w_i = torch.cos(k), torch.sin(k)
    v_t_r = x_v
    v_t_i = torch.cat([x_v[:, :1] * 0, -x_v.flip([1])[:, :-1]], dim=1)
    v_r = v_t_r * w_r - v_t_i * w_i
    v_i = v_t_r * w_i + v_t_i * w_r
    v = torch.fft.irfft(torch.complex(v_r, v_i), n=n, dim=1)
    x = v.new_zeros(v.shape)
    x[:, ::2] += v[:, :n - (n // 2)]
    x[:, 1::2] += v.flip([1])[:, :n // 2]
    return x.view(*shape)


def dct_2d(x: torch.Tensor) -> torch.Tensor:
    return dct(dct(x).transpose(-1, -2)).transpose(-1, -2)


def idct_2d(c: torch.Tensor) -> torch.Tensor:
    return idct(idct(c).transpose(-1, -2)).transpose(-1, -2)


def highpass_fft(x: torch.Tensor, k: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    mask = ref.frequency_mask(h, w, k, dtype=x.dtype, device=x.device)
    return idct_2d(dct_2d(x) * mask)


# ---- (b) dense DCT matrices ------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _dense(h: int, w: int, k: int, dtype: torch.dtype, device: torch.device):
    return (ref.dct_matrix(h, dtype=dtype, device=device),
            ref.dct_matrix(w, dtype=dtype, device=device),
            ref.frequency_mask(h, w, k, dtype=dtype, device=device))


def highpass_dense(x: torch.Tensor, k: int) -> torch.Tensor:
    dh, dw, mask = _dense(*x.shape[-2:], k, x.dtype, x.device)
    return dh.T @ ((dh @ x @ dw.T) * mask) @ dw


# ---- the sign step in front of either ----------------------------------------------------------

def step(x: torch.Tensor, grad: torch.Tensor, alpha: float, lo: float = 0.0,
         hi: float = 1.0) -> torch.Tensor:
    return torch.clamp(x - alpha * torch.sign(grad), lo, hi)


def sign_step_fft(x: torch.Tensor, grad: torch.Tensor, alpha: float, k: int, lo: float = 0.0,
                  hi: float = 1.0) -> torch.Tensor:
    return highpass_fft(step(x, grad, alpha, lo, hi), k)


def sign_step_dense(x: torch.Tensor, grad: torch.Tensor, alpha: float, k: int, lo: float = 0.0,
                    hi: float = 1.0) -> torch.Tensor:
    return highpass_dense(step(x, grad, alpha, lo, hi), k)
