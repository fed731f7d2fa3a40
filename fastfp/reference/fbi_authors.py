"""Literal twin of the FBI authors' released open-world scripts (``t-maho/FBI_fingerprinting``).

Plain Python / numpy, step by step, as slow as it needs to be: the oracle that a fast
``protocol="authors"`` must equal cell by cell. Each step names the script and the lines it
follows:

- ``unknown/detection.py`` (Tables III, IV, V): accuracy filter, removal of single-member
  families, delegate on all images, image selection ("random", "random_wrong_0.5",
  "random_wrong_0.7", "entropy_label"), pooled list-order ROC per trial, curves averaged
  index-wise over trials (the read-out at 5 % FPR is the commented block at the script's end);
- ``unknown/identification_pure.py`` (Table VI): 30 known + 5 unknown families per repeat
  (``--unknown 5``), first argmax, 30 repeats (``n_times = 30``);
- ``utils/distances.py``: ``mutual_information`` (I, larger is closer, their default) and
  ``mutual_distance`` (1 - I / min(H), smaller is closer); here ``"mi"``, ``"mi_min"`` and the
  paper's ``"rajski"``, computed by :func:`fastfp.reference.fbi.distance` from contingency
  tables. ``unknown/identification_pure_compound.py`` is not reproduced: its ``get_delegate``
  returns None and it queries live models (no released predictions cover it).

Departures, all forced by the setting and documented here:

- Randomness: the scripts use Python's global ``random``; here every run draws from ONE
  ``numpy.random.Generator`` (``numpy.random.default_rng(seed)``), created afresh for each
  run (one run = one invocation of the script for one configuration), in this order:

  detection (``detection``), for trial in range(trials), for family in family order:
    - "30/70", "50/50": ``right = rng.permutation(right)`` then ``wrong = rng.permutation(wrong)``
      (the delegate's correctly / wrongly classified image indices, ascending), once per family
      and trial; the images of every L are ``wrong[:int(L * p)] + right[:L - int(L * p)]``
      (p = 0.7 / 0.5), nested prefixes, no further draw;
    - "all", "entropy": for L in Ls: ``rng.choice(pool, size=L, replace=False)`` (pool:
      ``arange(N)``, or the Entropy head in ranking order), independent per L.
  The scripts' per-trial ``random.shuffle(range(N))`` only feeds ``random.sample`` (whose
  result is uniform either way) and is not drawn.

  identification (``identification``), for repeat in range(repeats):
    ``images = rng.choice(pool, size=max(Ls), replace=False)`` then
    ``kept = rng.choice(nF, size=nF - unknown, replace=False)`` (the known families, in draw
    order: the first argmax depends on it); the images of L are ``images[:L]``.

- Distances are float64 in nats (the scripts: float32, bits; a constant factor that changes
  no ranking), and every distance is rounded to 12 decimals (``numpy.round(d, 12)``) before
  it is sorted, compared or thresholded, so that tables equal up to a relabelling tie in any
  implementation whatever their last bits. A fast twin must round the same way.
- Identification's rate: the script saves (best score, family, expected family) per model and
  stops; the paper (IV-D3a) sets tau so that at most 5 % of the negative cases (models of the
  5 unknown families) are accepted, abstains when every score is beyond it, and reports the
  success rate over the models of known families. Here tau is the floor(0.05 n)-th smallest
  negative score (smaller is closer), pooled over repeats, accept iff score < tau; the rate
  without any threshold (the paper's 94.7 / 99.1 %) is reported beside it.

Rates are fractions in [0, 1].
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastfp.reference import fbi as ref

# fastfp's names -> the scripts' ``--sort_images`` / ``--delegate`` values
SELECTIONS = {"all": "random", "50/50": "random_wrong_0.5", "30/70": "random_wrong_0.7",
              "entropy": "entropy_label"}
DELEGATES = {"close": "close", "median": "middle", "far": "far"}
DISTANCES = ref.DISTANCES

# one run of unknown/detection.py per (selection, delegate), every L at once
DETECTION_RUNS = (("all", "close"), ("50/50", "close"), ("30/70", "close"), ("entropy", "close"),
                  ("30/70", "median"), ("30/70", "far"))
# the paper's detection cells (F(m), top-1) -> (selection, delegate, L) of ``detection_table``
PAPER_CELLS = {
    "III All": ("all", "close", 100), "III 50/50": ("50/50", "close", 100),
    "III 30/70": ("30/70", "close", 100), "III Entropy": ("entropy", "close", 100),
    "IV close": ("30/70", "close", 100), "IV median": ("30/70", "median", 100),
    "IV far": ("30/70", "far", 100), "V L=20": ("30/70", "close", 20),
    "V L=50": ("30/70", "close", 50), "V L=100": ("30/70", "close", 100),
    "V L=500": ("30/70", "close", 500),
}
DECIMALS = 12
# ``--max_drop -0.15``: a variant stays when acc / acc(vanilla) - 1 > -0.15
MAX_DROP = 0.15


# --- data ---------------------------------------------------------------------------------------


def read_release(
    folder: str | Path,
) -> tuple[np.ndarray, list[str], list[str], dict[str, str], np.ndarray]:
    """A release-layout folder -> (top (M, N, k), names, families, vanilla, truth): one
    ``<name>.npy`` per model in sorted file order, ``ground_truth.npy``; a name ``FAMILY`` is
    the vanilla model, ``VARIANT-FAMILY-...`` a variant (``utils/model.py``
    ``get_original_and_variation``: the family is the second ``-`` field)."""
    folder = Path(folder)
    truth = np.load(folder / "ground_truth.npy", allow_pickle=False)
    names, tops = [], []
    for path in sorted(folder.iterdir()):
        if path.suffix != ".npy" or path.name == "ground_truth.npy":
            continue
        arr = np.load(path, allow_pickle=False)
        names.append(path.stem)
        tops.append(arr[:, None] if arr.ndim == 1 else arr)
    k = min(t.shape[1] for t in tops)
    families = [n if len(n.split("-")) == 1 else n.split("-")[1] for n in names]
    vanilla = {f: f for f in families}
    return np.stack([t[:, :k] for t in tops]), names, families, vanilla, truth


def _check(top, names, families, vanilla, truth):
    top = np.asarray(top)
    if top.ndim == 2:
        top = top[:, :, None]
    if top.ndim != 3 or top.dtype.kind not in "iu":
        raise ValueError(f"top: expected (models, images) or (models, images, k) integer labels, "
                         f"got {top.dtype} {top.shape}")
    if truth is None:
        raise ValueError("truth: the authors' protocol needs the ground truth")
    truth = np.asarray(truth)
    if truth.shape != (top.shape[1],):
        raise ValueError(f"truth: expected ({top.shape[1]},) labels, got shape {truth.shape}")
    names, families = list(names), list(families)
    if len(names) != top.shape[0] or len(families) != top.shape[0]:
        raise ValueError(f"names, families: expected {top.shape[0]} each (one per model), got "
                         f"{len(names)} and {len(families)}")
    if len(set(names)) != len(names):
        raise ValueError("names: duplicate model names")
    for f in dict.fromkeys(families):
        v = vanilla.get(f) if hasattr(vanilla, "get") else None
        if v not in names or families[names.index(v)] != f:
            raise ValueError(f"vanilla: family {f!r} has no vanilla model among its members")
    return top, names, families, dict(vanilla), truth


def prepare(top: Any, names: Sequence[str], families: Sequence[str], vanilla: Mapping[str, str],
            truth: Any, *, max_drop: float = MAX_DROP, remove_single: bool = True) -> dict:
    """The scripts' preamble: accuracy filter, family table, symbols.

    Returns a dict: ``models`` (kept names, in input order), ``rows`` (their rows of ``top``),
    ``families`` ({family: {"models": [...], "pure": vanilla}} in first-appearance order,
    single-member families removed when ``remove_single``), ``originals`` (indices in
    ``models`` of the vanilla models), ``symbols`` ((models, N) int, ``matrix_gt_index``),
    ``top`` (the kept rows), ``truth``.
    """
    top, names, fams, vanilla, truth = _check(top, names, families, vanilla, truth)
    # detection.py: accuracies = {models[i]: (matrix[:, i, 0] == truth).sum(0) ...}
    acc = {names[i]: (top[i, :, 0] == truth).sum(0) for i in range(len(names))}
    new_models: list[str] = []
    families_d: dict[str, dict[str, Any]] = {}
    for i, m in enumerate(names):
        o = vanilla[fams[i]]
        with np.errstate(divide="ignore", invalid="ignore"):
            acc_drop = acc[m] / acc[o] - 1  # detection.py: acc_drop = accuracies[m] / ... - 1
        if acc_drop > -max_drop:  # detection.py: if acc_drop > args.max_drop (-0.15)
            f = fams[i]  # get_family_name: "pure" families
            if f not in families_d:
                families_d[f] = {"models": [], "pure": o}
            new_models.append(m)
            families_d[f]["models"].append(m)
    rows = [names.index(m) for m in new_models]  # models_indexes
    # originals_index: the models without a variation, i.e. the vanilla models
    originals = [i for i, m in enumerate(new_models) if vanilla[fams[names.index(m)]] == m]
    kept = top[rows]
    if remove_single:
        # detection.py: remove_family_below = 1; families with <= 1 member are deleted from
        # the family table, their models stay in the list (negatives for every family)
        for f in list(families_d):
            if len(families_d[f]["models"]) <= 1:
                del families_d[f]
    return {"models": new_models, "rows": rows, "families": families_d, "originals": originals,
            "symbols": gt_index(kept, truth), "top": kept, "truth": truth}


def gt_index(top: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``matrix_gt_index``: for each model and image, the 0-based rank of the true class in the
    top-k labels, k when absent (a relabelling of S_k: the same information)."""
    M, N, k = top.shape
    out = np.full((M, N), k, dtype=np.int64)  # np.ones(matrix.shape[:2]) * top_k
    for i in range(N):  # for row_i, row in enumerate(matrix)
        models_ind, truth_ind = np.where(top[:, i, :] == truth[i])
        out[models_ind, i] = truth_ind
    return out


# --- distances, delegates, image selection -------------------------------------------------------


def value(a: Sequence[int], b: Sequence[int], distance: str) -> float:
    """The script's ``model_distance(a, b)``, rounded (see the module's note on ties)."""
    return float(np.round(ref.distance(list(a), list(b), distance), DECIMALS))


def best_of(distance: str) -> str:
    """``distance_best`` of ``get_model_distance``: "max" for mutual information."""
    return "max" if distance == "mi" else "min"


def pick_delegate(prep: dict, family: str, kind: str, distance: str) -> str:
    """detection.py ``get_delegate(fmodels, pure_model)``: members sorted by name, each one's
    distance to the vanilla model over ALL images, sorted stably; close / far the ends (by
    orientation), "median" (the script's "middle") index ``int(len / 2)`` of the ascending list."""
    models, sym = prep["models"], prep["symbols"]
    fmodels = sorted(prep["families"][family]["models"])  # fmodels = sorted(fmodels)
    v_o = sym[models.index(prep["families"][family]["pure"])]
    infos = [(i, value(v_o, sym[models.index(m)], distance)) for i, m in enumerate(fmodels)]
    infos = sorted(infos, key=lambda x: x[1])  # stable: ties keep name order
    best = best_of(distance)
    if kind == "far":
        return fmodels[infos[0][0]] if best == "max" else fmodels[infos[-1][0]]
    if kind == "close":
        return fmodels[infos[-1][0]] if best == "max" else fmodels[infos[0][0]]
    if kind == "median":
        return fmodels[infos[int(len(fmodels) / 2)][0]]
    raise ValueError(f"delegate: expected one of {', '.join(map(repr, DELEGATES))}, got {kind!r}")


def entropy_ranking(prep: dict) -> list[int]:
    """get_score("entropy_label"): every image ranked by the LIST of its terms -p log2 p over
    the vanilla models' top-k outputs, in first-appearance order, compared lexicographically
    (not by their sum), descending, stable. The pool is the head ``int(N * 0.2)``."""
    top = prep["top"]
    scores = []
    for i in range(top.shape[1]):  # for v in matrix[:, originals_index]
        v = [tuple(int(x) for x in top[o, i]) for o in prep["originals"]]
        counter = Counter(v)  # Counter([str(e) for e in v]): first-appearance order
        count = [e / len(v) for e in counter.values()]
        scores.append([-e * math.log(e, 2) for e in count if e != 0])
    return sorted(range(top.shape[1]), key=lambda i: scores[i], reverse=True)


def entropy_pool(prep: dict) -> list[int]:
    """The Entropy selection's images: the head ``int(N * 0.2)`` of ``entropy_ranking``."""
    ranking = entropy_ranking(prep)
    return ranking[: int(len(ranking) * 0.2)]  # e = int(len(indexes) * 0.2)


def split_lists(prep: dict, delegate: str) -> tuple[list[int], list[int]]:
    """The delegate's (``alice_model``) correctly and wrongly classified images, ascending:
    ``np.nonzero(matrix[:, alice_model_ind, 0] == truth)`` and ``!=``."""
    ok = prep["top"][prep["models"].index(delegate), :, 0] == prep["truth"]
    return [int(x) for x in np.nonzero(ok)[0]], [int(x) for x in np.nonzero(~ok)[0]]


def split_images(right: Sequence[int], wrong: Sequence[int], L: int,
                 p_wrong: float) -> list[int]:
    """``n_wrong = int(n_images * p)``; ``indexes_wrong[:n_wrong] + indexes_right[:n_right]``."""
    n_wrong = int(L * p_wrong)
    n_right = L - n_wrong
    return list(wrong[:n_wrong]) + list(right[:n_right])


# --- ROC read-out ----------------------------------------------------------------------------


def roc(labels: Sequence[bool], infos: Sequence[float],
        best: str) -> tuple[list[float], list[float]]:
    """One trial's ROC, detection.py: the pooled (label, distance) list sorted stably from the
    farthest (ties keep list order), then walked: each step removes one pair from the
    positives; returns (roc_fp, roc_tp), one point per pair."""
    d = list(zip(labels, infos, strict=True))
    if best == "min":
        d = sorted(d, key=lambda x: x[1], reverse=True)
    else:
        d = sorted(d, key=lambda x: x[1])
    n_tp = sum(labels)
    n_fp = len(d) - n_tp
    n_positive, n_neg = n_tp, n_fp
    roc_fp, roc_tp = [], []
    for lab, _ in d:
        if not lab:
            n_fp -= 1
        else:
            n_tp -= 1
        roc_fp.append(n_fp / n_neg)
        roc_tp.append(n_tp / n_positive)
    return roc_fp, roc_tp


def read_out(roc_tps: Sequence[Sequence[float]], roc_fps: Sequence[Sequence[float]],
             fpr: float = 0.05) -> dict:
    """Curves averaged index-wise over trials; the mean TPR (and its std over trials) at the
    first index where the mean FPR drops below ``fpr`` (the script's closing block)."""
    tp = np.mean(roc_tps, 0)
    std = np.std(roc_tps, 0)
    fp = np.mean(roc_fps, 0)
    for i, e in enumerate(fp.flatten()):
        if e < fpr:
            return {"mean": float(tp[i]), "std": float(std[i]), "fpr": float(e),
                    "trials": len(roc_tps)}
    raise AssertionError("unreachable: the last point of every curve has FPR 0")


# --- detection (unknown/detection.py) ----------------------------------------------------------


def detection(prep: dict, selection: str, delegate: str, Ls: Sequence[int], trials: int,
              rng: np.random.Generator, distance: str = "mi", fpr: float = 0.05) -> dict:
    """One run of detection.py for one (selection, delegate): {L: read-out}."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection: expected one of {', '.join(map(repr, SELECTIONS))}, got "
                         f"{selection!r}")
    models, sym, fams = prep["models"], prep["symbols"], prep["families"]
    best = best_of(distance)
    delegates = {f: pick_delegate(prep, f, delegate, distance) for f in fams}
    pool: np.ndarray | None = None
    if selection == "entropy":
        pool = np.asarray(entropy_pool(prep), dtype=np.int64)
    elif selection == "all":
        pool = np.arange(sym.shape[1])
    if pool is not None and max(Ls) > len(pool):
        raise ValueError(f"Ls: {max(Ls)} images asked, but the {selection!r} pool has "
                         f"{len(pool)}")
    results: dict[int, dict[str, list]] = {L: {"roc_TP": [], "roc_FP": []} for L in Ls}
    for _ in range(trials):  # for time_i in range(n_times)
        data_roc: dict[int, dict[str, list]] = {L: {"infos": [], "labels": []} for L in Ls}
        for f in fams:  # for f in list(families.keys())
            alice = delegates[f]  # alice_model = get_delegate(...)
            a_i = models.index(alice)
            if selection in ("50/50", "30/70"):  # image_score_name.startswith("random_wrong_")
                right, wrong = split_lists(prep, alice)
                right = [int(x) for x in rng.permutation(np.asarray(right, dtype=np.int64))]
                wrong = [int(x) for x in rng.permutation(np.asarray(wrong, dtype=np.int64))]
            for L in Ls:  # for n_images in x
                if selection in ("50/50", "30/70"):
                    images = split_images(right, wrong, L, 0.7 if selection == "30/70" else 0.5)
                else:  # random.sample(images_indexes, n_images)
                    assert pool is not None
                    images = [int(x) for x in rng.choice(pool, size=L, replace=False)]
                v_o = sym[a_i, images]
                for m_i, m in enumerate(models):  # every model, the delegate included
                    data_roc[L]["infos"].append(value(v_o, sym[m_i, images], distance))
                    data_roc[L]["labels"].append(m in fams[f]["models"])
        for L in Ls:
            roc_fp, roc_tp = roc(data_roc[L]["labels"], data_roc[L]["infos"], best)
            results[L]["roc_TP"].append(roc_tp)
            results[L]["roc_FP"].append(roc_fp)
    return {L: read_out(results[L]["roc_TP"], results[L]["roc_FP"], fpr) for L in Ls}


def detection_table(top: Any, names: Sequence[str], families: Sequence[str],
                    vanilla: Mapping[str, str], truth: Any, *, seed: int = 0, trials: int = 10,
                    Ls: Sequence[int] = (20, 50, 100, 500),
                    runs: Sequence[tuple[str, str]] = DETECTION_RUNS, distance: str = "mi",
                    max_drop: float = MAX_DROP, fpr: float = 0.05) -> dict:
    """Tables III-V the authors' way: one run per (selection, delegate) in ``runs``, each from
    its own ``numpy.random.default_rng(seed)``; returns
    {(selection, delegate, L): {"mean", "std", "fpr", "trials"}} (see ``PAPER_CELLS``).
    trials: the script's ``n_times`` (10)."""
    if distance not in DISTANCES:
        raise ValueError(f"distance: expected one of {', '.join(map(repr, DISTANCES))}, got "
                         f"{distance!r}")
    for selection, delegate in runs:
        if selection not in SELECTIONS or delegate not in DELEGATES:
            raise ValueError(f"runs: ({selection!r}, {delegate!r}) is not a (selection, "
                             f"delegate) of {', '.join(SELECTIONS)} x {', '.join(DELEGATES)}")
    prep = prepare(top, names, families, vanilla, truth, max_drop=max_drop, remove_single=True)
    if len(prep["families"]) < 2:
        raise ValueError("families: the authors' detection needs two families of >= 2 members")
    out = {}
    for selection, delegate in runs:
        rng = np.random.default_rng(seed)
        for L, cell in detection(prep, selection, delegate, Ls, trials, rng, distance,
                                 fpr).items():
            out[(selection, delegate, L)] = cell
    return out


# --- identification (unknown/identification_pure.py) -------------------------------------------


def identification_entries(prep: dict, Ls: Sequence[int], repeats: int,
                           rng: np.random.Generator, *, selection: str = "entropy",
                           delegate: str = "close", unknown: int = 5,
                           distance: str = "mi") -> dict:
    """The script's loop: per L, per repeat, one (best info, family, expected) per model.

    As in the script, the family names are read from the FULL delegate list at the index of
    the kept list (``delegate_families[best_i]``, ``delegate_families[labels.index(True)]``):
    both sides are mapped the same way, so ``family == expected`` is exactly "the argmax is
    the model's own family"; expected is "unknown" for the models of the left-out families."""
    models, sym, fams = prep["models"], prep["symbols"], prep["families"]
    delegate_families = list(fams)
    delegate_models = [pick_delegate(prep, f, delegate, distance) for f in fams]
    if unknown < 1 or unknown >= len(delegate_families):
        raise ValueError(f"unknown: expected 1..{len(delegate_families) - 1} left-out families, "
                         f"got {unknown}")
    if selection not in ("all", "entropy"):
        raise ValueError(f"selection: expected 'all' or 'entropy', got {selection!r}")
    pool = (np.asarray(entropy_pool(prep), dtype=np.int64) if selection == "entropy"
            else np.arange(sym.shape[1]))
    if max(Ls) > len(pool):
        raise ValueError(f"Ls: {max(Ls)} images asked, but the {selection!r} pool has "
                         f"{len(pool)}")
    best = best_of(distance)
    out: dict[int, list] = {L: [] for L in Ls}
    for _ in range(repeats):  # for time_i in range(n_times)
        images = [int(x) for x in rng.choice(pool, size=max(Ls), replace=False)]
        kept = [int(x) for x in rng.choice(len(delegate_families),
                                           size=len(delegate_families) - unknown,
                                           replace=False)]
        delegate_families_i = [delegate_families[i] for i in kept]
        mat = [sym[models.index(delegate_models[i])] for i in kept]
        entries: dict[int, list] = {L: [] for L in Ls}
        for m_i, m in enumerate(models):
            labels = [m in fams[f]["models"] for f in delegate_families_i]
            for L in Ls:
                infos = [value(d[images[:L]], sym[m_i, images[:L]], distance) for d in mat]
                pick = max(infos) if best == "max" else min(infos)
                best_i = infos.index(pick)  # the first argmax / argmin
                expectation = ("unknown" if True not in labels
                               else delegate_families[labels.index(True)])
                entries[L].append((infos[best_i], delegate_families[best_i], expectation))
        for L in Ls:
            out[L].append(entries[L])
    return out


def identification_rate(runs: Sequence[Sequence[tuple]], best: str, fpr: float = 0.05) -> dict:
    """Table VI's rate from the entries of every repeat: tau from the unknown families' models
    (pooled over repeats, at most ``fpr`` of them accepted), accept iff the score (-I for mi)
    is below tau, success = accepted and right, over the models of known families."""
    sign = -1.0 if best == "max" else 1.0
    negatives = [sign * s for run in runs for s, _, e in run if e == "unknown"]
    tau = ref.threshold(negatives, fpr) if negatives else math.inf
    with_t, without = [], []
    for run in runs:
        known = [(sign * s, f == e) for s, f, e in run if e != "unknown"]
        with_t.append(sum(ok and s < tau for s, ok in known) / len(known))
        without.append(sum(ok for _, ok in known) / len(known))
    return {"mean": float(np.mean(with_t)), "std": float(np.std(with_t)),
            "fpr": float(np.mean([s < tau for s in negatives])) if negatives else 0.0,
            "trials": len(runs), "tau": float(sign * tau),
            "no_threshold": float(np.mean(without)), "no_threshold_std": float(np.std(without))}


def identification_table(top: Any, names: Sequence[str], families: Sequence[str],
                         vanilla: Mapping[str, str], truth: Any, *, seed: int = 0,
                         repeats: int = 30, Ls: Sequence[int] = (50, 100, 500),
                         selection: str = "entropy", delegate: str = "close", unknown: int = 5,
                         distance: str = "mi", max_drop: float = MAX_DROP, fpr: float = 0.05,
                         remove_single: bool = False) -> dict:
    """Table VI the authors' way (identification_pure.py, Entropy, close delegate: the vanilla
    model or a member tied with it): {L: {"mean", "std", "fpr", "trials", "tau",
    "no_threshold", "no_threshold_std"}}, from ``numpy.random.default_rng(seed)``.
    remove_single: identification_pure.py keeps single-member families (detection.py and
    identification_pure_compound.py remove them)."""
    if distance not in DISTANCES:
        raise ValueError(f"distance: expected one of {', '.join(map(repr, DISTANCES))}, got "
                         f"{distance!r}")
    if delegate not in DELEGATES:
        raise ValueError(f"delegate: expected one of {', '.join(map(repr, DELEGATES))}, got "
                         f"{delegate!r}")
    prep = prepare(top, names, families, vanilla, truth, max_drop=max_drop,
                   remove_single=remove_single)
    rng = np.random.default_rng(seed)
    runs = identification_entries(prep, Ls, repeats, rng, selection=selection,
                                  delegate=delegate, unknown=unknown, distance=distance)
    return {L: identification_rate(runs[L], best_of(distance), fpr) for L in Ls}
