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


@functools.lru_cache(maxsize=32)
def _dct_f64(n: int) -> torch.Tensor:
    # Built once in float64 on CPU, then sliced / cast / moved per use below.
    i = torch.arange(n, dtype=torch.float64).unsqueeze(1)  # frequency
    j = torch.arange(n, dtype=torch.float64).unsqueeze(0)  # sample
    d = torch.cos(math.pi * (2 * j + 1) * i / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


@functools.lru_cache(maxsize=128)
def dct_rows(n: int, r: int, dtype: torch.dtype, device: torch.device, start: int = 0) -> torch.Tensor:
    """Rows start .. start+r-1 of the orthonormal DCT-II matrix of size ``n`` (r x n), cached."""
    return _dct_f64(n)[start:start + r].to(dtype=dtype, device=device).contiguous()


@functools.lru_cache(maxsize=128)
def band_mask(rh: int, rw: int, k: int, dtype: torch.dtype, device: torch.device,
              h0: int = 0, w0: int = 0, kept: bool = False) -> torch.Tensor:
    """(rh x rw) mask over the frequencies (h0 + i, w0 + j): 1 where 1 <= sum <= k (the removed
    band), or with ``kept`` 1 where sum > k (the kept high corner, DC aside)."""
    s = torch.arange(rh).unsqueeze(1) + torch.arange(rw).unsqueeze(0) + h0 + w0
    keep = (s > k) if kept else (s >= 1) & (s <= k)
    return keep.to(dtype=dtype, device=device)


def plan(k: int, h: int, w: int) -> tuple[bool, int, int, int, int]:
    """How to filter an H x W image with cutoff k >= 1: (kept, h0, w0, rh, rw).

    kept=False: subtract the removed band, DCT rows 0..rh-1 along H and 0..rw-1 along W.
    kept=True (when the kept high corner i + j > k is the smaller one, large k): rebuild the
    image from its mean (the DC term) plus that corner, DCT rows h0..h0+rh-1 and w0..w0+rw-1
    (rh or rw may be 0: only the mean is left). Rebuilding also avoids the cancellation of
    x - (almost all of x).
    """
    rh, rw = rank(k, h), rank(k, w)
    h0, w0 = max(0, k - w + 2), max(0, k - h + 2)
    if (h - h0) * (w - w0) < rh * rw:
        return True, h0, w0, h - h0, w - w0
    return False, 0, 0, rh, rw


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
        s = x.to(wd).contiguous()  # a fresh copy (dtype differs): ours to overwrite
        return subtract_lowpass_(s, k).to(x.dtype)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _apply(x, k, out)
    return out


def _apply(s: torch.Tensor, k: int, out: torch.Tensor) -> None:
    """out <- highpass(s, k) over the last two dims (out contiguous, s's dtype; may alias s).

    Small k: subtract the removed band, s - Dh^T (M * (Dh s Dw^T)) Dw. Large k (the removed band
    bigger than what is kept): rebuild from the kept part instead, the DC term (the image mean)
    plus the high corner i + j > k, which lives in rows >= k - W + 2 and columns >= k - H + 2.
    Same cost class either way, and no cancellation when nearly everything is removed.
    """
    h, w = s.shape[-2:]
    kept, h0, w0, rh, rw = plan(k, h, w)
    if kept:
        _rebuild_kept(s, k, out, h0, w0)
        return
    dh = dct_rows(h, rh, s.dtype, s.device)
    dw = dct_rows(w, rw, s.dtype, s.device)
    mask = band_mask(rh, rw, k, s.dtype, s.device)
    rows = s.reshape(-1, w)                                   # (N*H, W); copies only if strided
    u = _project(rows, dh, dw, mask, h)
    flat_out = out.view(-1, w)
    if out.data_ptr() == s.data_ptr():
        flat_out.addmm_(u, dw, alpha=-1.0)                    # s - u Dw, in place
    else:
        torch.addmm(rows, u, dw, alpha=-1.0, out=flat_out)    # one read of s, one write of out


def _project(rows, dh, dw, mask, h):
    """Dh^T (mask * (Dh S Dw^T)) per image, as (N*H, rw) rows."""
    t = (rows @ dw.T).view(-1, h, dw.shape[0])               # (N, H, rw): project columns
    c = torch.matmul(dh, t)                                   # (N, rh, rw): project rows
    c.mul_(mask)
    return torch.matmul(dh.T, c).view(-1, dw.shape[0])        # (N*H, rw)


def _rebuild_kept(s, k, out, h0, w0):
    h, w = s.shape[-2:]
    mean = s.reshape(-1, h * w).mean(dim=1)                   # the DC term, before out is written
    n = mean.shape[0]
    if h0 < h and w0 < w:
        dh = dct_rows(h, h - h0, s.dtype, s.device, h0)
        dw = dct_rows(w, w - w0, s.dtype, s.device, w0)
        mask = band_mask(h - h0, w - w0, k, s.dtype, s.device, h0, w0, kept=True)
        u = _project(s.reshape(-1, w), dh, dw, mask, h)
        torch.mm(u, dw, out=out.view(-1, w))
        out.view(n, h * w).add_(mean.unsqueeze(1))
    else:
        out.view(n, h * w).copy_(mean.unsqueeze(1).expand(n, h * w))
