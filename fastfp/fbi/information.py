"""Empirical entropy, mutual information and Rajski distance between symbol sequences (nats).

For two sequences a, b of L symbols in 0..k (K = k + 1 values), with joint counts c(u, v):

    H(a, b) = log L - (1/L) sum_{u,v} c(u, v) log c(u, v)
    I(a; b) = H(a) + H(b) - H(a, b)          (== sklearn.metrics.mutual_info_score)
    D(a, b) = 1 - I(a; b) / H(a, b),  0 when H(a, b) = 0           (paper eq. 21)

``pairwise_rajski`` computes all m x n pairs at once: the joint (K x K) histograms of every pair
are one matrix product of one-hot encodings, ``onehot(A) (mK x L) @ onehot(B)^T (L x nK)``,
whose entries are exact integer counts (bf16 inputs hold 0/1 exactly, the products accumulate in
fp32, and a count <= 256 is exact in a bf16 output, <= 2^24 in fp32). On this CPU that product
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


def _counts(a: torch.Tensor, b: torch.Tensor, K: int) -> torch.Tensor:
    """Joint counts (..., K, K) of two broadcast symbol tensors (..., L), as float64."""
    codes = a.long() * K + b.long()
    out = torch.zeros(codes.shape[:-1] + (K * K,), dtype=torch.float64, device=codes.device)
    out.scatter_add_(-1, codes, torch.ones(codes.shape, dtype=torch.float64, device=codes.device))
    return out.view(codes.shape[:-1] + (K, K))


def _entropy_from_counts(counts: torch.Tensor, L: int, dims) -> torch.Tensor:
    """H = log L - (1/L) sum c log c over ``dims`` (0 * log 0 = 0), float64, exact 0 when constant."""
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
        raise ValueError(f"b: has {tb.shape[-1]} symbols per sequence, but a has {ta.shape[-1]} (mismatched lengths)")
    if ta.shape[-1] == 0:
        raise ValueError("a: empty sequences (L = 0)")
    if ta.device != tb.device:
        raise ValueError(f"b: on {tb.device}, but a is on {ta.device}")
    try:
        shape = np.broadcast_shapes(tuple(ta.shape), tuple(tb.shape))
    except ValueError as exc:
        raise ValueError(f"b: shape {tuple(tb.shape)} does not broadcast with a {tuple(ta.shape)}") from exc
    return kind, ta.expand(shape), tb.expand(shape), arrays.num_symbols(k, ta, tb)


def _terms(ta, tb, K):
    L = ta.shape[-1]
    c = _counts(ta, tb, K)
    h_ab = _entropy_from_counts(c, L, (-2, -1))
    h_a = _entropy_from_counts(c.sum(-1), L, (-1,))
    h_b = _entropy_from_counts(c.sum(-2), L, (-1,))
    mi = (h_a + h_b - h_ab).clamp_min(0.0)
    return h_a, h_b, h_ab, mi


def entropy(a, k: int | None = None):
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


def mutual_information(a, b, k: int | None = None):
    """Empirical mutual information I(a; b) in nats, like ``sklearn.metrics.mutual_info_score``.

    a, b: (..., L) symbol sequences in 0..k (broadcast against each other) -> (...) float64.
    """
    if backend.forced() == "reference":
        return _reference_elementwise("mutual_information", a, b, k)
    kind, ta, tb, K = _pair(a, b, k)
    mi = _terms(ta, tb, K)[3]
    backend.record("fbi.mutual_information", "torch")
    return arrays.restore(mi, kind)


def rajski_distance(a, b, k: int | None = None):
    """Rajski distance 1 - I(a; b) / H(a, b) in [0, 1] (0 when H(a, b) = 0): (..., L) -> (...)."""
    if backend.forced() == "reference":
        return _reference_elementwise("rajski_distance", a, b, k)
    kind, ta, tb, K = _pair(a, b, k)
    _, _, h_ab, mi = _terms(ta, tb, K)
    d = torch.where(h_ab > 0, 1.0 - mi / torch.where(h_ab > 0, h_ab, torch.ones_like(h_ab)), torch.zeros_like(h_ab))
    backend.record("fbi.rajski_distance", "torch")
    return arrays.restore(d.clamp(0.0, 1.0), kind)


def _reference_elementwise(name, a, b, k):
    from fastfp.reference import fbi as ref

    kind, ta, tb, _ = _pair(a, b, k)
    fn = getattr(ref, name)
    flat_a = ta.reshape(-1, ta.shape[-1]).cpu().tolist()
    flat_b = tb.reshape(-1, tb.shape[-1]).cpu().tolist()
    vals = torch.tensor([fn(x, y) for x, y in zip(flat_a, flat_b)], dtype=torch.float64)
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


# Below this many (pair x max(L, K^2)) entries, a scatter of combined codes beats the blocked matmul:
# tiny multi-threaded GEMMs cost more in thread wake-ups (much more on a busy machine) than they save.
SMALL = 1 << 21


def _pair_sums(A: torch.Tensor, B: torch.Tensor, K: int, symmetric: bool) -> torch.Tensor:
    """S[i, j] = sum_{u,v} c_ij(u, v) log c_ij(u, v), float64, with c_ij the joint counts."""
    m, L = A.shape
    n = B.shape[0]
    if m * n * max(L, K * K) <= SMALL:
        c = _counts(A.unsqueeze(1), B.unsqueeze(0), K)  # (m, n, K, K) by scatter on u * K + v
        return torch.xlogy(c, c).sum((-2, -1))
    cuda = A.device.type == "cuda"
    # 0/1 inputs are exact in every float format; the output must hold counts up to L exactly.
    if cuda:
        dtype = torch.float16 if L <= 2048 else torch.float32
        mb, nb = max(1, min(m, 2 ** 27 // (K * K * max(n, 1)))), n
    else:
        # bf16 pays off on big problems only: oneDNN compiles a kernel per new shape
        dtype = torch.bfloat16 if L <= 256 and m * n >= 1 << 16 else torch.float32
        mb, nb = 16, 256  # a (16K x 256K) block of counts stays in cache
    OA = _onehot_rows(A, K, dtype)
    OBt = _onehot_rows(B, K, dtype).t().contiguous()
    S = torch.empty(m, n, dtype=torch.float64, device=A.device)
    for i in range(0, m, mb):
        ie = min(i + mb, m)
        j0 = i if symmetric else 0
        for j in range(j0, n, nb):
            je = min(j + nb, n)
            c = (OA[i * K:ie * K] @ OBt[:, j * K:je * K]).to(torch.float64)
            t = c.clamp_min(1.0).log_().mul_(c)
            S[i:ie, j:je] = t.view(ie - i, K, je - j, K).sum((1, 3))
    if symmetric:
        S = torch.triu(S) + torch.triu(S, 1).t()
    return S


def _marginal_entropy(X: torch.Tensor, K: int) -> torch.Tensor:
    c = torch.zeros(X.shape[0], K, dtype=torch.float64, device=X.device)
    c.scatter_add_(1, X.long(), torch.ones(X.shape, dtype=torch.float64, device=X.device))
    return _entropy_from_counts(c, X.shape[1], (-1,))


def _pairwise_torch(A: torch.Tensor, B: torch.Tensor, K: int, symmetric: bool) -> torch.Tensor:
    L = A.shape[1]
    h_a = _marginal_entropy(A, K)
    h_b = h_a if symmetric else _marginal_entropy(B, K)
    S = _pair_sums(A, B, K, symmetric)
    h_ab = (math.log(L) - S / L).clamp_min(0.0)
    # H(a, b) = 0 exactly iff both sequences are constant: never trust round-off there.
    zero = (h_a == 0).unsqueeze(1) & (h_b == 0).unsqueeze(0)
    h_ab = torch.where(zero, torch.zeros_like(h_ab), h_ab)
    mi = (h_a.unsqueeze(1) + h_b.unsqueeze(0) - h_ab).clamp_min(0.0)
    safe = torch.where(h_ab > 0, h_ab, torch.ones_like(h_ab))
    d = torch.where(h_ab > 0, 1.0 - mi / safe, torch.zeros_like(h_ab))
    return d.clamp_(0.0, 1.0)


def pairwise_rajski(A, B=None, k: int | None = None):
    """Rajski distances of every pair of rows: A (m, L), B (n, L) -> (m, n) float64.

    ``B=None`` compares A with itself (symmetric, zero diagonal, half the work). Symbols in 0..k.
    Same array kind out as A (numpy / torch / cupy); CUDA tensors stay on their device.
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
        raise ValueError(f"B: has L = {tB.shape[1]} symbols per row, but A has L = {tA.shape[1]} (mismatched lengths)")
    if tA.shape[1] == 0:
        raise ValueError("A: empty rows (L = 0)")
    if tA.device != tB.device:
        raise ValueError(f"B: on {tB.device}, but A is on {tA.device}")
    if tA.shape[1] > 2 ** 24:
        raise ValueError(f"A: L = {tA.shape[1]} exceeds 2^24, where float32 counts stop being exact")
    K = arrays.num_symbols(k, tA, tB)
    if backend.forced() == "reference":
        from fastfp.reference import fbi as ref

        d = torch.tensor(ref.pairwise_rajski(tA.cpu().tolist(), None if symmetric else tB.cpu().tolist()),
                         dtype=torch.float64).reshape(tA.shape[0], tB.shape[0]).to(tA.device)
        backend.record("fbi.pairwise_rajski", "reference")
        return arrays.restore(d, kind)
    if tA.shape[0] == 0 or tB.shape[0] == 0:
        d = torch.zeros(tA.shape[0], tB.shape[0], dtype=torch.float64, device=tA.device)
    else:
        d = _pairwise_torch(tA, tB, K, symmetric)
    backend.record("fbi.pairwise_rajski", "torch")
    return arrays.restore(d, kind)
