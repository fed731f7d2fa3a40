"""Paper-literal twins of the FBI engine (Maho, Furon, Le Merrer, TIFS'23, sections III and IV).

Plain Python loops over models, inputs and labels, written one to one from the equations; mutual
information comes from ``sklearn.metrics.mutual_info_score``. They are the test oracles of
:mod:`fastfp.fbi` and the baselines of ``bench/bench_fbi.py``. Nothing here is optimised.

Conventions shared with the fast engine (so that query sequences can be compared exactly):
outputs are lists (one per model) of per-input label tuples (the top-k, best first); the argmin
of a score is the smallest input index among the minimisers, or, given a seed, the minimiser
``ties[rng.integers(len(ties))]`` with ``rng = numpy.random.default_rng(seed)`` and ``ties`` sorted.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

# --- surjection and information (section IV-A, IV-B1) -------------------------------------------


def surjection(topk_rows, reference, k):
    """S_k (eq. 14): for each output, the 1-based rank j of the reference class among the first k
    labels, 0 if absent."""
    out = []
    for labels, ref in zip(topk_rows, reference, strict=True):
        symbol = 0
        for j in range(1, k + 1):
            if labels[j - 1] == ref:
                symbol = j
                break
        out.append(symbol)
    return out


def entropy(a):
    """Empirical entropy in nats (eq. 20)."""
    L = len(a)
    return -sum((c / L) * math.log(c / L) for c in Counter(a).values())


def joint_entropy(a, b):
    L = len(a)
    return -sum((c / L) * math.log(c / L) for c in Counter(zip(a, b, strict=True)).values())


def mutual_information(a, b):
    """Empirical mutual information (eq. 18), in nats, by the outside oracle."""
    from sklearn.metrics import mutual_info_score

    return float(mutual_info_score(list(a), list(b)))


def rajski_distance(a, b):
    """D = 1 - I / H(joint) (eq. 21); 0 when the joint entropy is 0."""
    h = joint_entropy(a, b)
    if h == 0:
        return 0.0
    return 1.0 - mutual_information(a, b) / h


def pairwise_rajski(A, B=None):
    B = A if B is None else B
    return [[rajski_distance(a, b) for b in B] for a in A]


# --- the three distances from the contingency table (fastfp.fbi.information.DISTANCES) ----------

DISTANCES = ("rajski", "mi", "mi_min")


def contingency(a: Sequence, b: Sequence) -> dict[tuple, int]:
    """The joint counts of two sequences: {(u, v): c(u, v)}, one loop over the L positions."""
    table: dict[tuple, int] = {}
    for u, v in zip(a, b, strict=True):
        table[(u, v)] = table.get((u, v), 0) + 1
    return table


def entropies(table: dict[tuple, int]) -> tuple[float, float, float]:
    """(H(a), H(b), H(a, b)) in nats from a contingency table, by loops over its cells:
    H = -sum p log p with p = c / L, the marginals summed cell by cell."""
    L = sum(table.values())
    row: dict = {}
    col: dict = {}
    for (u, v), c in table.items():
        row[u] = row.get(u, 0) + c
        col[v] = col.get(v, 0) + c

    def h(counts):
        total = 0.0
        for c in counts:
            p = c / L
            total -= p * math.log(p)
        return max(total, 0.0)

    return h(row.values()), h(col.values()), h(table.values())


def distance(a: Sequence, b: Sequence, distance: str = "rajski") -> float:
    """One distance between two sequences, from their contingency table:

    - "rajski": 1 - I / H(a, b), 0 when H(a, b) = 0 (paper eq. 21), smaller is closer;
    - "mi": I = H(a) + H(b) - H(a, b) in nats (``sklearn.metrics.mutual_info_score``), larger
      is closer (the FBI authors' ``--distance mutual_information``, there in bits);
    - "mi_min": 1 - clip(I / min(H(a), H(b)), 0, 1), +inf when min(H(a), H(b)) = 0 (the
      authors' ``mutual_distance``: ``utils/distances.py`` ``score_mutual_information(u, v,
      to_distance=True)`` divides I by the smaller marginal entropy, clips to [0, 1], takes 1 -
      and maps the NaN of 0 / 0 to inf), smaller is closer.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance: expected one of {', '.join(map(repr, DISTANCES))}, "
                         f"got {distance!r}")
    h_a, h_b, h_ab = entropies(contingency(a, b))
    mi = max(h_a + h_b - h_ab, 0.0)
    if distance == "mi":
        return mi
    if distance == "rajski":
        return 0.0 if h_ab == 0 else min(max(1.0 - mi / h_ab, 0.0), 1.0)
    h_min = min(h_a, h_b)
    if h_min == 0:
        return math.inf
    return 1.0 - min(max(mi / h_min, 0.0), 1.0)


def pairwise_distance(A: Sequence[Sequence], B: Sequence[Sequence] | None = None,
                      distance_name: str = "rajski") -> list[list[float]]:
    """``distance`` of every pair of rows of A and B (B = A when None): nested lists (m, n)."""
    B = A if B is None else B
    return [[distance(a, b, distance_name) for b in B] for a in A]


# --- walled garden (section III) ----------------------------------------------------------------


def _pick(ties, rng):
    ties = sorted(ties)
    return ties[0] if rng is None else ties[int(rng.integers(len(ties)))]


def M(outputs, x, y, D):
    """M(x, y, D): the models of D giving output y for input x."""
    return [m for m in D if outputs[m][x] == y]


def detection_score(outputs, x, family_candidates, other_candidates):
    """Eq. (7): sum over y in F^(l)(x) of |M(x, y, (A\\F)^(l))| |M(x, y, F^(l))| / |F^(l)|."""
    labels = {outputs[m][x] for m in family_candidates}
    total = 0
    for y in labels:
        total += len(M(outputs, x, y, other_candidates)) * len(M(outputs, x, y, family_candidates))
    return Fraction(total, len(family_candidates))


def greedy_detect(outputs, family, blackbox, *, max_queries=None, seed=None):
    """Detection (D, F, A = B, k): returns (decision, queries, family candidates, other candidates).

    outputs[m][x]: the output (a label tuple) of model m on input x; family: model indices of F;
    blackbox[x]: the black box's output on input x.
    """
    rng = None if seed is None else np.random.default_rng(seed)
    n_inputs = len(outputs[0])
    F = set(family)
    others = set(range(len(outputs))) - F
    queries = []
    while True:
        if not F:
            return "negative", queries, sorted(F), sorted(others)
        if not others:
            return "positive", queries, sorted(F), sorted(others)
        if max_queries is not None and len(queries) >= max_queries:
            return "fail", queries, sorted(F), sorted(others)
        scores = {
            x: detection_score(outputs, x, F, others) for x in range(n_inputs) if x not in queries
        }
        if not scores:
            return "fail", queries, sorted(F), sorted(others)
        best = min(scores.values())
        if best == len(others):  # every remaining model answers alike on every input: cannot decide
            return "fail", queries, sorted(F), sorted(others)
        q = _pick([x for x, s in scores.items() if s == best], rng)
        queries.append(q)
        z = blackbox[q]
        F = {m for m in F if outputs[m][q] == z}
        others = {m for m in others if outputs[m][q] == z}


def identification_score(outputs, x, families, candidates):
    """Section III-B: sum over y of (#families with a candidate giving y) |M(x, y, A^(l))|
    / |A^(l)|, and the tie-breaker sum over y of |M(x, y, A^(l))|^2 (expected number of models
    left)."""
    labels = {outputs[m][x] for m in candidates}
    s = 0
    t = 0
    for y in labels:
        models = M(outputs, x, y, candidates)
        n_families = len({families[m] for m in models})
        s += n_families * len(models)
        t += len(models) ** 2
    return Fraction(s, len(candidates)), t


def greedy_identify(outputs, families, blackbox, *, max_queries=None, seed=None):
    """Identification (I, F, A = B, k): returns (family or None, status, queries, candidates).

    status: 'identified', 'unknown' (no known model answers like the black box) or 'fail'
    (the remaining models of several families answer alike on every input left).
    """
    rng = None if seed is None else np.random.default_rng(seed)
    n_inputs = len(outputs[0])
    A = set(range(len(outputs)))
    queries = []
    while True:
        if not A:
            return None, "unknown", queries, []
        remaining = {families[m] for m in A}
        if len(remaining) == 1:
            return next(iter(remaining)), "identified", queries, sorted(A)
        if max_queries is not None and len(queries) >= max_queries:
            return None, "fail", queries, sorted(A)
        scores = {
            x: identification_score(outputs, x, families, A)
            for x in range(n_inputs)
            if x not in queries
        }
        if not scores or min(t for _, t in scores.values()) == len(A) ** 2:
            return None, "fail", queries, sorted(A)
        best = min(scores.values())
        q = _pick([x for x, s in scores.items() if s == best], rng)
        queries.append(q)
        z = blackbox[q]
        A = {m for m in A if outputs[m][q] == z}


def sequential_identify(outputs, families, order, blackbox, *, max_queries=None, seed=None):
    """Section III-B, first approach: test the hypotheses F_1, F_2, ... in ``order`` with detection
    until one is positive. Returns (family or None, total number of queries, per-family
    decisions)."""
    total = 0
    decisions = []
    for fam in order:
        members = [m for m in range(len(outputs)) if families[m] == fam]
        decision, queries, _, _ = greedy_detect(
            outputs, members, blackbox, max_queries=max_queries, seed=seed
        )
        total += len(queries)
        decisions.append((fam, decision))
        if decision == "positive":
            return fam, total, decisions
    return None, total, decisions


# --- open world (section IV-B, IV-C) ------------------------------------------------------------


def threshold(negative_distances, fpr):
    """tau with P(D < tau) <= fpr over the negative pairs: the floor(fpr * n)-th smallest
    (0-based)."""
    d = sorted(negative_distances)
    return d[int(math.floor(fpr * len(d)))]


def family_distance(blackbox_symbols, delegate_symbols):
    """Compound distance (eq. 22): min over the family's delegates."""
    return min(rajski_distance(blackbox_symbols, s) for s in delegate_symbols)


def identify_decision(distances, tau):
    """argmin over families if below tau and unique, else None (abstain, H0)."""
    best = min(distances.values())
    winners = [f for f, d in distances.items() if d == best]
    if best >= tau or len(winners) > 1:
        return None
    return winners[0]


def select_inputs(
    L, strategy, rng, correct, anchor_correct=None, entropy=None, pool_fraction=0.2, guard=True
):
    """Section IV-B2, literally: L distinct inputs from X' (All, 50/50, 30/70 or Entropy).

    Entropy: the head ``pool_fraction`` of the inputs ranked by entropy (at least L). guard: a
    greedy cover first gives every model one correct and one wrong input (a Python loop over
    the (2M, P) requirement matrix, columns in the order of ``rng.permutation(pool)``; ties to
    the first column); the rest in permutation order, with the 50/50 and 30/70 share of inputs
    the hypothesis' vanilla model gets right, shuffled by a second ``rng.permutation``.
    Returns a list of input indices, or None when the cover needs more than L inputs."""
    correct = np.asarray(correct, dtype=bool)
    N = correct.shape[1]
    if strategy == "entropy":
        size = max(L, int(math.ceil(pool_fraction * N)))
        pool = np.argsort(-np.asarray(entropy), kind="stable")[:size]
    else:
        pool = np.arange(N)
    perm = rng.permutation(pool)
    chosen = []
    if guard:
        cover = np.concatenate([correct[:, perm], ~correct[:, perm]], 0)
        uncovered = cover.any(1)
        while uncovered.any():
            best = int(cover[uncovered].sum(0).argmax())
            chosen.append(int(perm[best]))
            uncovered &= ~cover[:, best]
        if len(chosen) > L:
            return None
    rest = [int(x) for x in perm if int(x) not in set(chosen)]
    need = L - len(chosen)
    ratio = {"50/50": 0.5, "30/70": 0.3}.get(strategy)
    if ratio is None:
        return chosen + rest[:need]
    ok = np.asarray(anchor_correct, dtype=bool)
    want_right = max(0, int(round(ratio * L)) - sum(bool(ok[x]) for x in chosen))
    right = [x for x in rest if ok[x]]
    wrong = [x for x in rest if not ok[x]]
    n_right = min(want_right, len(right), need)
    n_wrong = min(need - n_right, len(wrong))
    n_right = need - n_wrong  # short of one kind: fill with the other
    picked = right[:n_right] + wrong[:n_wrong]
    if picked:
        picked = [int(x) for x in rng.permutation(np.asarray(picked, dtype=np.int64))]
    return chosen + picked
