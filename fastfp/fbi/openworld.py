"""Open world (A != B, paper section IV): the black box may be a variant Alice has never seen.

Alice queries L benign inputs drawn from a selection X' of X, maps the black box's top-k answers
through S_k, and measures the Rajski distance to a family's delegates (compound distance: min over
delegates, eq. 22); ``distance="mi"`` / ``"mi_min"`` take the FBI authors' distances instead
(as scores where smaller is closer: -I for "mi"). Detection says "positive" when D < tau;
identification picks the closest family, abstains (H0) when even that one is at D >= tau, and
abstains on ties.

``fit`` sets tau from a target false-positive rate as the empirical quantile of the distances of
negative pairs drawn from the database itself (``trials`` random draws of L inputs): for
detection, every (model, family) pair with the model outside the family; for identification,
every model against the closest family that is not its own (its family unknown to Alice).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fastfp import _validate, backend

from . import arrays
from .information import DISTANCES, entropy, pairwise_distance, pairwise_rajski
from .surjection import surjection

if TYPE_CHECKING:
    from .database import Database

# a database model name (simulation), its outputs (N,) / (N, c) on every input, or a callable
# input indices -> (L, c) top-k labels
OpenWorldSuspect = str | Any | Callable[[np.ndarray], Any]

SELECTIONS = ("all", "50/50", "30/70", "entropy")
DELEGATES = ("close", "median", "far")
_RATIO = {"50/50": 0.5, "30/70": 0.3}


class _Guard:
    """The correctness matrix (M, N) packed 64 models to a word, word-major (W, N) uint64, with
    the coverable requirements of a pool: the greedy cover of ``select_inputs`` in popcounts."""

    def __init__(self, correct: np.ndarray):
        self.M, self.N = correct.shape
        W = max(1, (self.M + 63) // 64)
        pad = np.zeros((W * 64, self.N), dtype=bool)
        pad[: self.M] = correct
        # bit m of word w, column x = correct[64 w + m, x] (little-endian bit order)
        self.words = np.ascontiguousarray(
            np.packbits(pad.reshape(W, 64, self.N), axis=1, bitorder="little")
            .transpose(0, 2, 1)
            .copy()
            .view(np.uint64)[..., 0]
        )
        self._pools: dict = {}
        self._ranked: tuple | None = None

    def ranking(self, entropy: np.ndarray) -> np.ndarray:
        """Inputs by decreasing entropy (stable), cached for the array the open world holds."""
        if self._ranked is None or self._ranked[0] is not entropy:
            self._ranked = (entropy, np.argsort(-np.asarray(entropy), kind="stable"))
        return self._ranked[1]

    def pool(self, pool: np.ndarray) -> tuple:
        """Per pool (a few cached): its columns, and the packed masks of the models with a right
        / a wrong input in it (the requirements a cover can meet)."""
        key = pool.tobytes()
        if key not in self._pools:
            cols = np.ascontiguousarray(self.words[:, pool])  # (W, P): indexing gives (P, W) order
            valid = np.zeros(self.words.shape[0] * 64, dtype=bool)
            valid[: self.M] = True
            valid = np.packbits(valid.reshape(-1, 64), axis=1, bitorder="little").view(np.uint64)
            if len(self._pools) >= 4:
                self._pools.pop(next(iter(self._pools)))
            self._pools[key] = (
                cols,
                np.bitwise_or.reduce(cols, axis=1),
                valid[:, 0] & ~np.bitwise_and.reduce(cols, axis=1),
            )
        return self._pools[key]

    def _buffers(self, b: int, W: int, P: int) -> tuple[np.ndarray, np.ndarray]:
        """Step buffers (b, W, P) uint64 and uint8, kept between covers: fresh pages would be
        faulted in at every call, which costs more than the step's arithmetic."""
        held = getattr(self, "_held", None)
        if held is None or held[0].shape[0] < b or held[0].shape[1:] != (W, P):
            held = self._held = (
                np.empty((b, W, P), dtype=np.uint64),
                np.empty((b, W, P), dtype=np.uint8),
            )
        return held

    def covers(self, pool: np.ndarray, perms: np.ndarray) -> list[list[int]]:
        """The literal greedy cover (reference ``select_inputs``) of each permutation (B, P) of
        ``pool``: at each step, the column that meets the most unmet requirements, ties to the
        first in that permutation's order. Compiled (``fastfp._ext.guard_cover``, one draw at a
        time) when the extension is built, else in numpy, the draws in lockstep."""
        cols, right0, wrong0 = self.pool(pool)
        B = perms.shape[0]
        if not (right0 | wrong0).any():
            return [[] for _ in range(B)]
        where = np.empty(self.N, dtype=np.int64)
        where[pool] = np.arange(pool.size)
        order = where[perms]  # (B, P): pool positions in each draw's order
        ext = backend.extension() if backend.forced() not in ("torch", "reference") else None
        if ext is None or not hasattr(ext, "guard_cover"):
            backend.record("fbi.guard_cover", "numpy")
            return self._covers_numpy(pool, order, cols, right0, wrong0)
        backend.record("fbi.guard_cover", "ext")
        return [pool[ext.guard_cover(cols, right0, wrong0, row)].tolist() for row in order]

    def _covers_numpy(self, pool, order, cols, right0, wrong0) -> list[list[int]]:
        """``covers`` in numpy: the B draws in lockstep, the per-step work in held buffers."""
        B = order.shape[0]
        chosen: list[list[int]] = [[] for _ in range(B)]
        rank = np.empty((B, pool.size), dtype=np.int64)  # rank[b, j]: position of pool[j]
        rank[np.arange(B)[:, None], order] = np.arange(pool.size)
        W, P = cols.shape
        chunk = max(1, (1 << 22) // (W * P))  # samples per lockstep block: <= 32 MiB of words
        for lo in range(0, B, chunk):
            rows = np.arange(lo, min(lo + chunk, B))
            need_right = np.tile(right0, (rows.size, 1))
            need_wrong = np.tile(wrong0, (rows.size, 1))
            # first pick: every column meets exactly one requirement of every model: a tie
            best = order[rows, 0]
            # the per-step work in preallocated buffers: no (b, W, P) temporaries per step
            buf, bits = self._buffers(rows.size, W, P)
            while rows.size:
                for r, x in zip(rows.tolist(), pool[best].tolist(), strict=True):
                    chosen[r].append(x)
                col = cols[:, best].T  # (b, W)
                need_right &= ~col
                need_wrong &= col
                unmet = need_right | need_wrong  # now at most one requirement per model
                live = unmet.any(1)
                rows, need_right, need_wrong, unmet = (
                    rows[live],
                    need_right[live],
                    need_wrong[live],
                    unmet[live],
                )
                if not rows.size:
                    break
                # a column meets model m's last requirement iff its bit differs from need_wrong
                b = rows.size
                live_words = np.flatnonzero(unmet.any(0))  # the words with unmet models
                # a copy of most words costs more than the masked full pass
                ws: slice | np.ndarray = slice(None) if 2 * live_words.size > W else live_words
                part = cols if isinstance(ws, slice) else cols[ws]
                w = part.shape[0]
                t = np.bitwise_xor(part[None], need_wrong[:, ws, None], out=buf[:b, :w])
                t &= unmet[:, ws, None]
                count = np.add.reduce(
                    np.bitwise_count(t, out=bits[:b, :w]), axis=1, dtype=np.int32
                )  # (b, P)
                top = count == count.max(1, keepdims=True)
                best = np.where(top, rank[rows], pool.size).argmin(1)
        return chosen


def select_inputs(
    L: int,
    strategy: str,
    rng: np.random.Generator,
    *,
    correct: Any,
    anchor_correct: Any = None,
    entropy: Any = None,
    pool_fraction: float = 0.2,
    guard: bool = True,
) -> np.ndarray:
    """Draw L distinct input indices from the selection X' of section IV-B2.

    correct: (M, N) bool, model m classifies input x correctly (S_k = 1); anchor_correct: (N,)
    the same for the hypothesis' vanilla model (50/50 and 30/70); entropy: (N,) per-input
    entropy of the models' top-1 labels (Entropy keeps the ``pool_fraction`` head of the
    ranking, at least L). guard: every model gets at least one correct and one wrong input when
    X' allows it (paper section IV-B2, last paragraph; found by a greedy cover first, the rest
    drawn at random). The same draws as the literal ``fastfp.reference.fbi.select_inputs``.
    """
    return _select(
        L, strategy, [rng], correct, anchor_correct, entropy, pool_fraction, guard, None
    )[0]


def _select(L, strategy, rngs, correct, anchor_correct, entropy, pool_fraction, guard, packed):
    """select_inputs for one draw per generator in ``rngs`` (each one's stream used as a single
    select_inputs call would), the greedy covers computed together."""
    strategy = _validate.choice("selection", strategy, SELECTIONS)
    for rng in rngs:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    if packed is None:
        correct = np.asarray(correct, dtype=bool)
        if correct.ndim != 2:
            raise ValueError(f"correct: expected (M, N) booleans, got shape {correct.shape}")
    N = correct.shape[1]
    L = _validate.integer("L", L, lo=1)
    # per-input arrays of another length would index the wrong inputs (or past the end)
    for name, v in (("anchor_correct", anchor_correct), ("entropy", entropy)):
        if v is not None and np.shape(v) != (N,):
            raise ValueError(
                f"{name}: expected one value per input, shape ({N},), got "
                f"{np.shape(v)} (mismatched lengths)"
            )
    if strategy == "entropy":
        if entropy is None:
            raise ValueError("entropy: the Entropy selection needs the per-input entropies")
        fraction = _validate.real("pool_fraction", pool_fraction, lo=0.0, hi=1.0)
        size = max(L, int(math.ceil(fraction * N)))
        ranked = (
            packed.ranking(entropy)
            if packed is not None
            else np.argsort(-np.asarray(entropy), kind="stable")
        )
        pool = ranked[:size]
    else:
        pool = np.arange(N)
    if L > pool.size:
        raise ValueError(
            f"L: {L} queries asked, but the selection {strategy!r} has only {pool.size} inputs"
        )
    if strategy in _RATIO and anchor_correct is None:
        raise ValueError(
            f"anchor_correct: the {strategy} selection needs the vanilla model's correctness"
        )
    perms = (
        np.stack([rng.permutation(pool) for rng in rngs])
        if rngs
        else np.zeros((0, pool.size), dtype=np.int64)
    )
    covers = (packed or _Guard(correct)).covers(pool, perms) if guard else [[] for _ in rngs]
    return [
        _finish(L, strategy, rng, perm, chosen, anchor_correct)
        for rng, perm, chosen in zip(rngs, perms, covers, strict=True)
    ]


def _finish(L, strategy, rng, perm, chosen, anchor_correct) -> np.ndarray:
    """The draw after its cover: the rest in permutation order, or the 50/50 / 30/70 split."""
    if len(chosen) > L:
        raise ValueError(
            f"L: {L} queries cannot give every model one correct and one wrong input "
            f"(the cover needs {len(chosen)}); raise L or pass guard=False"
        )
    need = L - len(chosen)
    if strategy not in _RATIO:
        return np.concatenate([np.asarray(chosen, dtype=np.int64), _rest(perm[:L], chosen)[:need]])
    ok = np.asarray(anchor_correct, dtype=bool)
    want_right = max(0, int(round(_RATIO[strategy] * L)) - int(ok[chosen].sum()))
    # the first rights and wrongs of the permutation: found in a head of it unless it runs short
    n_right = min(want_right, need)
    rest = _rest(perm[: 8 * L], chosen)
    right, wrong = rest[ok[rest]], rest[~ok[rest]]
    if right.size < n_right or wrong.size < need - n_right:
        rest = _rest(perm, chosen)
        right, wrong = rest[ok[rest]], rest[~ok[rest]]
        n_right = min(want_right, right.size, need)
    n_wrong = min(need - n_right, wrong.size)
    n_right = need - n_wrong  # short of one kind: fill with the other
    picked = np.concatenate([right[:n_right], wrong[:n_wrong]]).astype(np.int64)
    if picked.size:
        picked = rng.permutation(picked)
    return np.concatenate([np.asarray(chosen, dtype=np.int64), picked])


def _rest(perm: np.ndarray, chosen: list[int]) -> np.ndarray:
    """``perm`` without the cover's inputs, in order."""
    return perm[~np.isin(perm, chosen)] if chosen else perm


def _threshold(negatives: np.ndarray, fpr: float) -> float:
    """tau such that P(D < tau) <= fpr over the negatives: the floor(fpr * n)-th smallest.

    Conservative on ties: every negative at exactly tau is rejected, so with few distinct
    distances (small L, top-1) the FPR reached can be well under ``fpr`` (2 % for 5 %);
    :func:`_actual_fpr` gives it, and the open world reports it beside the target."""
    d = np.sort(np.asarray(negatives, dtype=np.float64))
    return float(d[int(math.floor(fpr * d.size))])


def _actual_fpr(negatives: np.ndarray, tau: float) -> float:
    """The FPR tau reaches on the negatives it was set from: P(D < tau)."""
    return float(np.mean(np.asarray(negatives) < tau))


# how tau is set (reported with it): no randomised decision, the actual FPR beside the target
THRESHOLD_RULE = "conservative: accept iff D < tau, tau the floor(fpr * n)-th smallest negative"


@dataclass
class OpenDetection:
    family: str
    positive: bool
    distance: float  # smaller is closer: -I for distance="mi"
    tau: float
    queries: np.ndarray
    fpr: float = float("nan")  # the FPR tau reached on the fit's negatives (<= the target)


@dataclass
class OpenIdentification:
    family: str | None  # None: abstain
    status: str  # "identified", "abstain-h0" (all distances >= tau), "abstain-tie"
    distances: dict = field(default_factory=dict)
    tau: float = float("nan")
    queries: np.ndarray | None = None
    fpr: float = float("nan")  # the FPR tau_identify reached on the fit's negatives


class OpenWorld:
    """Open-world detection and identification fitted on an output database.

    Defaults and their sources (paper: Maho, Furon, Le Merrer, TIFS'23, section IV-D; where it
    is silent, the authors' released code, ``unknown/detection.py``):

    - L = 100 queries: Tables III and IV.
    - selection = "30/70" for detection: "the selection 30/70 is used for further experiments
      on the detection task" (IV-D2a); identify_selection = "entropy" (IV-D3: "Images are
      sampled with Entropy").
    - Entropy ranks inputs by the entropy of the top-1 labels of the known vanilla models (the
      anchors; ``entropy_models="all"``: every model, the paper's wording in IV-B2) and keeps
      the head ``pool_fraction = 0.2`` of the ranking (the authors' ``get_score("entropy_label")``).
    - delegates = "close": the closest member to the vanilla model (eq. 23), best for F(m)
      (Table IV); "median" is best for F(m, Psi); several give the compound distance (eq. 22).
    - guard = True: every model gets one correct and one wrong input (IV-B2, last paragraph).
    - fpr = 0.05, tau the empirical fpr-quantile of the negatives' distances (IV-D2: "the
      threshold tau as the empirical alpha-quantile", FPR set to 5 %). Ties at tau are
      rejected (a conservative rule, no randomised decision): the FPR actually reached on the
      fit's negatives is ``fpr_`` / ``fpr_identify_``, at most the target and reported in
      every result and in ``report()``; with few distinct distances it can be far below.
    - trials = 20: "20 measurements of any considered distance thanks to 20 independent inputs
      samples" (IV-D).
    - distance = "rajski": 1 - I / H(joint), the paper's text (eq. 21). "mi" is the raw mutual
      information (nats), the default of the authors' ``unknown/detection.py`` (larger is
      closer); "mi_min" their ``mutual_distance`` (``utils/distances.py``, I / min(H)). Every
      distance the open world holds or reports is a score where SMALLER is closer: for "mi"
      that score is -I, so tau, ``d < tau``, the compound min over delegates (the max of I),
      the delegate ranking and the argmin of identification read the same for all three.

    L: queries per decision; selection: for detection (All, 50/50, 30/70, Entropy);
    identify_selection: All or Entropy (the 50/50-style selections need a hypothesis);
    delegates: "close" / "median" / "far" or several of them (compound distance, min over them),
    ranked by the distance of each member to the family's anchor (vanilla) model on all inputs;
    fpr: target false-positive rate in (0, 1); trials: random draws used to set tau;
    distance: "rajski", "mi" or "mi_min" (see above; "mi" scores are -I).
    """

    def __init__(
        self,
        L: int = 100,
        *,
        selection: str = "30/70",
        identify_selection: str = "entropy",
        delegates: str | Sequence[str] = "close",
        fpr: float = 0.05,
        trials: int = 20,
        guard: bool = True,
        pool_fraction: float = 0.2,
        entropy_models: str = "anchors",
        k: int | None = None,
        seed: int = 0,
        distance: str = "rajski",
    ) -> None:
        self.distance = _validate.choice("distance", distance, DISTANCES)
        self.L = _validate.integer("L", L, lo=1)
        self.selection = _validate.choice("selection", selection, SELECTIONS)
        self.identify_selection = _validate.choice(
            "identify_selection", identify_selection, ("all", "entropy")
        )
        if not isinstance(delegates, (str, list, tuple)):
            raise TypeError(
                f"delegates: expected a name or a list of names, got {type(delegates).__name__}"
            )
        names = (delegates,) if isinstance(delegates, str) else tuple(delegates)
        if not names:
            raise ValueError("delegates: give at least one of 'close', 'median', 'far'")
        for d in names:
            _validate.choice("delegates", d, DELEGATES)
        self.delegate_kinds = names
        self.fpr = _validate.real("fpr", fpr, lo=0.0, hi=1.0)
        if not 0.0 < self.fpr < 1.0:
            raise ValueError(f"fpr: expected a rate strictly between 0 and 1, got {fpr}")
        self.trials = _validate.integer("trials", trials, lo=1)
        self.guard = bool(guard)
        self.pool_fraction = _validate.real("pool_fraction", pool_fraction, lo=0.0, hi=1.0)
        self.entropy_models = _validate.choice("entropy_models", entropy_models, ("anchors", "all"))
        self.k = None if k is None else _validate.integer("k", k, lo=1, hi=254)
        self.seed = _validate.integer("seed", seed, lo=0)
        self.db: Database | None = None

    # --- fitting ---------------------------------------------------------------------------
    def fit(
        self, db: Database, *, anchors: Mapping[str, str] | None = None, progress: bool = False
    ) -> OpenWorld:
        """Delegates, then tau for detection and for identification, from database ``db``.

        anchors: mapping family -> the name of its vanilla model (any model of the database; for
        F(m, Psi) it lies outside the family). Default: the member named like the family, else
        the family's first model.
        """
        saved = dict(self.__dict__)
        try:
            return self._fit(db, anchors, progress)
        except BaseException:  # a failed (re)fit leaves the previous fit whole, not half replaced
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    def _fit(self, db, anchors, progress) -> OpenWorld:
        from .database import Database

        if not isinstance(db, Database):
            raise TypeError(f"db: expected a fastfp.fbi.Database, got {type(db).__name__}")
        k = db.k if self.k is None else self.k
        if k > db.k:
            raise ValueError(
                f"k: {k} exceeds the database's k = {db.k} (a database built with another k)"
            )
        if len(db.family_names) < 2:
            raise ValueError("db: needs at least two families (negative pairs set the threshold)")
        if self.L > db.num_inputs:
            raise ValueError(
                f"L: {self.L} queries asked, but the database has only {db.num_inputs} inputs"
            )
        self.db, self.k_ = db, k
        self.families_ = db.family_names
        self.reference_ = db.reference
        self.sym_ = db.symbols(k)  # (M, N) uint8
        self.correct_ = self.sym_ == 1
        # input-major copy: gathering L inputs of every model is L row copies, not M * L bytes
        self._sym_t = np.ascontiguousarray(self.sym_.T)  # (N, M)
        if anchors is not None and not hasattr(anchors, "items"):
            raise TypeError(
                f"anchors: expected a mapping family -> model name, got {type(anchors).__name__}"
            )
        anchors = {} if anchors is None else dict(anchors)
        unknown = [f for f in anchors if f not in self.families_]
        if unknown:
            raise ValueError(f"anchors: unknown family names {unknown}")
        strangers = [str(a) for a in anchors.values() if a not in db.names]
        if strangers:
            raise ValueError(f"anchors: models {strangers} are not in the database")
        self.anchors_ = {}
        for f in self.families_:
            members = db.members(f)
            if f in anchors:
                self.anchors_[f] = db.index(anchors[f])
            else:
                self.anchors_[f] = (
                    db.index(f) if f in db.names and db.index(f) in members else members[0]
                )
        ranked = [self.anchors_[f] for f in self.families_]
        if self.entropy_models == "all":
            ranked = list(range(db.num_models))
        self.entropy_ = label_entropy(db.topk[ranked, :, 0])
        self.guard_ = _Guard(self.correct_)
        self.delegates_ = self._delegates()
        # every family's delegates stacked in one list: one pairwise_rajski call per query set
        self.delegate_rows_ = np.asarray(
            [r for f in self.families_ for r in self.delegates_[f]], dtype=np.int64
        )
        sizes = [len(self.delegates_[f]) for f in self.families_]
        self.delegate_starts_ = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        # the same, padded to one width by repeating a family's first delegate (min unchanged)
        width = max(sizes)
        self.delegate_table_ = np.asarray(
            [
                self.delegates_[f] + self.delegates_[f][:1] * (width - len(self.delegates_[f]))
                for f in self.families_
            ],
            dtype=np.int64,
        )
        rng = np.random.default_rng(self.seed)
        fam_of = np.array([self.families_.index(f) for f in db.families])
        other = fam_of[:, None] != np.arange(len(self.families_))[None, :]  # (M, nF)
        neg, pos, neg_id = [], [], []
        self.samples_: dict[str, list] = {"detect": [], "identify": []}
        self.detect_distances_ = []  # per draw: (M, nF) distance of every model to every family
        from tqdm.auto import tqdm

        for _ in tqdm(range(self.trials), desc="fbi open world fit", disable=not progress):
            draws, D, S, D_id = self.trial(rng)
            self.samples_["detect"].append(dict(zip(self.families_, draws, strict=True)))
            self.detect_distances_.append(D)
            neg.append(D[other])
            pos.append(D[~other])
            self.samples_["identify"].append(S)
            neg_id.append(np.where(other, D_id, np.inf).min(1))
        neg_all, neg_id_all = np.concatenate(neg), np.concatenate(neg_id)
        self.tau_ = _threshold(neg_all, self.fpr)
        self.fpr_ = _actual_fpr(neg_all, self.tau_)
        self.detect_tpr_ = float(np.mean(np.concatenate(pos) < self.tau_))
        self.tau_identify_ = _threshold(neg_id_all, self.fpr)
        self.fpr_identify_ = _actual_fpr(neg_id_all, self.tau_identify_)
        self._deployed: dict = {}  # family (None: identification) -> (queries, delegate symbols)
        return self

    def queries(self, family: str | None = None) -> np.ndarray:
        """The L deployment queries (input indices) of ``family``'s detection, or of
        identification (None): in the paper Alice picks her L queries once, so a fitted open world
        asks every black box the same inputs (``detect`` / ``identify`` without ``seed``), which
        a black box's answer cache and an export of the query images rely on. Drawn on first use
        from the fit's seed (a stream of its own: the fit's trials and tau are unchanged)."""
        return self._deployment(family)[0].copy()

    def _deployment(self, family: str | None) -> tuple[np.ndarray, np.ndarray]:
        """(queries (L,), the delegates' symbols on them): identification against every
        delegate stacked (``delegate_rows_``), detection against ``family``'s own."""
        self._check_fitted()
        if family is not None and family not in self.families_:
            raise ValueError(
                f"family: unknown family {family!r} (known: {', '.join(self.families_)})"
            )
        if family not in self._deployed:
            # one stream per query set, fixed by (seed, family): independent of the draw order
            key = 0 if family is None else 1 + self.families_.index(family)
            S = self.sample(family, np.random.default_rng([self.seed, 1, key]))
            rows = self.delegate_rows_ if family is None else self.delegates_[family]
            self._deployed[family] = (S, np.ascontiguousarray(self.sym_[rows][:, S]))
        return self._deployed[family]

    def trial(
        self, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One trial of ``fit`` (repeated ``trials`` times): L queries per family drawn with the
        detection selection, every model's compound distance to every family on that family's
        queries, then one identification draw and every model's distance to every family on it.

        Returns (draws (nF, L), detection distances (M, nF), identification queries (L,),
        identification distances (M, nF)); usable once delegates are known (after ``fit``)."""
        if getattr(self, "delegate_table_", None) is None:
            raise RuntimeError("OpenWorld: call fit(db) first")
        draws = np.stack([self.sample(f, rng) for f in self.families_])  # (nF, L)
        Z = np.ascontiguousarray(self._sym_t[draws].transpose(0, 2, 1))  # (nF, M, L)
        dele = self.sym_[self.delegate_table_[:, :, None], draws[:, None, :]]  # (nF, d, L)
        D = self._pairwise(Z, dele).min(-1).T  # (M, nF)
        S = self.sample(None, rng)
        return draws, D, S, self._compound(np.ascontiguousarray(self._sym_t[S].T), S)

    def detection_scores(self, *, include_delegates: bool = False) -> list:
        """The detection pairs of ``fit``, one ``(distances, labels)`` per draw: every (model,
        family) pair on that family's L queries, label 1 for a member, 0 for a negative (the pairs
        tau is set from). A delegate is at distance 0 from its own family, so by default its
        positive pair is left out (``detect_tpr_`` keeps it)."""
        self._check_fitted()
        fam_of = np.array([self.families_.index(f) for f in self._check_fitted().families])
        member = fam_of[:, None] == np.arange(len(self.families_))[None, :]  # (M, nF)
        keep = np.ones_like(member)
        if not include_delegates:
            for j, f in enumerate(self.families_):
                keep[self.delegates_[f], j] = False
        return [(D[keep], member[keep].astype(np.int64)) for D in self.detect_distances_]

    def _delegates(self) -> dict:
        """Close / median / far members by their distance to the family's anchor on all inputs
        (eq. 23), from one exact call: every model against every anchor."""
        db = self._check_fitted()
        anchors = [self.anchors_[f] for f in self.families_]
        D = self._pairwise(self.sym_, self.sym_[anchors])
        out = {}
        for j, f in enumerate(self.families_):
            members = db.members(f)
            order = [members[i] for i in np.argsort(D[members, j], kind="stable")]
            pick = {"close": order[0], "median": order[(len(order) - 1) // 2], "far": order[-1]}
            out[f] = list(dict.fromkeys(pick[kind] for kind in self.delegate_kinds))
        return out

    def _check_fitted(self) -> Database:
        if self.db is None:
            raise RuntimeError("OpenWorld: call fit(db) first")
        return self.db

    def sample(self, family: str | None, rng: np.random.Generator) -> np.ndarray:
        """L input indices for a detection of ``family`` (None: for identification)."""
        strategy = self.identify_selection if family is None else self.selection
        anchor = None if family is None else self.correct_[self.anchors_[family]]
        return _select(
            self.L,
            strategy,
            [rng],
            self.correct_,
            anchor,
            self.entropy_,
            self.pool_fraction,
            self.guard,
            self.guard_,
        )[0]

    def _sample_many(self, seeds: Sequence[int | None]) -> list[np.ndarray]:
        """``[sample(None, numpy.random.default_rng(s)) for s in seeds]``, covers in lockstep."""
        rngs = [np.random.default_rng(s) for s in seeds]
        return _select(
            self.L,
            self.identify_selection,
            rngs,
            self.correct_,
            None,
            self.entropy_,
            self.pool_fraction,
            self.guard,
            self.guard_,
        )

    def _compound(self, Z: np.ndarray, S: np.ndarray) -> np.ndarray:
        """Compound distance (min over delegates) of symbol rows Z (n, L) on inputs S to every
        family: (n, nF), from one exact pairwise_rajski call against all delegates stacked (each
        distance depends only on its pair: the same bits as one call per family)."""
        D = self._pairwise(Z, self.sym_[self.delegate_rows_][:, S])
        return np.minimum.reduceat(D, self.delegate_starts_, axis=1)

    def _pairwise(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        """Exact all-pairs scores, smaller is closer: Rajski, -I for "mi", or mi_min. The
        default (Rajski) calls ``pairwise_rajski`` directly: no extra work on its path."""
        if self.distance == "rajski":
            return np.asarray(pairwise_rajski(A, B, k=self.k_, exact=True))
        d = np.asarray(pairwise_distance(A, B, k=self.k_, distance=self.distance, exact=True))
        return np.negative(d) if self.distance == "mi" else d

    # --- black box -------------------------------------------------------------------------
    def _symbols(self, blackbox, S: np.ndarray) -> np.ndarray:
        """Query the black box on inputs S and map its answers through S_k."""
        return surjection(self._labels(blackbox, S), self.reference_[S], self.k_)

    def _labels(self, blackbox, S: np.ndarray) -> np.ndarray:
        """The black box's top-k labels (L, k) int64 on inputs S, checked."""
        db = self._check_fitted()
        if type(blackbox).__module__.startswith("torch.nn") or hasattr(blackbox, "parameters"):
            raise TypeError(
                "blackbox: got a model; pass its outputs on the database's inputs "
                "(fastfp.fbi.query_topk) or a callable input indices -> top-k labels"
            )
        if isinstance(blackbox, str):
            labels = db.topk[db.index(blackbox)][S]
        elif callable(blackbox):
            labels = np.asarray(blackbox(S))
        else:
            full = np.asarray(blackbox)
            if full.ndim == 1:
                full = full[:, None]
            if full.ndim != 2 or full.shape[0] != db.num_inputs:
                raise ValueError(
                    f"blackbox: expected its outputs on all N = {db.num_inputs} inputs, "
                    f"(N,) or (N, k), got shape {full.shape}"
                )
            labels = full[S]
        if (
            labels.dtype.kind not in "iub"
        ):  # astype(int64) would truncate scores into labels silently
            raise TypeError(f"blackbox: expected integer top-k labels, got {labels.dtype}")
        if labels.ndim == 1:
            labels = labels[:, None]
        if labels.ndim != 2:
            raise ValueError(f"blackbox: expected (L,) or (L, k) labels, got shape {labels.shape}")
        if labels.shape[0] != len(S):
            raise ValueError(f"blackbox: answered {labels.shape[0]} outputs for {len(S)} queries")
        if labels.shape[1] < self.k_:
            raise ValueError(
                f"blackbox: gives top-{labels.shape[1]} outputs, but the open world was fitted "
                f"with k = {self.k_} (a database built with another k)"
            )
        return labels[:, : self.k_].astype(np.int64)

    def detect(self, blackbox: OpenWorldSuspect, family: str, *,
               seed: int | None = None) -> OpenDetection:
        """Is the black box a variant of ``family``? blackbox: a database model name (simulation),
        its outputs (N,) / (N, c) on every input, or a callable ``indices -> (L, c)`` top-k
        labels. Asks the family's deployment queries (``queries(family)``), the same L inputs at
        every call; ``seed`` draws a fresh query set instead (the fit's trials do the same)."""
        self._check_fitted()
        if family not in self.families_:
            raise ValueError(
                f"family: unknown family {family!r} (known: {', '.join(self.families_)})"
            )
        seed = arrays.check_seed(seed)
        if seed is None:  # the deployment queries, their delegates' symbols held since fit
            S, dele = self._deployment(family)
        else:
            S = self.sample(family, np.random.default_rng(seed))
            dele = self.sym_[self.delegates_[family]][:, S]
        z = self._symbols(blackbox, S)
        d = float(self._pairwise(z[None], dele).min())
        return OpenDetection(family, d < self.tau_, d, self.tau_, S.copy(), self.fpr_)

    def identify(self, blackbox: OpenWorldSuspect, *,
                 seed: int | None = None) -> OpenIdentification:
        """Which family, or abstain (H0 when every distance >= tau; ties abstain too). Asks the
        deployment queries (``queries()``) unless ``seed`` asks for a fresh draw."""
        return self.identify_many([blackbox], seeds=[seed])[0]

    def identify_many(
        self, blackboxes: Iterable[OpenWorldSuspect], *, seeds: Sequence[int | None] | None = None
    ) -> list[OpenIdentification]:
        """``[identify(b, seed=s) for b, s in zip(blackboxes, seeds)]``, with the same results,
        computed in batches. seeds: one per black box, or None. A None seed (the default) asks
        the deployment queries ``queries()``: all of those black boxes in one exact
        pairwise_rajski call against the delegates held since fit. A seed draws a fresh query
        set: the draws' greedy covers in lockstep, then one exact batched call (each distance
        depends only on its pair: the same bits as one call per black box)."""
        self._check_fitted()
        blackboxes = list(blackboxes)
        seeds = [None] * len(blackboxes) if seeds is None else list(seeds)
        if len(seeds) != len(blackboxes):
            raise ValueError(
                f"seeds: expected one per black box ({len(blackboxes)}), got {len(seeds)}"
            )
        seeds = [arrays.check_seed(s, "seeds") for s in seeds]
        drawn = [s for s in seeds if s is not None]
        fresh = iter(self._sample_many(drawn) if drawn else [])
        fixed = self._deployment(None) if len(drawn) < len(seeds) else None
        draws = [fixed[0] if fixed is not None and s is None else next(fresh) for s in seeds]
        labels = [self._labels(b, S) for b, S in zip(blackboxes, draws, strict=True)]
        if not draws:
            return []
        # every check done: one surjection and one exact distance call per kind of query set
        S_all = np.stack(draws)  # (n, L)
        Z = surjection(np.stack(labels), self.reference_[S_all], self.k_)  # (n, L)
        D = np.empty((len(draws), self.delegate_rows_.size), dtype=np.float64)
        on_fixed = np.array([s is None for s in seeds])
        if fixed is not None:
            D[on_fixed] = self._pairwise(Z[on_fixed], fixed[1])
        if drawn:
            S_new = S_all[~on_fixed]
            dele = self.sym_[self.delegate_rows_[None, :, None], S_new[:, None, :]]  # (n, d, L)
            D[~on_fixed] = self._pairwise(Z[~on_fixed][:, None, :], dele)[:, 0]
        D = np.minimum.reduceat(D, self.delegate_starts_, axis=1)  # (n, nF)
        return [
            self._decide(dict(zip(self.families_, d.tolist(), strict=True)), S.copy())
            for d, S in zip(D, draws, strict=True)
        ]

    def _decide(self, dist: dict, S: np.ndarray) -> OpenIdentification:
        best = min(dist.values())
        winners = [f for f, d in dist.items() if d == best]
        fpr = getattr(self, "fpr_identify_", float("nan"))
        if best >= self.tau_identify_:
            return OpenIdentification(None, "abstain-h0", dist, self.tau_identify_, S, fpr)
        if len(winners) > 1:
            return OpenIdentification(None, "abstain-tie", dist, self.tau_identify_, S, fpr)
        return OpenIdentification(winners[0], "identified", dist, self.tau_identify_, S, fpr)

    def report(self) -> dict:
        """The fitted settings, thresholds and delegates, JSON-ready."""
        db = self._check_fitted()
        return {
            "L": self.L,
            "k": self.k_,
            "selection": self.selection,
            "identify_selection": self.identify_selection,
            "delegates": list(self.delegate_kinds),
            "fpr": self.fpr,
            "distance": self.distance,
            "tau": self.tau_,
            "tau_identify": self.tau_identify_,
            "actual_fpr": self.fpr_,
            "actual_fpr_identify": self.fpr_identify_,
            "threshold_rule": THRESHOLD_RULE,
            "detect_tpr_on_database": self.detect_tpr_,
            "delegate_models": {f: [db.names[i] for i in r] for f, r in self.delegates_.items()},
        }


def label_entropy(top1: Any) -> np.ndarray:
    """Entropy (nats) of the models' top-1 labels on each input: (M, N) -> (N,) (the ranking of
    the Entropy selection)."""
    top1 = np.asarray(top1)
    if top1.ndim != 2:
        raise ValueError(f"top1: expected (M, N) labels, got shape {top1.shape}")
    return np.asarray(entropy(np.ascontiguousarray(top1.T).astype(np.int64)))
