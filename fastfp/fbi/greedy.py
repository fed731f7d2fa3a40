"""Walled garden (A = B, paper section III): greedy detection and identification.

The outputs of the M known models on the N benign inputs are encoded once: every distinct
(input, top-k tuple) pair becomes a *group* g, so ``codes[m, x]`` is the group of model m's
output on x and ``group_input[g]`` its input. A candidate set then reduces to per-group counts,
and the scores of all N inputs at once are a scatter of per-group products onto their inputs:

    detection (eq. 7):   num[x] = sum_{g at x} |M(g, (A\\F)^l)| * |M(g, F^l)|,   s = num / |F^l|
    identification:      num[x] = sum_{g at x} nfam(g) * |M(g, A^l)|,            s = num / |A^l|

Numerators are exact integers, so ties (and the fail criterion) are decided exactly. After each
query the eliminated models are subtracted from the counts of the groups they touch (incremental
update, O(#eliminated * N)); when most candidates go at once, the counts are rebuilt from the
survivors instead, whichever touches fewer entries. CuPy serves the from-scratch counts of CUDA
arrays when usable; torch serves everything else.

Ties in the argmin go to the smallest input index, or with ``seed`` to
``ties[numpy.random.default_rng(seed).integers(len(ties))]`` (the reference twin's rule too).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fastfp import _validate, backend

from . import arrays
from .arrays import Array

# a model of the database (its index), its answers, or a function answering one query index
WalledGardenSuspect = int | Array | Callable[[int], Array]


@dataclass
class Encoded:
    """Top-k outputs of M models on N inputs, encoded into groups (see the module docstring)."""

    labels: torch.Tensor  # (M, N, k) int64
    codes: torch.Tensor  # (M, N) int64 group ids
    group_input: torch.Tensor  # (G,) int64
    k: int
    _group_size: torch.Tensor | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.codes.shape)

    @property
    def num_groups(self) -> int:
        return int(self.group_input.shape[0])

    @property
    def group_size(self) -> torch.Tensor:
        """How many models give each group's output (all models in play), computed once."""
        if self._group_size is None:
            self._group_size = _bincount(self.codes.reshape(-1), self.num_groups)
        return self._group_size

    def code_of(self, x: int, output: Array) -> int:
        """The group of ``output`` (top-k labels) at input x, or -1 if no model gives it."""
        z = torch.as_tensor(
            np.asarray(output).reshape(-1)[: self.k], dtype=torch.int64, device=self.labels.device
        )
        if z.numel() < self.k:
            raise ValueError(
                f"blackbox: answered {z.numel()} labels, expected at least k = {self.k}"
            )
        hit = (self.labels[:, x, :] == z).all(-1).nonzero()
        return int(self.codes[hit[0, 0], x]) if hit.numel() else -1


def encode(outputs: Array | Encoded, k: int | None = None) -> Encoded:
    """Encode outputs (M, N) top-1 labels or (M, N, c) top-k labels (first k columns used)."""
    if isinstance(outputs, Encoded):
        if k is not None and k != outputs.k:
            raise ValueError(f"k: the outputs were encoded with k = {outputs.k}, got k = {k}")
        return outputs
    t = arrays.as_tensor("outputs", outputs)
    if t.dim() == 2:
        t = t.unsqueeze(-1)
    if t.dim() != 3:
        raise ValueError(
            f"outputs: expected (M, N) or (M, N, k) labels, got shape {tuple(t.shape)}"
        )
    if k is None:
        k = t.shape[-1]
    k = _validate.integer("k", k, lo=1)
    if t.shape[-1] < k:
        raise ValueError(f"outputs: has {t.shape[-1]} label columns, fewer than k = {k}")
    M, N = t.shape[:2]
    if M == 0 or N == 0:
        raise ValueError(
            f"outputs: needs at least one model and one input, got shape {tuple(t.shape)}"
        )
    labels = t[..., :k].long()
    if int(labels.min()) < 0:
        raise ValueError("outputs: labels must be >= 0")
    base = int(labels.max()) + 1
    return _encode(labels, base, k, M, N)


def _encode(labels, base, k, M, N) -> Encoded:
    x = torch.arange(N, device=labels.device).expand(M, N)
    if (N * base**k) < 2**62:
        # One int64 key per (input, tuple): sorting 1-D keys is far cheaper than unique rows.
        key = x.clone()
        for j in range(k):
            key = key * base + labels[..., j]
        uniq, inv = torch.unique(key.reshape(-1), return_inverse=True)
        group_input = uniq // base**k
    else:
        rows = torch.cat([x.unsqueeze(-1), labels], -1).reshape(M * N, k + 1)
        uniq, inv = torch.unique(rows, dim=0, return_inverse=True)
        group_input = uniq[:, 0].contiguous()
    return Encoded(labels=labels, codes=inv.reshape(M, N), group_input=group_input, k=k)


def _bincount(values: torch.Tensor, G: int) -> torch.Tensor:
    """Counts of group ids (int64, length G): CuPy for CUDA arrays when usable, else torch."""
    if values.device.type == "cuda" and backend.forced() != "torch" and backend.cupy_usable():
        import cupy

        out = torch.from_dlpack(cupy.bincount(cupy.from_dlpack(values.contiguous()), minlength=G))
        return out.to(torch.int64)
    return torch.bincount(values, minlength=G)


def _impl(device) -> str:
    if device.type == "cuda" and backend.forced() != "torch" and backend.cupy_usable():
        return "cupy"
    return "torch"


def detection_scores(
    outputs: Array | Encoded,
    family: Array,
    candidates: Array | None = None,
    exclude: Array | None = None,
    k: int | None = None,
) -> torch.Tensor:
    """Numerators of eq. (7) for every input, computed from scratch (int64, length N).

    family: bool mask (M,) or model indices of F; candidates: bool mask (M,) of the models still
    in play (default all); exclude: bool mask (N,) of inputs already queried (score set to -1).
    The score is ``num / |F^l|``.
    """
    enc = encode(outputs, k)
    in_f = _mask("family", family, enc.shape[0], enc.codes.device)
    cand = (
        None
        if candidates is None
        else _mask("candidates", candidates, enc.shape[0], enc.codes.device)
    )
    # Only the family's own entries matter: summing (|M(g)| - |M(g, F)|) over each family model's
    # group g counts every group |M(g, F)| times, which is exactly the product of eq. (7).
    fam_codes = enc.codes[in_f if cand is None else in_f & cand]  # (|F^l|, N)
    if cand is None or bool(cand.all()):
        size = enc.group_size
    else:
        size = _bincount(enc.codes[cand].reshape(-1), enc.num_groups)
    _, inv, count_f = torch.unique(fam_codes.reshape(-1), return_inverse=True, return_counts=True)
    num = (size[fam_codes] - count_f[inv].view_as(fam_codes)).sum(0)
    if fam_codes.shape[0] == 0:
        num = torch.zeros(enc.shape[1], dtype=torch.int64, device=enc.codes.device)
    if exclude is not None:
        num[_mask("exclude", exclude, enc.shape[1], num.device)] = -1
    backend.record("fbi.detection_scores", _impl(enc.codes.device))
    return num


def _mask(name, sel, n, device) -> torch.Tensor:
    t = torch.as_tensor(arrays.as_tensor(name, sel, integer=False), device=device)
    if t.dtype == torch.bool:
        if t.dim() == 1 and t.shape[0] == n:
            return t
        # never read a mask of another length as the indices 0 / 1
        raise ValueError(
            f"{name}: a bool mask needs {n} entries, got shape {tuple(t.shape)} "
            "(mismatched lengths)"
        )
    if t.numel() == 0:
        return torch.zeros(n, dtype=torch.bool, device=device)
    if t.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f"{name}: expected a bool mask or integer indices, got {t.dtype}")
    t = t.reshape(-1).long()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
        raise ValueError(f"{name}: indices must lie in 0..{n - 1}")
    mask = torch.zeros(n, dtype=torch.bool, device=device)
    mask[t] = True
    return mask


def _blackbox(blackbox, enc: Encoded):
    """A function x -> group code of the black box's answer on input x."""
    M, N = enc.shape
    if isinstance(blackbox, torch.nn.Module):
        raise TypeError(
            "blackbox: got a model; pass its outputs on the inputs (fastfp.fbi.query_topk) "
            "or a callable input index -> top-k labels"
        )
    if callable(blackbox):
        return lambda x: enc.code_of(x, blackbox(x))
    if isinstance(blackbox, (int, np.integer)) and not isinstance(blackbox, bool):
        idx = _validate.integer("blackbox", int(blackbox), lo=0, hi=M - 1)
        return lambda x: int(enc.codes[idx, x])
    t = arrays.as_tensor("blackbox", blackbox)
    if t.dim() == 1:
        t = t.unsqueeze(-1)
    if t.dim() != 2 or t.shape[0] != N:
        raise ValueError(
            f"blackbox: expected its outputs on all N = {N} inputs, shape (N,) or (N, k), "
            f"got {tuple(t.shape)}"
        )
    if t.shape[1] < enc.k:
        raise ValueError(f"blackbox: has {t.shape[1]} label columns, fewer than k = {enc.k}")
    t = t[:, : enc.k].to(enc.labels.device)
    return lambda x: enc.code_of(x, t[x].cpu().numpy())


class _Answers:
    """blackbox[x] for the literal twins: the black box's label tuple on input x, asked lazily."""

    def __init__(self, answer_labels):
        self.answer_labels = answer_labels

    def __getitem__(self, x):
        return self.answer_labels(x)


def _reference_inputs(enc: Encoded, blackbox):
    """Outputs as per-model lists of label tuples, and the black box as lazy label tuples."""
    outputs = [[tuple(o) for o in model] for model in enc.labels.cpu().tolist()]
    M, N = enc.shape
    if callable(blackbox):
        return outputs, _Answers(
            lambda x: tuple(int(v) for v in np.asarray(blackbox(x)).reshape(-1)[: enc.k])
        )
    if isinstance(blackbox, (int, np.integer)) and not isinstance(blackbox, bool):
        idx = _validate.integer("blackbox", int(blackbox), lo=0, hi=M - 1)
        return outputs, outputs[idx]
    t = arrays.as_tensor("blackbox", blackbox)
    t = t.unsqueeze(-1) if t.dim() == 1 else t
    return outputs, [tuple(row[: enc.k]) for row in t.cpu().tolist()]


def _argmin(key: torch.Tensor, rng) -> tuple[int, int]:
    best = int(key.min())
    ties = (key == best).nonzero().reshape(-1)
    q = int(ties[0]) if rng is None else int(ties[int(rng.integers(ties.numel()))])
    return q, best


@dataclass
class DetectionResult:
    decision: str  # "positive", "negative" or "fail"
    queries: list  # input indices, in query order
    family_left: list = field(default_factory=list)  # F^(L): family models still consistent
    others_left: list = field(default_factory=list)  # (A\F)^(L)

    @property
    def L(self) -> int:
        return len(self.queries)


class _Counts:
    """A greedy loop's counts over its remaining candidate models, updated as candidates go."""

    cand: torch.Tensor

    def rebuild(self) -> None:
        raise NotImplementedError

    def _subtract(self, gone: torch.Tensor) -> None:
        raise NotImplementedError

    def remove(self, gone: torch.Tensor) -> None:
        """Drop the candidates in the bool mask ``gone`` and update the counts they touch (from
        scratch when most of them go: cheaper than subtracting)."""
        self.cand &= ~gone
        n_gone, n_left = int(gone.sum()), int(self.cand.sum())
        if n_gone == 0:
            return
        if n_gone > n_left:
            self.rebuild()
            return
        self._subtract(gone)


class _DetectState(_Counts):
    """Per-group counts of the candidates in F and in A\\F, and the score numerators."""

    def __init__(self, enc: Encoded, in_f: torch.Tensor):
        self.enc, self.in_f = enc, in_f
        self.cand = torch.ones_like(in_f)
        self.rebuild()

    def rebuild(self):
        enc = self.enc
        G = enc.num_groups
        self.count_f = _bincount(enc.codes[self.cand & self.in_f].reshape(-1), G)
        every = (
            enc.group_size
            if bool(self.cand.all())
            else _bincount(enc.codes[self.cand].reshape(-1), G)
        )
        self.count_o = every - self.count_f
        self.num = torch.zeros(enc.shape[1], dtype=torch.int64, device=enc.codes.device)
        self.num.scatter_add_(0, enc.group_input, self.count_f * self.count_o)

    def _subtract(self, gone: torch.Tensor):
        enc = self.enc
        g_f = enc.codes[gone & self.in_f].reshape(-1)
        g_o = enc.codes[gone & ~self.in_f].reshape(-1)
        ug, inv = torch.unique(torch.cat([g_f, g_o]), return_inverse=True)
        d_f = torch.zeros_like(ug).scatter_add_(0, inv[: g_f.numel()], torch.ones_like(g_f))
        d_o = torch.zeros_like(ug).scatter_add_(0, inv[g_f.numel() :], torch.ones_like(g_o))
        old = self.count_f[ug] * self.count_o[ug]
        self.count_f[ug] -= d_f
        self.count_o[ug] -= d_o
        self.num.scatter_add_(0, enc.group_input[ug], self.count_f[ug] * self.count_o[ug] - old)


def greedy_detect(
    outputs: Array | Encoded,
    family: Array,
    blackbox: WalledGardenSuspect,
    *,
    k: int | None = None,
    max_queries: int | None = None,
    seed: int | None = None,
) -> DetectionResult:
    """Greedy detection (D, F, A = B, k), paper section III-A.

    outputs: (M, N) top-1 or (M, N, c) top-k labels of the known models A on the N benign inputs
        (or an :class:`Encoded`); family: bool mask (M,) or model indices of the hypothesis F;
    blackbox: the model index in A to simulate, its outputs (N,) / (N, c) on every input, or a
        callable ``x -> top-k labels`` queried only on the inputs the algorithm picks.
    Stops with "positive" when (A\\F)^L is empty, "negative" when F^L is empty, "fail" when the
    best score equals |(A\\F)^L| (no input separates the remaining models) or after max_queries.
    """
    enc = encode(outputs, k)
    M, N = enc.shape
    in_f = _mask("family", family, M, enc.codes.device)
    if not bool(in_f.any()):
        raise ValueError("family: is empty (no model of the hypothesis family)")
    if max_queries is not None:
        _validate.integer("max_queries", max_queries, lo=0)
    seed = arrays.check_seed(seed)
    answer = _blackbox(blackbox, enc)
    if backend.forced() == "reference":
        from fastfp.reference import fbi as ref

        outs, bb = _reference_inputs(enc, blackbox)
        decision, queries, f_left, o_left = ref.greedy_detect(
            outs, in_f.nonzero().reshape(-1).tolist(), bb, max_queries=max_queries, seed=seed
        )
        backend.record("fbi.greedy_detect", "reference")
        return DetectionResult(decision, queries, f_left, o_left)
    return _detect_loop(enc, in_f, answer, max_queries, seed)


def _detect_loop(enc, in_f, answer, max_queries, seed) -> DetectionResult:
    M, N = enc.shape
    rng = None if seed is None else np.random.default_rng(seed)
    state = _DetectState(enc, in_f)
    queried = torch.zeros(N, dtype=torch.bool, device=enc.codes.device)
    queries: list[int] = []
    big = torch.iinfo(torch.int64).max
    while True:
        n_f = int((state.cand & in_f).sum())
        n_o = int((state.cand & ~in_f).sum())
        decision = None
        if n_f == 0:
            decision = "negative"
        elif n_o == 0:
            decision = "positive"
        elif (max_queries is not None and len(queries) >= max_queries) or len(queries) == N:
            decision = "fail"
        else:
            q, best = _argmin(torch.where(queried, big, state.num), rng)
            if best == n_o * n_f:  # eq. (7) equals |(A\F)^l|: no input separates the candidates
                decision = "fail"
        if decision is not None:
            left = state.cand.nonzero().reshape(-1).tolist()
            in_f_list = in_f.tolist()
            backend.record("fbi.greedy_detect", _impl(enc.codes.device))
            return DetectionResult(
                decision,
                queries,
                [m for m in left if in_f_list[m]],
                [m for m in left if not in_f_list[m]],
            )
        queries.append(q)
        queried[q] = True
        g = answer(q)
        state.remove(state.cand & (enc.codes[:, q] != g))


@dataclass
class IdentificationResult:
    family: object | None  # the identified family, or None
    status: str  # "identified", "unknown" (no known model answers so) or "fail"
    queries: list
    candidates: list = field(default_factory=list)

    @property
    def L(self) -> int:
        return len(self.queries)


class _IdentifyState(_Counts):
    """Per-(group, family) candidate counts; per input s = sum nfam * |M| and t = sum |M|^2."""

    def __init__(self, enc: Encoded, fam: torch.Tensor, n_fam: int):
        self.enc = enc
        key = enc.codes * n_fam + fam.unsqueeze(1)
        uniq, inv = torch.unique(key.reshape(-1), return_inverse=True)
        self.pair = inv.reshape(enc.shape)
        self.pair_group = uniq // n_fam
        self.cand = torch.ones(enc.shape[0], dtype=torch.bool, device=enc.codes.device)
        self.rebuild()

    def rebuild(self):
        enc = self.enc
        G, P = enc.num_groups, self.pair_group.shape[0]
        self.count_p = _bincount(self.pair[self.cand].reshape(-1), P)
        self.a = torch.zeros(G, dtype=torch.int64, device=enc.codes.device).scatter_add_(
            0, self.pair_group, self.count_p
        )
        self.nf = torch.zeros_like(self.a).scatter_add_(
            0, self.pair_group, (self.count_p > 0).long()
        )
        self.s = torch.zeros(enc.shape[1], dtype=torch.int64, device=enc.codes.device)
        self.s.scatter_add_(0, enc.group_input, self.nf * self.a)
        self.t = torch.zeros_like(self.s).scatter_add_(0, enc.group_input, self.a * self.a)

    def _subtract(self, gone: torch.Tensor):
        up, cnt = torch.unique(self.pair[gone].reshape(-1), return_counts=True)
        groups = self.pair_group[up]
        ug, inv = torch.unique(groups, return_inverse=True)
        old_s, old_t = self.nf[ug] * self.a[ug], self.a[ug] * self.a[ug]
        self.count_p[up] -= cnt
        self.a[ug] -= torch.zeros_like(ug).scatter_add_(0, inv, cnt)
        self.nf[ug] -= torch.zeros_like(ug).scatter_add_(0, inv, (self.count_p[up] == 0).long())
        gi = self.enc.group_input[ug]
        self.s.scatter_add_(0, gi, self.nf[ug] * self.a[ug] - old_s)
        self.t.scatter_add_(0, gi, self.a[ug] * self.a[ug] - old_t)


def _family_ids(name: str, families, M: int, device):
    """families: one family label per model -> (int ids tensor, list of distinct labels)."""
    fams = list(families.tolist() if hasattr(families, "tolist") else families)
    if len(fams) != M:
        raise ValueError(
            f"{name}: has {len(fams)} entries, expected one family per model (M = {M})"
        )
    names = list(dict.fromkeys(fams))
    index = {f: i for i, f in enumerate(names)}
    return torch.tensor([index[f] for f in fams], dtype=torch.int64, device=device), names


def greedy_identify(
    outputs: Array | Encoded,
    families: Sequence[Any],
    blackbox: WalledGardenSuspect,
    *,
    k: int | None = None,
    max_queries: int | None = None,
    seed: int | None = None,
) -> IdentificationResult:
    """Greedy identification (I, F, A = B, k), paper section III-B (eq. 11).

    families: one family label per model (length M; the families partition A). The argmin is
    over (score, expected number of models left), so that among inputs that keep every family the
    one that still splits the most models comes first. Stops when the candidates lie in one family
    ("identified"), when none is left ("unknown"), or when the candidates answer alike on every
    input left / after max_queries ("fail").
    """
    enc = encode(outputs, k)
    M, N = enc.shape
    fam, names = _family_ids("families", families, M, enc.codes.device)
    if max_queries is not None:
        _validate.integer("max_queries", max_queries, lo=0)
    seed = arrays.check_seed(seed)
    answer = _blackbox(blackbox, enc)
    if backend.forced() == "reference":
        from fastfp.reference import fbi as ref

        outs, bb = _reference_inputs(enc, blackbox)
        labels = [names[i] for i in fam.tolist()]
        found, status, queries, left = ref.greedy_identify(
            outs, labels, bb, max_queries=max_queries, seed=seed
        )
        backend.record("fbi.greedy_identify", "reference")
        return IdentificationResult(found, status, queries, left)
    return _identify_loop(enc, fam, names, answer, max_queries, seed)


def _identify_loop(enc, fam, names, answer, max_queries, seed) -> IdentificationResult:
    M, N = enc.shape
    rng = None if seed is None else np.random.default_rng(seed)
    state = _IdentifyState(enc, fam, len(names))
    queried = torch.zeros(N, dtype=torch.bool, device=enc.codes.device)
    queries: list[int] = []
    big = torch.iinfo(torch.int64).max
    while True:
        n = int(state.cand.sum())
        left = state.cand.nonzero().reshape(-1)
        status = None
        if n == 0:
            status, found = "unknown", None
        else:
            remaining = torch.unique(fam[left])
            if remaining.numel() == 1:
                status, found = "identified", names[int(remaining[0])]
            elif (max_queries is not None and len(queries) >= max_queries) or len(queries) == N:
                status, found = "fail", None
            elif int(torch.where(queried, big, state.t).min()) == n * n:
                status, found = "fail", None
        if status is not None:
            backend.record("fbi.greedy_identify", _impl(enc.codes.device))
            return IdentificationResult(found, status, queries, left.tolist())
        # lexicographic (s, t) in two passes (a combined s * (n^2 + 1) + t key overflows int64
        # beyond ~55,000 candidate models)
        s_key = torch.where(queried, big, state.s)
        key = torch.where(s_key == s_key.min(), state.t, big)
        q, _ = _argmin(key, rng)
        queries.append(q)
        queried[q] = True
        g = answer(q)
        state.remove(state.cand & (enc.codes[:, q] != g))


@dataclass
class SequentialResult:
    family: object | None
    L: int
    decisions: list  # (family, decision, L) per hypothesis tested


def sequential_identify(
    outputs: Array | Encoded,
    families: Sequence[Any],
    blackbox: WalledGardenSuspect,
    *,
    order: Sequence[Any] | None = None,
    k: int | None = None,
    max_queries: int | None = None,
    seed: int | None = None,
) -> SequentialResult:
    """Identification by sequential detection (section III-B, eq. 9): test F_1, F_2, ... in
    ``order`` (default: first appearance) until a detection is positive; L sums all queries."""
    enc = encode(outputs, k)
    fam, names = _family_ids("families", families, enc.shape[0], enc.codes.device)
    seed = arrays.check_seed(seed)
    order = names if order is None else list(order)
    unknown = [f for f in order if f not in names]
    if unknown:
        raise ValueError(f"order: unknown family names {unknown!r}")
    total, decisions = 0, []
    for f in order:
        r = greedy_detect(enc, fam == names.index(f), blackbox, max_queries=max_queries, seed=seed)
        total += r.L
        decisions.append((f, r.decision, r.L))
        if r.decision == "positive":
            return SequentialResult(f, total, decisions)
    return SequentialResult(None, total, decisions)
