"""Whole-image 2-D DCT high-pass, exactly as the LTRC paper's eq. (4) reads.

HighPass(x) = IDCT(FrequencyMask(DCT(x))), per channel, orthonormal DCT-II, with
mask[i, j] = 0 iff 1 <= i + j <= k (0-based; the DC term and everything beyond k kept).
"""

from __future__ import annotations

import math

import torch


def dct_matrix(n: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n x n): DCT(v) = D @ v, IDCT(w) = D.T @ w."""
    i = torch.arange(n, dtype=torch.float64, device=device).unsqueeze(1)  # frequency
    j = torch.arange(n, dtype=torch.float64, device=device).unsqueeze(0)  # sample
    d = torch.cos(math.pi * (2 * j + 1) * i / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(dtype)


def frequency_mask(h: int, w: int, k: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    i = torch.arange(h, device=device).unsqueeze(1)
    j = torch.arange(w, device=device).unsqueeze(0)
    s = i + j
    return (~((s >= 1) & (s <= k))).to(dtype)


def dct2(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    dh = dct_matrix(h, dtype=x.dtype, device=x.device)
    dw = dct_matrix(w, dtype=x.dtype, device=x.device)
    return dh @ x @ dw.T


def idct2(c: torch.Tensor) -> torch.Tensor:
    h, w = c.shape[-2:]
    dh = dct_matrix(h, dtype=c.dtype, device=c.device)
    dw = dct_matrix(w, dtype=c.dtype, device=c.device)
    return dh.T @ c @ dw


def highpass(x: torch.Tensor, k: int) -> torch.Tensor:
    """Literal IDCT2(mask * DCT2(x)), computed in the input's precision (float16/bfloat16 via float32)."""
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    h, w = work.shape[-2:]
    mask = frequency_mask(h, w, k, dtype=work.dtype, device=work.device)
    return idct2(mask * dct2(work)).to(x.dtype)


def sign_step(x: torch.Tensor, grad: torch.Tensor, alpha: float, k: int = 0,
              lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """x_{t+1} = HighPass(Clip_[lo, hi](x_t - alpha * sign(grad))) (LTRC eq. 3; k = 0: no high-pass)."""
    stepped = torch.clamp(x - alpha * torch.sign(grad), lo, hi)
    return highpass(stepped, k) if k > 0 else stepped
