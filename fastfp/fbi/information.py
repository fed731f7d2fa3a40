"""Empirical entropy, mutual information and Rajski distance between symbol sequences (nats).

For two sequences a, b of L symbols in 0..k (K = k + 1 values), with joint counts c(u, v):

    H(a, b) = log L - (1/L) sum_{u,v} c(u, v) log c(u, v)
    I(a; b) = H(a) + H(b) - H(a, b)          (== sklearn.metrics.mutual_info_score)
    D(a, b) = 1 - I(a; b) / H(a, b),  0 when H(a, b) = 0           (paper eq. 21)

The all-pairs functions serve three distances (``distance=``, :data:`DISTANCES`):

- ``"rajski"``: D above, in [0, 1], smaller is closer (the paper's text, eq. 21);
- ``"mi"``: I(a; b) itself in nats, LARGER is closer (the default of the FBI authors'
  ``unknown/detection.py``, ``--distance mutual_information``; they compute it in bits, a
  constant factor that changes no ranking);
- ``"mi_min"``: 1 - clip(I / min(H(a), H(b)), 0, 1), smaller is closer, +inf when
  min(H(a), H(b)) = 0 (the authors' ``mutual_distance``, ``utils/distances.py``
  ``score_mutual_information(..., to_distance=True)``: there 0 / 0 is NaN, mapped to inf).

All three come from the same three entropies, so one count serves every distance.

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

from fastfp import _validate, backend

from . import arrays
from .arrays import Array

# the distances the all-pairs functions serve; "mi" is the only one where larger is closer
DISTANCES = ("rajski", "mi", "mi_min")


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
    """Empirical entropy (nats) of each sequence: a (..., L) -> (...) float64.

    Counts by one bincount of (row, symbol) codes when the alphabet is small, else (labels of
    1,000 classes, say) by run lengths of each sorted row, so memory stays O(rows x L)."""
    kind = arrays.kind_of(a)
    ta = arrays.symbols("a", a, arrays.check_k(k))
    L = ta.shape[-1]
    if L == 0:
        raise ValueError("a: empty sequences (L = 0)")
    K = arrays.num_symbols(k, ta)
    rows = ta.reshape(-1, L).long()
    base = torch.arange(rows.shape[0], device=ta.device).unsqueeze(1)
    if K <= L:
        codes = base * K + rows
        width = K
    else:  # run ids of each sorted row: a new run wherever the sorted value changes
        srt = rows.sort(-1).values
        runs = torch.cat([torch.zeros_like(srt[:, :1]), (srt[:, 1:] != srt[:, :-1]).long()], 1)
        codes = base * L + runs.cumsum(1)
        width = L
    c = torch.bincount(codes.reshape(-1), minlength=rows.shape[0] * width)
    h = _entropy_from_counts(c.view(rows.shape[0], width).double(), L, (-1,))
    backend.record("fbi.entropy", "torch")
    return arrays.restore(h.reshape(ta.shape[:-1]), kind)


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


def _clip(x, lo, hi, xp):
    """clip for numpy (through maximum / minimum: np.clip's dispatch costs more than the work on
    the small arrays of one detection) or torch."""
    if xp is not np:
        return xp.clip(x, lo, hi)
    x = np.maximum(x, lo)
    return x if hi is None else np.minimum(x, hi)


def _sum_xlogx(c, xp):
    """sum over the last axis of c log c (0 log 0 = 0), added in a fixed order: each result
    depends only on its own counts, never on the shape of the batch around it."""
    t = c * xp.log(_clip(c, 1, None, xp))
    s = t[..., 0]
    for j in range(1, c.shape[-1]):
        s = s + t[..., j]
    return s


def _entropy_exact(c, L: int, xp):
    """Entropy (nats, float64) from exact counts (..., C) summing to L; exactly 0 if constant."""
    c = xp.asarray(c, dtype=xp.float64)
    h = _clip(math.log(L) - _sum_xlogx(c, xp) / L, 0.0, None, xp)
    return xp.where((c == L).any(-1), 0.0, h)


def _exact_terms(A, B, K: int, xp):
    """H(a), H(b), H(a, b) of every pair of rows of A (b, m, L) and B (b, n, L), float64, in
    numpy on CPU (single-threaded: no parallel-region stalls on a busy machine) or torch on GPU.

    One contingency count for all pairs: c(u, .) = [A == u] @ onehot(B)^T, a batched fp32 GEMM
    whose entries are exact integers (<= L <= 2^24); c(0, .) is the rest of B's counts. A is
    read K - 1 times (once for top-1), B's one-hot is small."""
    nb, m, L = A.shape
    n = B.shape[1]
    if xp is np and nb * m * n * L <= _TINY:
        return _exact_terms_bincount(A, B, K)
    f32 = xp.float32
    OB = xp.stack([xp.asarray(B == v, dtype=f32) for v in range(K)], 2)  # (b, n, K, L)
    count_b = OB.sum(-1)
    OBt = xp.swapaxes(OB.reshape(nb, n * K, L), 1, 2)
    ind = [xp.asarray(A == u, dtype=f32) for u in range(1, K)]
    rows = [x @ OBt for x in ind]  # K - 1 x (b, m, n * K)
    rest = count_b.reshape(nb, 1, n * K) - sum(rows)  # c(0, .) = B's counts - the others
    c = xp.stack([rest] + rows, 2)  # (b, m, K_a, n * K_b); K >= 2 (callers see to it)
    c = xp.moveaxis(c.reshape(nb, m, K, n, K), 3, 2).reshape(nb, m, n, K * K)
    sums = [x.sum(-1) for x in ind]
    count_a = xp.stack([L - sum(sums)] + sums, -1)
    return (
        _entropy_exact(count_a, L, xp),
        _entropy_exact(count_b, L, xp),
        _entropy_exact(c, L, xp),
    )


# pairs x L at most this: one bincount of the joint symbols beats building one-hot matrices
_TINY = 1 << 14


def _exact_terms_bincount(A, B, K: int):
    """``_exact_terms`` for a few pairs in numpy: the (K, K) table of every pair from one
    bincount of a * K + b (the same exact counts, so the same entropies to the bit)."""
    nb, m, L = A.shape
    n = B.shape[1]
    pairs = nb * m * n
    offset = (np.arange(pairs, dtype=np.intp) * (K * K)).reshape(nb, m, n, 1)
    joint = A.astype(np.intp)[:, :, None, :] * K + B[:, None, :, :] + offset
    c = np.bincount(joint.reshape(-1), minlength=pairs * K * K).reshape(nb, m, n, K, K)
    count_a = c[:, :, 0].sum(-1)  # (nb, m, K): a's marginal, from its pair with b_0
    count_b = c[:, 0].sum(-2)  # (nb, n, K)
    return (
        _entropy_exact(count_a, L, np),
        _entropy_exact(count_b, L, np),
        _entropy_exact(c.reshape(nb, m, n, K * K), L, np),
    )


def _joint_entropies(A: torch.Tensor, B: torch.Tensor, K: int, symmetric: bool) -> torch.Tensor:
    """H(a_i, b_j) for every pair of rows by the blocked matmul, float64 (m, n)."""
    m, L = A.shape
    n = B.shape[0]
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


def _distances(h_a, h_b, h_ab, xp, distance: str = "rajski"):
    """The ``distance`` (see :data:`DISTANCES`) from (..., m), (..., n), (..., m, n) entropies."""
    # H(a, b) = 0 exactly iff both sequences are constant: never trust round-off there.
    zero = (h_a == 0)[..., :, None] & (h_b == 0)[..., None, :]
    h_ab = xp.where(zero, 0.0, h_ab)
    mi = _clip(h_a[..., :, None] + h_b[..., None, :] - h_ab, 0.0, None, xp)
    if distance == "rajski":
        safe = xp.where(h_ab > 0, h_ab, 1.0)
        return _clip(xp.where(h_ab > 0, 1.0 - mi / safe, 0.0), 0.0, 1.0, xp)
    if distance == "mi":
        return mi
    # mi_min: a constant sequence has min(H) = 0, where the authors' 0 / 0 becomes inf
    h_min = xp.minimum(h_a[..., :, None], h_b[..., None, :])
    safe = xp.where(h_min > 0, h_min, 1.0)
    return xp.where(h_min > 0, 1.0 - _clip(mi / safe, 0.0, 1.0, xp), math.inf)


def _fill_diagonal(d, h_a, distance: str) -> None:
    """D(a, a) by definition, whatever the round-off: 0 (rajski), H(a) (mi), 0 or inf (mi_min)."""
    diag = d.diagonal(dim1=-2, dim2=-1)
    if distance == "rajski":
        diag.zero_()
    elif distance == "mi":
        diag.copy_(h_a)
    else:
        diag.copy_(torch.where(h_a > 0, torch.zeros_like(h_a), torch.full_like(h_a, math.inf)))


def _pairwise_torch(
    A: torch.Tensor, B: torch.Tensor, K: int, symmetric: bool, exact: bool,
    distance: str = "rajski",
) -> torch.Tensor:
    """(b, m, L) x (b, n, L) -> (b, m, n) distances."""
    nb, m, L = A.shape
    n = B.shape[1]
    if K == 1:  # one symbol: every sequence is constant, I = 0 and H = 0 everywhere
        fill = math.inf if distance == "mi_min" else 0.0
        return torch.full((nb, m, n), fill, dtype=torch.float64, device=A.device)
    if exact or nb * m * n * max(L, K * K) <= SMALL:
        cpu = A.device.type == "cpu"
        xp = np if cpu else torch
        a, b = (A.numpy(), B.numpy()) if cpu else (A, B)
        h_a, h_b, h_ab = _exact_terms(a, b, K, xp)
        if symmetric:  # the same bits for (i, j) and (j, i)
            h_ab = xp.triu(h_ab) + xp.swapaxes(xp.triu(h_ab, 1), -1, -2)
        d = _distances(h_a, h_b, h_ab, xp, distance)
        d = torch.from_numpy(np.ascontiguousarray(d)) if cpu else d
        if symmetric:
            h_diag = torch.from_numpy(np.ascontiguousarray(h_a)) if cpu else h_a
    else:
        d = torch.empty(nb, m, n, dtype=torch.float64, device=A.device)
        h_diag = torch.empty(nb, m, dtype=torch.float64, device=A.device)
        for i in range(nb):
            h_a = _marginal_entropy(A[i], K)
            h_b = h_a if symmetric else _marginal_entropy(B[i], K)
            h_diag[i] = h_a
            d[i] = _distances(
                h_a, h_b, _joint_entropies(A[i], B[i], K, symmetric), torch, distance
            )
    if symmetric:
        _fill_diagonal(d, h_diag, distance)
    return d


def pairwise_rajski(
    A: Array, B: Array | None = None, k: int | None = None, *, exact: bool = False
) -> Array:
    """Rajski distances of every pair of rows: A (m, L), B (n, L) -> (m, n) float64.

    Batched: A (b, m, L) and B (b, n, L) -> (b, m, n), the pairs of each batch entry (e.g. every
    model against one family's delegates on that family's own queries). ``B=None`` compares A
    with itself (symmetric, zero diagonal, half the work). Symbols in 0..k.
    Same array kind out as A (numpy / torch / cupy); CUDA tensors stay on their device.
    exact: always take the small-problem path (exact counts, fp64 entropies), where each distance
    depends only on its pair, so batching rows differently never changes a bit; by default large
    problems take the blocked matmul (fp32 entropies, within 1e-6).
    ``pairwise_distance(A, B, k, distance="rajski")`` is the same call.
    """
    return _pairwise(A, B, k, exact, "rajski", "fbi.pairwise_rajski")


def pairwise_distance(
    A: Array,
    B: Array | None = None,
    k: int | None = None,
    *,
    distance: str = "rajski",
    exact: bool = False,
) -> Array:
    """``pairwise_rajski`` for any of :data:`DISTANCES`: A (m, L) or (b, m, L), B (n, L) or
    (b, n, L) -> (m, n) or (b, m, n) float64, through the same fast paths.

    distance: "rajski" (1 - I / H(a, b), smaller is closer), "mi" (I in nats, LARGER is closer)
    or "mi_min" (1 - clip(I / min(H(a), H(b)), 0, 1), smaller is closer, inf when a sequence is
    constant). With ``B=None`` the diagonal is D(a, a) exactly: 0, H(a), or 0 (inf if constant).
    """
    distance = _validate.choice("distance", distance, DISTANCES)
    return _pairwise(A, B, k, exact, distance, "fbi.pairwise_distance")


def _pairwise(A, B, k, exact, distance: str, op: str):
    kind = arrays.kind_of(A)
    k = arrays.check_k(k)
    tA = arrays.symbols("A", A, k, min_dim=2)
    if tA.dim() > 3:
        raise ValueError(f"A: expected (m, L) or (b, m, L) symbols, got shape {tuple(tA.shape)}")
    symmetric = B is None
    tB = tA if symmetric else arrays.symbols("B", B, k, min_dim=2)
    if tB.dim() != tA.dim() or tB.shape[:-2] != tA.shape[:-2]:
        raise ValueError(
            f"B: expected {'(n, L)' if tA.dim() == 2 else f'({tA.shape[0]}, n, L)'} "
            f"symbols like A {tuple(tA.shape)}, got shape {tuple(tB.shape)}"
        )
    if tA.shape[-1] != tB.shape[-1]:
        raise ValueError(
            f"B: has L = {tB.shape[-1]} symbols per row, but A has L = {tA.shape[-1]} "
            "(mismatched lengths)"
        )
    batched = tA.dim() == 3
    if not batched:
        tA, tB = tA.unsqueeze(0), tB.unsqueeze(0)
    if tA.shape[-1] == 0:
        raise ValueError("A: empty rows (L = 0)")
    if tA.device != tB.device:
        raise ValueError(f"B: on {tB.device}, but A is on {tA.device}")
    if tA.shape[-1] > 2**24:
        raise ValueError(
            f"A: L = {tA.shape[-1]} exceeds 2^24, where float32 counts stop being exact"
        )
    K = arrays.num_symbols(k, tA, tB)
    if backend.forced() == "reference":
        from fastfp.reference import fbi as ref

        if distance == "rajski":  # the sklearn-based twin of the paper's equation
            rows = [
                ref.pairwise_rajski(a.tolist(), None if symmetric else b.tolist())
                for a, b in zip(tA.cpu(), tB.cpu(), strict=True)
            ]
        else:
            rows = [
                ref.pairwise_distance(a.tolist(), None if symmetric else b.tolist(), distance)
                for a, b in zip(tA.cpu(), tB.cpu(), strict=True)
            ]
        d = torch.tensor(rows, dtype=torch.float64).reshape(
            tA.shape[0], tA.shape[1], tB.shape[1]
        )
        backend.record(op, "reference")
        return arrays.restore(d.to(tA.device) if batched else d[0].to(tA.device), kind)
    if tA.shape[1] == 0 or tB.shape[1] == 0:
        d = torch.zeros(
            tA.shape[0], tA.shape[1], tB.shape[1], dtype=torch.float64, device=tA.device
        )
    else:
        d = _pairwise_torch(tA, tB, K, symmetric, bool(exact), distance)
    backend.record(op, "torch")
    return arrays.restore(d if batched else d[0], kind)
