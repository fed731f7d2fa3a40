"""Low-rank DCT high-pass in plain torch: the CPU fast path (and the CUDA path without Triton).

Only the frequencies with ``1 <= i + j <= k`` are removed, and they all lie in the (k+1) x (k+1)
top-left corner of the spectrum, so with ``Dh`` / ``Dw`` the first ``k+1`` rows of the orthonormal
DCT-II matrices (clamped to H / W rows):

    highpass(x) = x - Dh^T (M * (Dh x Dw^T)) Dw,     M[i, j] = 1 iff 1 <= i + j <= k

which is exact (the DCT is orthonormal) and costs O(k H W) instead of O(H W (H + W)).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Hashable
from typing import NamedTuple

import torch

from .reference.dct import dct_matrix

# The fast paths build only the DCT rows they use, cached per (size, rows, dtype, device). Bounds:
# one axis' rows may hold MAX_DCT_ELEMENTS elements (rows * n: 64 MiB in float32; a larger image
# is rejected by the ops before any work), and the cache keeps CACHE_ENTRIES tensors and
# CACHE_BYTES bytes at most (least recently used evicted first).
MAX_DCT_ELEMENTS = 2**24
CACHE_ENTRIES = 64
CACHE_BYTES = 2**28

_cache: collections.OrderedDict[Hashable, torch.Tensor] = collections.OrderedDict()
_pinned: set[Hashable] = set()
_lock = threading.Lock()


def rank(k: int, n: int) -> int:
    """How many DCT rows of an axis of length ``n`` the mask touches (k+1, clamped to n)."""
    return min(k + 1, n)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _cached(key: Hashable, device: torch.device, build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The cached tensor of ``key`` (built on first use).

    CUDA-graph safety: after the first call the hot path copies nothing host -> device and never
    syncs (a lookup, no .item()), so the engine can capture a step that uses these tensors. A
    captured graph keeps reading their memory at every replay without coming back here, so an
    entry used while a capture is under way is pinned: never evicted, never freed under the graph.
    """
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    with _lock:
        t = _cache.get(key)
        if t is not None:
            _cache.move_to_end(key)
            if capturing:
                _pinned.add(key)
            return t
    t = build()  # outside the lock: O(rows * n) work
    with _lock:
        if key not in _cache:
            _cache[key] = t
            if capturing:
                _pinned.add(key)
            _evict(keep=key)
        return _cache.get(key, t)


def _evict(keep: Hashable) -> None:
    used = sum(_nbytes(t) for t in _cache.values())
    for key in list(_cache):
        if len(_cache) <= CACHE_ENTRIES and used <= CACHE_BYTES:
            return
        if key != keep and key not in _pinned:
            used -= _nbytes(_cache.pop(key))


class CacheInfo(NamedTuple):
    entries: int
    bytes: int
    pinned: int  # entries a CUDA-graph capture used: never evicted


def cache_info() -> CacheInfo:
    """What the DCT-row / mask cache holds."""
    with _lock:
        return CacheInfo(len(_cache), sum(_nbytes(t) for t in _cache.values()),
                         sum(key in _cache for key in _pinned))


def _build_on(device: torch.device) -> torch.device:
    # CUDA: built on the device itself, so even a first call inside a graph capture copies
    # nothing from the host; elsewhere on CPU, then moved (MPS has no float64)
    return device if device.type == "cuda" else torch.device("cpu")


def cache_clear() -> None:
    """Drop every cached tensor but those pinned by a CUDA-graph capture."""
    with _lock:
        for key in [key for key in _cache if key not in _pinned]:
            del _cache[key]


def dct_rows(n: int, r: int, dtype: torch.dtype, device: torch.device,
             start: int = 0) -> torch.Tensor:
    """Rows start .. start+r-1 of the orthonormal DCT-II matrix of size ``n`` (r x n), cached."""
    device = torch.device(device)
    return _cached(("dct", n, r, start, dtype, device), device,
                   lambda: dct_matrix(n, rows=r, start=start, device=_build_on(device))
                   .to(dtype=dtype, device=device))


def band_mask(rh: int, rw: int, k: int, dtype: torch.dtype, device: torch.device,
              h0: int = 0, w0: int = 0, kept: bool = False) -> torch.Tensor:
    """(rh x rw) mask over the frequencies (h0 + i, w0 + j): 1 where 1 <= sum <= k (the removed
    band), or with ``kept`` 1 where sum > k (the kept high corner, DC aside); cached."""
    device = torch.device(device)

    def build() -> torch.Tensor:
        on = _build_on(device)
        s = (torch.arange(rh, device=on).unsqueeze(1) + torch.arange(rw, device=on).unsqueeze(0)
             + h0 + w0)
        keep = (s > k) if kept else (s >= 1) & (s <= k)
        return keep.to(dtype=dtype, device=device)

    return _cached(("mask", rh, rw, k, dtype, device, h0, w0, kept), device, build)


def dct_elements(k: int, h: int, w: int) -> int:
    """The most DCT-matrix elements (rows * n) one axis needs to filter H x W at cutoff k."""
    if k == 0:
        return 0
    rh, rw = plan(k, h, w)[3:]
    return max(rh * h, rw * w)


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
