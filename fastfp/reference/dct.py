"""Whole-image 2-D DCT high-pass, exactly as the LTRC paper's eq. (4) reads.

HighPass(x) = IDCT(FrequencyMask(DCT(x))), per channel, orthonormal DCT-II, with
mask[i, j] = 0 iff 1 <= i + j <= k (0-based; the DC term and everything beyond k kept).

:func:`dct_matrix` is also the project's one DCT-matrix builder (the fast paths take rows of it).
"""

from __future__ import annotations

import math

import torch


def dct_matrix(n: int, *, rows: int | None = None, start: int = 0,
               dtype: torch.dtype = torch.float64,
               device: torch.device | str | None = None) -> torch.Tensor:
    """Rows ``start .. start+rows-1`` (default: all n) of the orthonormal DCT-II matrix D (n x n).

    DCT(v) = D @ v, IDCT(w) = D.T @ w. Only the asked rows are built (O(rows * n) work and
    memory), in float64 on ``device``, then cast to ``dtype``.
    """
    if not 0 <= start <= n:
        raise ValueError(f"start: expected 0..{n} for a DCT of size {n}, got {start}")
    rows = n - start if rows is None else rows
    if not 0 <= rows <= n - start:
        raise ValueError(f"rows: expected 0..{n - start} rows from {start} (size {n}), got {rows}")
    i = torch.arange(start, start + rows, dtype=torch.float64, device=device).unsqueeze(1)
    j = torch.arange(n, dtype=torch.float64, device=device).unsqueeze(0)  # sample
    d = torch.cos(math.pi * (2 * j + 1) * i / (2 * n)) * math.sqrt(2.0 / n)
    if start == 0 and rows > 0:
        d[0] /= math.sqrt(2.0)  # the DC row
    return d.to(dtype)


def frequency_mask(h: int, w: int, k: int, *, dtype: torch.dtype = torch.float64,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """(h x w) mask over the spectrum: 0 on the removed band 1 <= i + j <= k, 1 elsewhere."""
    i = torch.arange(h, device=device).unsqueeze(1)
    j = torch.arange(w, device=device).unsqueeze(0)
    s = i + j
    return (~((s >= 1) & (s <= k))).to(dtype)


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II over the last two dims."""
    h, w = x.shape[-2:]
    dh = dct_matrix(h, dtype=x.dtype, device=x.device)
    dw = dct_matrix(w, dtype=x.dtype, device=x.device)
    return dh @ x @ dw.T


def idct2(c: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2`."""
    h, w = c.shape[-2:]
    dh = dct_matrix(h, dtype=c.dtype, device=c.device)
    dw = dct_matrix(w, dtype=c.dtype, device=c.device)
    return dh.T @ c @ dw


def highpass(x: torch.Tensor, k: int) -> torch.Tensor:
    """Literal IDCT2(mask * DCT2(x)), in the input's precision (float16/bfloat16 via float32)."""
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    h, w = work.shape[-2:]
    mask = frequency_mask(h, w, k, dtype=work.dtype, device=work.device)
    return idct2(mask * dct2(work)).to(x.dtype)


def sign_step(x: torch.Tensor, grad: torch.Tensor, alpha: float, k: int = 0,
              lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """x_{t+1} = HighPass(Clip_[lo, hi](x_t - alpha * sign(grad))) (LTRC eq. 3; k = 0: none)."""
    stepped = torch.clamp(x - alpha * torch.sign(grad), lo, hi)
    return highpass(stepped, k) if k > 0 else stepped
