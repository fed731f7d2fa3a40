"""Empirical entropy, mutual information and Rajski distance between symbol sequences (nats).

For two sequences a, b of L symbols in 0..k (K = k + 1 values), with joint counts c(u, v):

    H(a, b) = log L - (1/L) sum_{u,v} c(u, v) log c(u, v)
    I(a; b) = H(a) + H(b) - H(a, b)          (== sklearn.metrics.mutual_info_score)
    D(a, b) = 1 - I(a; b) / H(a, b),  0 when H(a, b) = 0           (paper eq. 21)

``pairwise_rajski`` computes all m x n pairs at once: the joint (K x K) histograms of every pair
are one matrix product of one-hot encodings, ``onehot(A) (mK x L) @ onehot(B)^T (L x nK)``,
whose entries are exact integer counts (one-hot inputs hold 0/1 exactly and fp32 accumulates
counts <= 2^24 exactly). On this CPU that product
plus one fp64 pass of c log c beats a bincount on combined codes (u * K + v) by about 20x (see
bench/bench_fbi.py), so the matmul form is the one kept; it is computed block by block so that
each block of counts stays in cache.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fastfp import backend

from . import arrays
from .arrays import Array


def _counts(a: torch.Tensor, b: torch.Tensor, K: int) -> torch.Tensor:
    """Joint counts (..., K, K) of two broadcast symbol tensors (..., L), as float64."""
    codes = a.long() * K + b.long()
    out = torch.zeros(codes.shape[:-1] + (K * K,), dtype=torch.float64, device=codes.device)
    out.scatter_add_(-1, codes, torch.ones(codes.shape, dtype=torch.float64, device=codes.device))
    return out.view(codes.shape[:-1] + (K, K))


def _entropy_from_counts(counts: torch.Tensor, L: int, dims) -> torch.Tensor:
    """H = log L - (1/L) sum c log c over ``dims`` (0 log 0 = 0), float64, exact 0 if constant."""
    s = torch.xlogy(counts, counts).sum(dims)
    h = math.log(L) - s / L
    single = (counts == L).flatten(start_dim=counts.dim() - len(dims)).any(-1)
    return torch.where(single, torch.zeros_like(h), h.clamp_min(0.0))


def _pair(a, b, k):
    kind = arrays.kind_of(a)
    k = arrays.check_k(k)
    ta = arrays.symbols("a", a, k)
    tb = arrays.symbols("b", b, k)
    if ta.shape[-1] != tb.shape[-1]:
        raise ValueError(
            f"b: has {tb.shape[-1]} symbols per sequence, but a has {ta.shape[-1]} "
            "(mismatched lengths)"
        )
    if ta.shape[-1] == 0:
        raise ValueError("a: empty sequences (L = 0)")
    if ta.device != tb.device:
        raise ValueError(f"b: on {tb.device}, but a is on {ta.device}")
    try:
        shape = np.broadcast_shapes(tuple(ta.shape), tuple(tb.shape))
    except ValueError as exc:
        raise ValueError(
            f"b: shape {tuple(tb.shape)} does not broadcast with a {tuple(ta.shape)}"
        ) from exc
    return kind, ta.expand(shape), tb.expand(shape), arrays.num_symbols(k, ta, tb)


def _terms(ta, tb, K):
    L = ta.shape[-1]
    c = _counts(ta, tb, K)
    h_ab = _entropy_from_counts(c, L, (-2, -1))
    h_a = _entropy_from_counts(c.sum(-1), L, (-1,))
    h_b = _entropy_from_counts(c.sum(-2), L, (-1,))
    mi = (h_a + h_b - h_ab).clamp_min(0.0)
    return h_a, h_b, h_ab, mi


def entropy(a: Array, k: int | None = None) -> Array:
    """Empirical entropy (nats) of each sequence: a (..., L) -> (...) float64."""
    kind = arrays.kind_of(a)
    ta = arrays.symbols("a", a, arrays.check_k(k))
    if ta.shape[-1] == 0:
        raise ValueError("a: empty sequences (L = 0)")
    K = arrays.num_symbols(k, ta)
    c = torch.zeros(ta.shape[:-1] + (K,), dtype=torch.float64, device=ta.device)
    c.scatter_add_(-1, ta.long(), torch.ones(ta.shape, dtype=torch.float64, device=ta.device))
    backend.record("fbi.entropy", "torch")
    return arrays.restore(_entropy_from_counts(c, ta.shape[-1], (-1,)), kind)


def mutual_information(a: Array, b: Array, k: int | None = None) -> Array:
    """Empirical mutual information I(a; b) in nats, like ``sklearn.metrics.mutual_info_score``.

    a, b: (..., L) symbol sequences in 0..k (broadcast against each other) -> (...) float64.
    """
    if backend.forced() == "reference":
        return _reference_elementwise("mutual_information", a, b, k)
    kind, ta, tb, K = _pair(a, b, k)
    mi = _terms(ta, tb, K)[3]
    backend.record("fbi.mutual_information", "torch")
    return arrays.restore(mi, kind)


def rajski_distance(a: Array, b: Array, k: int | None = None) -> Array:
    """Rajski distance 1 - I(a; b) / H(a, b) in [0, 1] (0 when H(a, b) = 0): (..., L) -> (...)."""
    if backend.forced() == "reference":
        return _reference_elementwise("rajski_distance", a, b, k)
    kind, ta, tb, K = _pair(a, b, k)
    _, _, h_ab, mi = _terms(ta, tb, K)
    d = torch.where(
        h_ab > 0,
        1.0 - mi / torch.where(h_ab > 0, h_ab, torch.ones_like(h_ab)),
        torch.zeros_like(h_ab),
    )
    backend.record("fbi.rajski_distance", "torch")
    return arrays.restore(d.clamp(0.0, 1.0), kind)


def _reference_elementwise(name, a, b, k):
    from fastfp.reference import fbi as ref

    kind, ta, tb, _ = _pair(a, b, k)
    fn = getattr(ref, name)
    flat_a = ta.reshape(-1, ta.shape[-1]).cpu().tolist()
    flat_b = tb.reshape(-1, tb.shape[-1]).cpu().tolist()
    vals = torch.tensor(
        [fn(x, y) for x, y in zip(flat_a, flat_b, strict=True)], dtype=torch.float64
    )
    backend.record(f"fbi.{name}", "reference")
    return arrays.restore(vals.reshape(ta.shape[:-1]).to(ta.device), kind)


# ----------------------------------------------------------------------------------------------
# all pairs


def _onehot_rows(X: torch.Tensor, K: int, dtype) -> torch.Tensor:
    """(m, L) symbols -> (m*K, L) one-hot rows: row i*K + u marks where X[i] == u."""
    m, L = X.shape
    out = torch.zeros(m, K, L, dtype=dtype, device=X.device)
    out.scatter_(1, X.long().unsqueeze(1), 1)
    return out.view(m * K, L)


# Below this many (pair x max(L, K^2)) entries, the small-problem path beats the blocked matmul:
# tiny multi-threaded GEMMs cost more in thread wake-ups (more on a busy machine) than they save.
SMALL = 1 << 21


def _block_entropy(c: torch.Tensor, L: int, rows: int, cols: int, K: int) -> torch.Tensor:
    """Joint entropies (rows, cols) float64 from a block of counts (rows*K, cols*K).

    H = -(1/L) sum c log(c / L), with log(c / L) = log1p((c - L) / L): c - L is exact, so every
    term carries a relative error of a few fp32 ulps and, all terms having the same sign, so does
    H. D = 1 - I / H then errs by < 1e-6 even for near-constant pairs (where log L - (1/L) sum
    c log c would cancel catastrophically in fp32), at half the cost of fp64 logs.
    """
    c = c.float()
    t = c.clamp_min(1.0)  # c = 0 contributes 0 whatever the log
    t.sub_(L).mul_(1.0 / L).log1p_().mul_(c)
    return t.view(rows, K, cols, K).sum((1, 3), dtype=torch.float64).mul_(-1.0 / L)


_compiled_entropy = None


def _cuda_block_entropy(c, L, rows, cols, K):
    """The same, fused into one kernel by torch.compile on CUDA (eager if compiling fails)."""
    global _compiled_entropy
    if _compiled_entropy is None:
        try:
            _compiled_entropy = torch.compile(_block_entropy, dynamic=True)
        except Exception:  # no working compiler: eager is correct, only slower
            _compiled_entropy = _block_entropy
    try:
        return _compiled_entropy(c, L, rows, cols, K)
    except Exception:
        _compiled_entropy = _block_entropy
        return _block_entropy(c, L, rows, cols, K)


def _joint_entropies(
    A: torch.Tensor, B: torch.Tensor, K: int, symmetric: bool, exact: bool
) -> torch.Tensor:
    """H(a_i, b_j) for every pair of rows, float64 (m, n)."""
    m, L = A.shape
    n = B.shape[0]
    if exact or m * n * max(L, K * K) <= SMALL:
        c = _counts(A.unsqueeze(1), B.unsqueeze(0), K)  # (m, n, K, K) by scatter on u * K + v
        H = (math.log(L) - torch.xlogy(c, c).sum((-2, -1)) / L).clamp_min(0.0)
        return torch.triu(H) + torch.triu(H, 1).t() if symmetric else H
    if A.device.type == "cuda":
        # 0/1 inputs are exact in fp16; a count <= 2048 is exact in an fp16 output, <= 2^24 in fp32
        dtype = torch.float16 if L <= 2048 else torch.float32
        OA = _onehot_rows(A, K, dtype)
        OBt = _onehot_rows(B, K, dtype).t().contiguous()
        H = torch.empty(m, n, dtype=torch.float64, device=A.device)
        mb = max(1, min(m, (1 << 28) // (K * K * n)))  # up to 1 GiB of fp32 counts per block
        for i in range(0, m, mb):
            ie = min(i + mb, m)
            H[i:ie] = _cuda_block_entropy(OA[i * K : ie * K] @ OBt, L, ie - i, n, K)
        return H
    # CPU: fp32 one-hot (counts <= 2^24 exact; this CPU has no fast bf16 GEMM), row blocks of
    # up to 2^24 counts against all columns: large GEMMs that torch spreads over its own threads.
    OA = _onehot_rows(A, K, torch.float32)
    OBt = _onehot_rows(B, K, torch.float32).t().contiguous()
    H = torch.zeros(m, n, dtype=torch.float64)
    mb = max(1, min(m, (1 << 24) // (K * K * n)))
    for i in range(0, m, mb):
        ie = min(i + mb, m)
        j = i if symmetric else 0  # symmetric: the upper triangle only
        H[i:ie, j:] = _block_entropy(OA[i * K : ie * K] @ OBt[:, j * K :], L, ie - i, n - j, K)
    if symmetric:
        H = torch.triu(H) + torch.triu(H, 1).t()
    return H.clamp_min_(0.0)


def _marginal_entropy(X: torch.Tensor, K: int) -> torch.Tensor:
    c = torch.zeros(X.shape[0], K, dtype=torch.float64, device=X.device)
    c.scatter_add_(1, X.long(), torch.ones(X.shape, dtype=torch.float64, device=X.device))
    return _entropy_from_counts(c, X.shape[1], (-1,))


def _pairwise_torch(
    A: torch.Tensor, B: torch.Tensor, K: int, symmetric: bool, exact: bool
) -> torch.Tensor:
    A.shape[1]
    h_a = _marginal_entropy(A, K)
    h_b = h_a if symmetric else _marginal_entropy(B, K)
    h_ab = _joint_entropies(A, B, K, symmetric, exact)
    # H(a, b) = 0 exactly iff both sequences are constant: never trust round-off there.
    zero = (h_a == 0).unsqueeze(1) & (h_b == 0).unsqueeze(0)
    h_ab = torch.where(zero, torch.zeros_like(h_ab), h_ab)
    mi = (h_a.unsqueeze(1) + h_b.unsqueeze(0) - h_ab).clamp_min(0.0)
    safe = torch.where(h_ab > 0, h_ab, torch.ones_like(h_ab))
    d = torch.where(h_ab > 0, 1.0 - mi / safe, torch.zeros_like(h_ab)).clamp_(0.0, 1.0)
    if symmetric:
        d.fill_diagonal_(0.0)  # D(a, a) = 0 by definition, whatever the round-off
    return d


def pairwise_rajski(
    A: Array, B: Array | None = None, k: int | None = None, *, exact: bool = False
) -> Array:
    """Rajski distances of every pair of rows: A (m, L), B (n, L) -> (m, n) float64.

    ``B=None`` compares A with itself (symmetric, zero diagonal, half the work). Symbols in 0..k.
    Same array kind out as A (numpy / torch / cupy); CUDA tensors stay on their device.
    exact: always take the small-problem path (fp64 counts and entropies), where each distance
    depends only on its pair, so batching rows differently never changes a bit; by default large
    problems take the blocked matmul (fp32 entropies, within 1e-6).
    """
    kind = arrays.kind_of(A)
    k = arrays.check_k(k)
    tA = arrays.symbols("A", A, k, min_dim=2)
    if tA.dim() != 2:
        raise ValueError(f"A: expected (m, L) symbols, got shape {tuple(tA.shape)}")
    symmetric = B is None
    tB = tA if symmetric else arrays.symbols("B", B, k, min_dim=2)
    if tB.dim() != 2:
        raise ValueError(f"B: expected (n, L) symbols, got shape {tuple(tB.shape)}")
    if tA.shape[1] != tB.shape[1]:
        raise ValueError(
            f"B: has L = {tB.shape[1]} symbols per row, but A has L = {tA.shape[1]} "
            "(mismatched lengths)"
        )
    if tA.shape[1] == 0:
        raise ValueError("A: empty rows (L = 0)")
    if tA.device != tB.device:
        raise ValueError(f"B: on {tB.device}, but A is on {tA.device}")
    if tA.shape[1] > 2**24:
        raise ValueError(
            f"A: L = {tA.shape[1]} exceeds 2^24, where float32 counts stop being exact"
        )
    K = arrays.num_symbols(k, tA, tB)
    if backend.forced() == "reference":
        from fastfp.reference import fbi as ref

        d = (
            torch.tensor(
                ref.pairwise_rajski(tA.cpu().tolist(), None if symmetric else tB.cpu().tolist()),
                dtype=torch.float64,
            )
            .reshape(tA.shape[0], tB.shape[0])
            .to(tA.device)
        )
        backend.record("fbi.pairwise_rajski", "reference")
        return arrays.restore(d, kind)
    if tA.shape[0] == 0 or tB.shape[0] == 0:
        d = torch.zeros(tA.shape[0], tB.shape[0], dtype=torch.float64, device=tA.device)
    else:
        d = _pairwise_torch(tA, tB, K, symmetric, bool(exact))
    backend.record("fbi.pairwise_rajski", "torch")
    return arrays.restore(d, kind)
