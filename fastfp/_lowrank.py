"""Low-rank DCT high-pass in plain torch: the CPU fast path (and the CUDA path without Triton).

Only the frequencies with ``1 <= i + j <= k`` are removed, and they all lie in the (k+1) x (k+1)
top-left corner of the spectrum, so with ``Dh`` / ``Dw`` the first ``k+1`` rows of the orthonormal
DCT-II matrices (clamped to H / W rows):

    highpass(x) = x - Dh^T (M * (Dh x Dw^T)) Dw,     M[i, j] = 1 iff 1 <= i + j <= k

which is exact (the DCT is orthonormal) and costs O(k H W) instead of O(H W (H + W)).
"""

from __future__ import annotations

import functools
import math

import torch


def rank(k: int, n: int) -> int:
    """How many DCT rows of an axis of length ``n`` the mask touches (k+1, clamped to n)."""
    return min(k + 1, n)


@functools.lru_cache(maxsize=64)
def _dct_rows_f64(n: int, r: int) -> torch.Tensor:
    # Built once in float64 on CPU, then cast / moved per (dtype, device) below.
    i = torch.arange(r, dtype=torch.float64).unsqueeze(1)  # frequency
    j = torch.arange(n, dtype=torch.float64).unsqueeze(0)  # sample
    d = torch.cos(math.pi * (2 * j + 1) * i / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


@functools.lru_cache(maxsize=128)
def dct_rows(n: int, r: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """First ``r`` rows of the orthonormal DCT-II matrix of size ``n`` (r x n), cached."""
    return _dct_rows_f64(n, r).to(dtype=dtype, device=device).contiguous()


@functools.lru_cache(maxsize=128)
def removed_mask(rh: int, rw: int, k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(rh x rw) mask of the removed frequencies: 1 where 1 <= i + j <= k."""
    s = torch.arange(rh).unsqueeze(1) + torch.arange(rw).unsqueeze(0)
    return ((s >= 1) & (s <= k)).to(dtype=dtype, device=device)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half types are computed in float32 (fp32 accumulate); float32 / float64 in themselves."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def subtract_lowpass_(s: torch.Tensor, k: int) -> torch.Tensor:
    """In place on ``s`` (a contiguous float32/float64 tensor of ours): s <- highpass(s, k)."""
    _apply(s, k, s)
    return s


def highpass(x: torch.Tensor, k: int) -> torch.Tensor:
    """highpass(x, k) in the low-rank form; never modifies ``x``; returns x's dtype (contiguous)."""
    wd = work_dtype(x.dtype)
    if k == 0:
        return x.clone(memory_format=torch.contiguous_format)
    if x.dtype != wd:
        s = x.to(wd, memory_format=torch.contiguous_format)  # a fresh copy: may be overwritten
        return subtract_lowpass_(s, k).to(x.dtype)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _apply(x, k, out)
    return out


def _apply(s: torch.Tensor, k: int, out: torch.Tensor) -> None:
    """out <- s - Dh^T (M * (Dh s Dw^T)) Dw over the last two dims (out contiguous; may alias s)."""
    h, w = s.shape[-2:]
    rh, rw = rank(k, h), rank(k, w)
    dh = dct_rows(h, rh, s.dtype, s.device)
    dw = dct_rows(w, rw, s.dtype, s.device)
    mask = removed_mask(rh, rw, k, s.dtype, s.device)
    rows = s.reshape(-1, w)                                   # (N*H, W); copies only if strided
    t = (rows @ dw.T).view(-1, h, rw)                         # (N, H, rw): project columns
    c = torch.matmul(dh, t)                                   # (N, rh, rw): project rows
    c.mul_(mask)                                              # keep the frequencies to remove
    u = torch.matmul(dh.T, c).view(-1, rw)                    # (N*H, rw)
    flat_out = out.view(-1, w)
    if out.data_ptr() == s.data_ptr():
        flat_out.addmm_(u, dw, alpha=-1.0)                    # s - u Dw, in place
    else:
        torch.addmm(rows, u, dw, alpha=-1.0, out=flat_out)    # one read of s, one write of out
