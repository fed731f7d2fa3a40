"""The FBI paper's evaluation protocol (Maho, Furon, Le Merrer, TIFS'23, Sect. IV-D) on a
database: the accuracy filter on variants, then Tables III-VI, mean +- std over trials.

- filter: a variant is kept when its top-1 accuracy is at least (1 - 0.15) x its vanilla
  model's (the 15 % relative accuracy drop, eq. (1); :func:`within_accuracy_drop` is the one rule
  fastfp applies, :func:`accuracy_filter` applies it to a database with ground truth).
- Table III: detection TPR at 5 % FPR, L = 100, close delegate, per selection.
- Table IV: the same with the 30/70 selection, per delegate (close / median / far).
- Table V: the same (30/70, close) per number of queries L.
- Table VI: open-world identification, Entropy selection, per L, with the vanilla (close)
  delegate or the compound distance (close, median, far; eq. 22): in each trial 1/7 of the
  families (5 of 35) are unknown to Alice, whose database holds the known families' vanilla
  model and half of their variants; the other half must be identified, the unknown families'
  members rejected (abstention).

Two protocols (``paper_tables(protocol=...)``): "paper", the choices the paper's text states
(Rajski distance, true entropy, the guard, tau at the empirical 5 % quantile): all the work is
:class:`fastfp.fbi.OpenWorld` (its fitted tau and ``detection_scores``), and the demo (``fastfp
demo``) runs these same functions with the same seeds, so a database gives the same numbers
through both. "authors" (the default of ``paper_tables``), the FBI authors' released scripts step
by step (:class:`AuthorsData`, :func:`authors_detection`, :func:`authors_identification`),
equal cell by cell to the literal twin :mod:`fastfp.reference.fbi_authors`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .. import _validate, stats
from .database import Database
from .information import DISTANCES, pairwise_distance
from .openworld import DELEGATES, SELECTIONS, OpenWorld

COMPOUND = {"vanilla": ("close",), "compound": DELEGATES}
PAPER_L = (20, 50, 100, 500)
MAX_DROP = 0.15  # eq. (1)'s tolerance in the paper's experiments
Tick = Callable[[], object] | None  # called once per finished step (a progress bar's update)


def subset(db: Database, rows: Iterable[int]) -> Database:
    """The database restricted to the models ``rows`` (same inputs and reference classes)."""
    rows = [int(r) for r in rows]
    return Database(db.topk[rows], [db.names[r] for r in rows], [db.families[r] for r in rows],
                    k=db.k, num_classes=db.num_classes, ground_truth=db.ground_truth,
                    digest=db.digest)


def within_accuracy_drop(acc_variant: float, acc_vanilla: float,
                         max_drop: float = MAX_DROP) -> bool:
    """Eq. (1) of the FBI paper: a variant belongs to its family when its accuracy lost at most
    ``max_drop`` *relative* to its vanilla model's, ``acc_variant >= (1 - max_drop) * acc_vanilla``
    (the authors' ``acc(variant) / acc(vanilla) - 1 > -max_drop``, equality kept). Accuracies are
    fractions in [0, 1]."""
    acc_variant = _validate.real("acc_variant", acc_variant, lo=0.0, hi=1.0)
    acc_vanilla = _validate.real("acc_vanilla", acc_vanilla, lo=0.0, hi=1.0)
    max_drop = _validate.real("max_drop", max_drop, lo=0.0, hi=1.0)
    return acc_variant >= (1 - max_drop) * acc_vanilla


def accuracy_filter(db: Database, max_drop: float = MAX_DROP) -> tuple[Database, list[str]]:
    """(the database without the variants whose top-1 accuracy drops more than ``max_drop``
    relative to their vanilla model (:func:`within_accuracy_drop`), the dropped names). The
    vanilla model of a family is the member named like it; a family without one is kept whole."""
    if not isinstance(db, Database):
        raise TypeError(f"db: expected a fastfp.fbi.Database, got {type(db).__name__}")
    max_drop = _validate.real("max_drop", max_drop, lo=0.0, hi=1.0)
    if db.ground_truth is None:
        raise ValueError("db: the accuracy filter needs the database's ground truth")
    acc = (db.topk[:, :, 0] == db.ground_truth[None]).mean(1)
    keep, dropped = [], []
    for i, (name, fam) in enumerate(zip(db.names, db.families, strict=True)):
        if name != fam and fam in db.names and \
                not within_accuracy_drop(float(acc[i]), float(acc[db.index(fam)]), max_drop):
            dropped.append(name)
        else:
            keep.append(i)
    return (db if not dropped else subset(db, keep)), dropped


def detection(db: Database, *, selection: str, delegate: str, L: int, trials: int,
              seed: int, distance: str = "rajski"
              ) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]:
    """TPR at the fitted tau (5 % FPR) and ROC AUC, mean / std over the fit's ``trials`` draws;
    also returns the pooled (scores = -distance, labels) for a ROC figure."""
    ow = OpenWorld(L, selection=selection, delegates=delegate, fpr=0.05, trials=trials,
                   seed=seed, distance=distance).fit(db)
    tprs, fprs, aucs, pooled = [], [], [], []
    for d, y in ow.detection_scores():  # delegates excluded: trivially at distance 0
        tprs.append(float(np.mean(d[y == 1] < ow.tau_)))
        fprs.append(float(np.mean(d[y == 0] < ow.tau_)))
        aucs.append(stats.roc_auc(-d, y))
        pooled.append((-d, y))
    s, y = (np.concatenate(a) for a in zip(*pooled, strict=True))
    return {"tpr_at_5fpr": float(np.mean(tprs)), "tpr_at_5fpr_std": float(np.std(tprs)),
            "roc_auc": float(np.mean(aucs)), "roc_auc_std": float(np.std(aucs)),
            "fpr": float(np.mean(fprs)), "tau": ow.tau_,
            "positives": int(pooled[-1][1].sum()),
            "negatives": int((1 - pooled[-1][1]).sum())}, (s, y)


def identification(db: Database, *, delegates: str, L: int, trials: int, seed: int,
                   selection: str = "entropy", known_fams: Sequence[str] | None = None,
                   unknown_fraction: float = 1 / 7, fpr: float = 0.05,
                   fit_trials: int = 5, distance: str = "rajski") -> dict[str, Any]:
    """Open-world identification (Table VI protocol, module docstring), per trial: success /
    abstain / error rates of the known families' held-out variants and the rejection rate of the
    unknown families' members, mean and std over trials; also ``ties`` (abstentions by a tie, all
    trials), ``tau`` (mean tau_identify) and the black boxes per trial (``black_boxes_known`` /
    ``black_boxes_unknown``, means). known_fams: fixed known families (default: a random
    ``unknown_fraction`` of the families, at least one, excluded per trial). fit_trials: the draws
    each trial's ``OpenWorld.fit`` sets tau_identify from (the trials themselves are the paper's 20
    repetitions; a fit per trial costs ``fit_trials`` draws)."""
    if not isinstance(db, Database):
        raise TypeError(f"db: expected a fastfp.fbi.Database, got {type(db).__name__}")
    if selection not in ("all", "entropy"):
        raise ValueError(f"selection: identification uses 'all' or 'entropy', got {selection!r}")
    if delegates not in COMPOUND:
        raise ValueError(f"delegates: expected 'vanilla' or 'compound', got {delegates!r}")
    trials = _validate.integer("trials", trials, lo=1)
    seed = _validate.integer("seed", seed, lo=0)
    fams = db.family_names
    if known_fams is not None:
        known_fams = [str(f) for f in known_fams]
        unknown = [f for f in known_fams if f not in fams]
        if not known_fams or unknown:
            raise ValueError(f"known_fams: expected families of the database, got "
                             f"{unknown or known_fams!r}")
    if len(fams) < 2 and known_fams is None:
        raise ValueError("db: identification needs at least two families")
    fam_arr = np.asarray(db.families)
    per_trial: dict[str, list[float]] = {"success": [], "abstain": [], "error": [],
                                         "unknown_rejected": []}
    taus: list[float] = []
    sizes: list[tuple[int, int]] = []
    ties = 0
    for t in range(trials):
        rng = np.random.default_rng([seed, t])
        if known_fams is None:
            n_out = max(1, round(unknown_fraction * len(fams)))
            known = sorted(rng.permutation(fams)[n_out:].tolist(), key=fams.index)
        else:
            known = list(known_fams)
        alice: list[int] = []
        tests: list[tuple[int, str | None]] = []
        for fam in known:
            var = rng.permutation([i for i in db.members(fam) if db.names[i] != fam])
            half = len(var) // 2
            alice += [db.index(fam) if fam in db.names else db.members(fam)[0]]
            alice += [int(i) for i in var[:half]]
            tests += [(int(i), fam) for i in var[half:]]
        tests += [(int(i), None) for i in np.nonzero(~np.isin(fam_arr, known))[0]]
        ow = OpenWorld(L, identify_selection=selection, delegates=COMPOUND[delegates], fpr=fpr,
                       trials=fit_trials, seed=int(rng.integers(2**31)),
                       distance=distance).fit(subset(db, alice))
        taus.append(float(ow.tau_identify_))
        seeds = [int(rng.integers(2**31)) for _ in tests]
        results = ow.identify_many([db.topk[i] for i, _ in tests], seeds=seeds)
        ties += sum(r.status == "abstain-tie" for r in results)
        pred = [r.family for (_, f), r in zip(tests, results, strict=True) if f is not None]
        truth = [f for _, f in tests if f is not None]
        pred_unknown = [r.family for (_, f), r in zip(tests, results, strict=True) if f is None]
        sizes.append((len(truth), len(pred_unknown)))
        if truth:
            c = stats.identification_counts(pred, truth)
            per_trial["success"].append(c["success"])
            per_trial["abstain"].append(c["abstain_rate"])
            per_trial["error"].append(c["error"])
        if pred_unknown:
            c = stats.identification_counts(pred_unknown, [None] * len(pred_unknown))
            per_trial["unknown_rejected"].append(c["abstain_rate"])
    out: dict[str, Any] = {}
    for key, vals in per_trial.items():
        out[key] = float(np.mean(vals)) if vals else float("nan")
        out[f"{key}_std"] = float(np.std(vals)) if vals else float("nan")
    known_n, unknown_n = (np.asarray(v, dtype=np.float64) for v in zip(*sizes, strict=True))
    out.update(ties=int(ties), tau=float(np.mean(taus)),
               black_boxes_known=_count(known_n), black_boxes_unknown=_count(unknown_n))
    return out


def _count(per_trial: np.ndarray) -> int | float:
    """The mean number per trial: an int when every trial had the same (fixed known families)."""
    return int(per_trial[0]) if np.all(per_trial == per_trial[0]) else float(per_trial.mean())


def detection_tables(db: Database, *, L: int, trials: int, seed: int, tick: Tick = None,
                     distance: str = "rajski"
                     ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]],
                                dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Tables III and IV at ``L`` queries: ``(by selection (close delegate), by delegate (30/70),
    {selection: pooled (scores, labels)})``; the close delegate of Table IV is Table III's 30/70
    fit."""
    by_sel: dict[str, dict[str, Any]] = {}
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for sel in SELECTIONS:
        by_sel[sel], scores[sel] = detection(db, selection=sel, delegate="close", L=L,
                                             trials=trials, seed=seed, distance=distance)
        if tick is not None:
            tick()
    by_del: dict[str, dict[str, Any]] = {}
    for dk in DELEGATES:
        if dk == "close":
            by_del[dk] = by_sel["30/70"]
            continue
        by_del[dk] = detection(db, selection="30/70", delegate=dk, L=L, trials=trials,
                               seed=seed, distance=distance)[0]
        if tick is not None:
            tick()
    return by_sel, by_del, scores


def identification_table(db: Database, *, Ls: Sequence[int], trials: int, seed: int,
                         selection: str = "entropy", known_fams: Sequence[str] | None = None,
                         tick: Tick = None, distance: str = "rajski"
                         ) -> dict[str, dict[str, dict[str, Any]]]:
    """Table VI: :func:`identification` per distance (vanilla / compound) and per L,
    ``{"vanilla" | "compound": {str(L): result}}``."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for dk in COMPOUND:
        out[dk] = {}
        for L in Ls:
            out[dk][str(L)] = identification(db, delegates=dk, L=L, trials=trials, seed=seed,
                                             selection=selection, known_fams=known_fams,
                                             distance=distance)
            if tick is not None:
                tick()
    return out


PROTOCOLS = ("authors", "paper")
# the distance of each protocol (``distance=`` overrides it)
PROTOCOL_DISTANCE = {"authors": "mi", "paper": "rajski"}

# The paper's F(m) top-1 numbers (fractions), one per cell, with where each comes from (Maho,
# Furon, Le Merrer, TIFS'23; /papers/fbi-benign-inputs-tifs23.txt).
PAPER_NUMBERS: dict[str, dict[str, Any]] = {
    "III All": {"value": 0.834, "std": 0.014, "source": "Table III, F(m), All (L = 100)"},
    "III 50/50": {"value": 0.926, "std": 0.010, "source": "Table III, F(m), 50/50"},
    "III 30/70": {"value": 0.928, "std": 0.008, "source": "Table III, F(m), 30/70"},
    "III Entropy": {"value": 0.947, "std": 0.007, "source": "Table III, F(m), Entropy"},
    "IV close": {"value": 0.928, "std": 0.008, "source": "Table IV, F(m) top-1, Close"},
    "IV median": {"value": 0.913, "std": 0.011, "source": "Table IV, F(m) top-1, Median"},
    "IV far": {"value": 0.316, "std": 0.028, "source": "Table IV, F(m) top-1, Far"},
    "V L=20": {"value": 0.797, "std": None, "source": "Table V, F(m) top-1, L = 20"},
    "V L=50": {"value": 0.869, "std": None, "source": "Table V, F(m) top-1, L = 50"},
    "V L=100": {"value": 0.928, "std": None, "source": "Table V, F(m) top-1, L = 100"},
    "V L=500": {"value": 0.994, "std": None, "source": "Table V, F(m) top-1, L = 500"},
    "VI L=50": {"value": 0.671, "std": None,
                "source": "Table VI, F(m), delegate close, top-1, L = 50"},
    "VI L=100": {"value": 0.800, "std": None, "source": "Table VI, F(m), close, top-1, L = 100"},
    "VI L=500": {"value": 0.986, "std": None, "source": "Table VI, F(m), close, top-1, L = 500"},
    "VI no threshold L=100": {"value": 0.947, "std": None,
                              "source": "Sect. IV-D3b: 'If no thresholding is done, the "
                                        "success rate reaches 94.7% within 100 queries'"},
    "VI no threshold L=500": {"value": 0.991, "std": None,
                              "source": "Sect. IV-D3b: '... and 99.1% at 500'"},
}


def _paper_value(name: str) -> float | None:
    entry = PAPER_NUMBERS.get(name)
    return None if entry is None else float(entry["value"])


def _check_protocol(protocol: str, distance: str | None,
                    known_fams: Sequence[str] | None) -> tuple[str, str]:
    """(protocol, distance): the protocol's distance unless overridden."""
    protocol = _validate.choice("protocol", protocol, PROTOCOLS)
    if distance is None:
        distance = PROTOCOL_DISTANCE[protocol]
    distance = _validate.choice("distance", distance, DISTANCES)
    if protocol == "authors" and known_fams is not None:
        raise ValueError("known_fams: fixed known families are a setting of protocol='paper' "
                         "(the authors' identification draws them per repeat)")
    return protocol, distance


def paper_tables(db: Database, *, trials: int = 20, Ls: Sequence[int] = PAPER_L, seed: int = 0,
                 max_drop: float = MAX_DROP, known_fams: Sequence[str] | None = None,
                 progress: bool = False, protocol: str = "authors",
                 distance: str | None = None,
                 vanilla: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Tables III-VI of the paper on ``db``; every cell beside the paper's number
    (``"cells"``: paper, mean, std, diff, actual FPR, trials). Rates are fractions in [0, 1].

    protocol: "authors" (the default; the FBI authors' released scripts step by step, see
    :class:`AuthorsData`, :func:`authors_detection`, :func:`authors_identification`) or
    "paper" (the choices the paper's text states where the code differs: Rajski distance,
    the true entropy, the guard, tau at the empirical 5 % quantile; fastfp's OpenWorld, also
    what ``fastfp demo`` runs). known_fams: fixed families known to Alice in Table VI
    ("paper" only; the authors draw them per repeat). distance: overrides the protocol's ("mi" for
    "authors", "rajski" for "paper"). vanilla: family -> its vanilla model, for the authors'
    protocol where a family has no member named like it. trials: per cell (the scripts'
    ``n_times``, detection and identification alike).
    """
    if not isinstance(db, Database):
        raise TypeError(f"db: expected a fastfp.fbi.Database, got {type(db).__name__}")
    protocol, distance = _check_protocol(protocol, distance, known_fams)
    trials = _validate.integer("trials", trials, lo=1)
    seed = _validate.integer("seed", seed, lo=0)
    Ls = [_validate.integer("Ls", L, lo=1) for L in Ls]
    if not Ls:
        raise ValueError("Ls: give at least one number of queries")
    if protocol == "authors":
        return _authors_tables(db, trials=trials, Ls=Ls, seed=seed, max_drop=max_drop,
                               distance=distance, vanilla=vanilla, progress=progress)
    return _paper_protocol_tables(db, trials=trials, Ls=Ls, seed=seed, max_drop=max_drop,
                                  known_fams=known_fams, distance=distance, progress=progress)


def _paper_protocol_tables(db: Database, *, trials: int, Ls: list[int], seed: int,
                           max_drop: float, known_fams: Sequence[str] | None, distance: str,
                           progress: bool) -> dict[str, Any]:
    """``protocol="paper"``: fastfp's OpenWorld (Rajski, the guard, tau at the empirical 5 %
    quantile with its actual FPR reported)."""
    from tqdm.auto import tqdm

    db, dropped = accuracy_filter(db, max_drop)
    L0 = 100 if 100 in Ls else Ls[0]
    steps = len(SELECTIONS) + len(DELEGATES) + len(Ls) + 2 * len(Ls)
    bar = tqdm(total=steps, desc="paper tables", disable=not progress)

    def tick() -> None:
        bar.update(1)

    t3, t4, _ = detection_tables(db, L=L0, trials=trials, seed=seed, tick=tick,
                                 distance=distance)
    t5 = {str(L): (t3["30/70"] if L == L0 else
                   detection(db, selection="30/70", delegate="close", L=L, trials=trials,
                             seed=seed, distance=distance)[0]) for L in Ls}
    bar.update(len(Ls) + 1)  # Table V's rows (one shared with Table III), Table IV's close row
    t6 = identification_table(db, Ls=Ls, trials=trials, seed=seed, known_fams=known_fams,
                              tick=tick, distance=distance)
    bar.close()
    cells = _detection_cells(t3, t4, t5, L0, trials)
    for L, r in t6["vanilla"].items():
        # FPR: the unknown families' members accepted (not rejected)
        cells[f"VI L={L}"] = _cell_entry(f"VI L={L}", r["success"], r["success_std"],
                                         1.0 - r["unknown_rejected"], trials)
    return {
        "database": {"models": db.num_models, "families": len(db.family_names),
                     "inputs": db.num_inputs, "k": db.k, "dropped": dropped,
                     "trials": trials, "L": L0, "Ls": Ls, "seed": seed, "max_drop": max_drop,
                     "known_families": None if known_fams is None else list(known_fams),
                     "protocol": "paper", "distance": distance},
        "table3_selection": t3, "table4_delegate": t4, "table5_queries": t5,
        "table6_identification": t6, "cells": cells,
    }


def _detection_cells(t3: dict[str, dict], t4: dict[str, dict], t5: dict[str, dict], L0: int,
                     trials: int) -> dict[str, dict[str, Any]]:
    """The cells of Tables III-V (III and IV hold the paper's numbers at L = 100 only)."""
    cells: dict[str, dict[str, Any]] = {}
    names3 = {"all": "III All", "50/50": "III 50/50", "30/70": "III 30/70",
              "entropy": "III Entropy"}
    for sel, r in t3.items():
        cells[names3[sel]] = _cell_entry(names3[sel] if L0 == 100 else None, r["tpr_at_5fpr"],
                                         r["tpr_at_5fpr_std"], r["fpr"], trials)
    for dk, r in t4.items():
        cells[f"IV {dk}"] = _cell_entry(f"IV {dk}" if L0 == 100 else None, r["tpr_at_5fpr"],
                                        r["tpr_at_5fpr_std"], r["fpr"], trials)
    for L, r in t5.items():
        cells[f"V L={L}"] = _cell_entry(f"V L={L}", r["tpr_at_5fpr"], r["tpr_at_5fpr_std"],
                                        r["fpr"], trials)
    return cells


def _cell_entry(name: str | None, mean: float, std: float, fpr: float, trials: int,
                **extra: Any) -> dict[str, Any]:
    """One cell: the paper's number (None where it has none), fastfp's mean and std, their
    difference, the actual FPR and the trials."""
    paper = None if name is None else _paper_value(name)
    return {"paper": paper, "mean": mean, "std": std,
            "diff": None if paper is None else mean - paper, "fpr": fpr, "trials": trials,
            **extra}


def _authors_tables(db: Database, *, trials: int, Ls: list[int], seed: int, max_drop: float,
                    distance: str, vanilla: Mapping[str, str] | None,
                    progress: bool) -> dict[str, Any]:
    """``protocol="authors"``: detection.py once per (selection, delegate), each run from its
    own ``numpy.random.default_rng(seed)``, every L drawn in it; identification_pure.py from
    another. Everything checked before the first trial."""
    from tqdm.auto import tqdm

    max_drop = _validate.real("max_drop", max_drop, lo=0.0, hi=1.0)
    det = AuthorsData(db, max_drop=max_drop, remove_single=True, vanilla=vanilla)
    ide = AuthorsData(db, max_drop=max_drop, remove_single=False, vanilla=vanilla)
    N = db.num_inputs
    head = int(N * AUTHORS_ENTROPY_HEAD)
    if max(Ls) > N:
        raise ValueError(f"Ls: {max(Ls)} images asked, but the database has {N}")
    if max(Ls) > head:
        raise ValueError(f"Ls: {max(Ls)} images asked, but the 'entropy' pool (the head "
                         f"{AUTHORS_ENTROPY_HEAD:.0%} of the ranking) has {head}")
    if len(det.families) < 2:
        raise ValueError("db: the authors' detection needs two families of >= 2 members after "
                         "the accuracy filter")
    unknown = authors_unknown(len(ide.families))
    L0 = 100 if 100 in Ls else Ls[0]
    runs = [("all", "close"), ("50/50", "close"), ("30/70", "close"), ("entropy", "close"),
            ("30/70", "median"), ("30/70", "far")]
    bar = tqdm(total=len(runs) + 1, desc="paper tables (authors)", disable=not progress)
    out: dict[tuple[str, str], dict[int, dict]] = {}
    for sel, dk in runs:
        read = Ls if (sel, dk) == ("30/70", "close") else [L0]
        out[(sel, dk)] = authors_detection(det, sel, dk, Ls, trials, np.random.default_rng(seed),
                                           distance=distance, read=read)
        bar.update(1)
    t6 = authors_identification(ide, Ls, trials, np.random.default_rng(seed), unknown=unknown,
                                distance=distance)
    bar.update(1)
    bar.close()

    def row(r: dict) -> dict[str, Any]:
        return {"tpr_at_5fpr": r["mean"], "tpr_at_5fpr_std": r["std"], "fpr": r["fpr"],
                "trials": r["trials"]}

    t3 = {sel: row(out[(sel, "close")][L0]) for sel in SELECTIONS}
    t4 = {dk: row(out[("30/70", dk)][L0]) for dk in DELEGATES}
    t5 = {str(L): row(out[("30/70", "close")][L]) for L in Ls}
    cells = _detection_cells(t3, t4, t5, L0, trials)
    for L, r in t6.items():
        cells[f"VI L={L}"] = _cell_entry(f"VI L={L}", r["mean"], r["std"], r["fpr"], trials,
                                         tau=r["tau"], no_threshold=r["no_threshold"])
        cells[f"VI no threshold L={L}"] = _cell_entry(
            f"VI no threshold L={L}", r["no_threshold"], r["no_threshold_std"], 1.0, trials)
    dropped = [n for i, n in enumerate(db.names) if i not in set(det.rows.tolist())]
    return {
        "database": {"models": len(det.models), "families": len(ide.families),
                     "inputs": N, "k": db.k, "dropped": dropped, "trials": trials, "L": L0,
                     "Ls": Ls, "seed": seed, "max_drop": max_drop, "known_families": None,
                     "protocol": "authors", "distance": distance,
                     "detection_families": len(det.families), "unknown_families": unknown},
        "table3_selection": t3, "table4_delegate": t4, "table5_queries": t5,
        "table6_identification": {"vanilla": {
            str(L): {"success": r["mean"], "success_std": r["std"], "fpr": r["fpr"],
                     "trials": r["trials"], "tau": r["tau"], "no_threshold": r["no_threshold"],
                     "no_threshold_std": r["no_threshold_std"]} for L, r in t6.items()}},
        "cells": cells,
    }


# --- the authors' protocol (t-maho/FBI_fingerprinting, their released scripts) ------------------
#
# ``protocol="authors"`` follows ``unknown/detection.py`` (Tables III-V) and
# ``unknown/identification_pure.py`` (Table VI) step by step, and draws the same random numbers
# in the same order as the literal twin ``fastfp.reference.fbi_authors`` (its docstring gives
# the order and the ``numpy.round(d, 12)`` tie rule), so both give the same cells bit for bit.
# The distances come from the fast exact counts (``pairwise_distance(..., exact=True)``), the
# ROC walk from one stable argsort and cumulative sums, the Entropy ranking from one lexsort.
# The database's model order plays the role of the scripts' sorted file order (``fastfp fbi
# import-predictions`` keeps it).

AUTHORS_DISTANCE = "mi"  # detection.py: --distance mutual_information (larger is closer)
AUTHORS_DECIMALS = 12  # the twin's tie rule: every distance rounded before it is compared
AUTHORS_ENTROPY_HEAD = 0.2  # get_score("entropy_label"): e = int(len(indexes) * 0.2)
AUTHORS_REMOVE_BELOW = 1  # detection.py: remove_family_below = 1
_P_WRONG = {"50/50": 0.5, "30/70": 0.7}  # "random_wrong_0.5" / "random_wrong_0.7"


def authors_unknown(n_families: int) -> int:
    """Families left out per identification repeat: identification_pure.py's ``--unknown 5`` of
    the paper's 35 (1/7), scaled to other databases, at least 1."""
    return max(1, min(n_families - 1, round(n_families / 7)))


class AuthorsData:
    """The scripts' preamble on a database: the accuracy filter, the family table, symbols.

    detection.py: ``acc_drop = accuracies[m] / accuracies[pure] - 1 > -0.15`` keeps a model
    (counts of right top-1 answers, the vanilla model included); the family table lists the
    kept models per family in first-appearance order; ``remove_single`` deletes the families of
    <= 1 member from the table (their models stay, negatives for every family; detection.py
    does, identification_pure.py does not). Symbols: ``matrix_gt_index`` (the 0-based rank of
    the truth in the top-k, k when absent: S_k relabelled)."""

    def __init__(self, db: Database, *, max_drop: float = MAX_DROP, remove_single: bool = True,
                 vanilla: Mapping[str, str] | None = None) -> None:
        self.vanilla = authors_vanilla(db, vanilla)
        truth = db.ground_truth
        acc = (db.topk[:, :, 0] == truth[None]).sum(1)  # int counts, as detection.py
        van = np.array([db.index(self.vanilla[f]) for f in db.families], dtype=np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            keep = acc / acc[van] - 1 > -max_drop
        self.rows = np.flatnonzero(keep)
        self.models = [db.names[i] for i in self.rows]
        fams = [db.families[i] for i in self.rows]
        self.families: dict[str, list[int]] = {}  # family -> kept member indices (in models)
        for i, f in enumerate(fams):
            self.families.setdefault(f, []).append(i)
        pos = {n: i for i, n in enumerate(self.models)}
        self.pure = {f: pos.get(self.vanilla[f], -1) for f in self.families}
        # originals_index: the kept vanilla models (before the single-member removal)
        self.originals = [i for i, m in enumerate(self.models) if self.vanilla[fams[i]] == m]
        if remove_single:
            self.families = {f: m for f, m in self.families.items()
                             if len(m) > AUTHORS_REMOVE_BELOW}
        self.top = db.topk[self.rows]
        self.truth = truth
        k = db.k
        s = db.symbols(k)[self.rows]
        self.k = k
        self.sym = np.where(s == 0, k, s - 1).astype(np.uint8)  # matrix_gt_index
        self._sym_t = np.ascontiguousarray(self.sym.T)  # (N, M): gathering L inputs is cheap
        self._to_vanilla: dict[str, np.ndarray] = {}

    def family_of(self) -> np.ndarray:
        """(M,) index of each kept model's family in the family table, -1 when removed."""
        out = np.full(len(self.models), -1, dtype=np.int64)
        for j, members in enumerate(self.families.values()):
            out[members] = j
        return out

    def _vanilla_scores(self, distance: str) -> np.ndarray:
        """(M,) every kept model's rounded distance to its family's vanilla model on ALL
        images (get_delegate's ``model_distance(v_o, v_m)``), one exact call."""
        if distance not in self._to_vanilla:
            fams = list(self.families)
            pures = [self.pure[f] for f in fams]
            D = np.asarray(pairwise_distance(self.sym, self.sym[pures], k=self.k,
                                             distance=distance, exact=True))
            col = np.zeros(len(self.models), dtype=np.int64)
            for j, f in enumerate(fams):
                col[self.families[f]] = j
            self._to_vanilla[distance] = np.round(D[np.arange(len(col)), col], AUTHORS_DECIMALS)
        return self._to_vanilla[distance]

    def delegate(self, family: str, kind: str, distance: str) -> int:
        """detection.py ``get_delegate``: members sorted by name, their distances to the vanilla
        model sorted stably; close / far the ends by orientation, "median" (the scripts'
        "middle") index ``int(len / 2)`` of the ascending list. Returns a model index."""
        members = sorted(self.families[family], key=lambda i: self.models[i])
        scores = self._vanilla_scores(distance)[members]
        order = [members[i] for i in np.argsort(scores, kind="stable")]
        larger_closer = distance == "mi"
        if kind == "close":
            return order[-1] if larger_closer else order[0]
        if kind == "far":
            return order[0] if larger_closer else order[-1]
        return order[int(len(order) / 2)]

    def entropy_ranking(self) -> np.ndarray:
        """get_score("entropy_label") with its quirk: each image's key is the LIST of -p log2 p
        over the distinct top-k outputs of the vanilla models, in first-appearance order,
        compared lexicographically (a shorter list with the same head is smaller), descending,
        stable. -p log2 p depends only on the count, so the keys are counts looked up in a
        table of the script's own float expression, and one lexsort orders them."""
        top = self.top[self.originals]  # (n, N, k)
        n, N, _ = top.shape
        # one code per distinct top-k tuple, per image
        codes = np.unique(top.transpose(1, 0, 2).reshape(N * n, -1), axis=0,
                          return_inverse=True)[1].reshape(N, n)
        eq = codes[:, :, None] == codes[:, None, :]  # (N, n, n)
        count = eq.sum(2)
        first = ~np.tril(eq, -1).any(2)  # no earlier equal output: a first appearance
        order = np.argsort(~first, axis=1, kind="stable")  # first appearances, in order
        counts = np.take_along_axis(np.where(first, count, 0), order, 1)
        table = [math.inf] + [-(-(c / n) * math.log(c / n, 2)) for c in range(1, n + 1)]
        keys = np.asarray(table)[counts]  # negated terms; +inf pads a shorter list
        # lexsort: last key primary; ascending on negated terms = descending, ties stable
        return np.lexsort(keys.T[::-1])

    def entropy_pool(self) -> np.ndarray:
        """The Entropy selection's images: the head ``int(N * 0.2)`` of the ranking."""
        ranking = self.entropy_ranking()
        return ranking[: int(len(ranking) * AUTHORS_ENTROPY_HEAD)].astype(np.int64)

    def distances(self, images: list[np.ndarray], ref_rows: np.ndarray,
                  distance: str) -> np.ndarray:
        """(len(images), M) rounded distances of every kept model to ``ref_rows[j]`` on
        ``images[j]``; query sets of one length in one exact batched call."""
        out = np.empty((len(images), len(self.models)), dtype=np.float64)
        lengths = np.array([len(s) for s in images])
        for L in np.unique(lengths):
            js = np.flatnonzero(lengths == L)
            S = np.stack([images[j] for j in js])  # (b, L)
            A = self._sym_t[S].transpose(0, 2, 1)  # (b, M, L)
            B = self.sym[ref_rows[js][:, None], S][:, None, :]  # (b, 1, L)
            out[js] = np.asarray(pairwise_distance(A, B, k=self.k, distance=distance,
                                                   exact=True))[:, :, 0]
        return np.round(out, AUTHORS_DECIMALS)


def authors_vanilla(db: Database, vanilla: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each family's vanilla model: ``vanilla[family]`` when given, else the member named like
    the family (the release's rule, ``utils/model.py``). Raises ValueError naming the first
    family without one, and for a database without ground truth: the authors' protocol needs
    both."""
    if db.ground_truth is None:
        raise ValueError("db: the authors' protocol needs the database's ground truth (its "
                         "accuracy filter and symbols use the true classes)")
    if vanilla is not None and not isinstance(vanilla, Mapping):
        raise TypeError(f"vanilla: expected a mapping family -> model name, got "
                        f"{type(vanilla).__name__}")
    given = dict(vanilla or {})
    unknown = [f for f in given if f not in db.family_names]
    if unknown:
        raise ValueError(f"vanilla: unknown families {unknown}")
    out = {}
    for f in db.family_names:
        v = given.get(f, f)
        if v not in db.names or db.families[db.index(v)] != f:
            raise ValueError(f"db: family {f!r} has no vanilla model (a member named {v!r}); the "
                             f"authors' protocol needs one per family (name it with vanilla= / "
                             f"--vanilla FAMILY=MODEL, or use protocol 'paper')")
        out[f] = v
    return out


def _roc_tp_fp(scores: np.ndarray, labels: np.ndarray,
               larger_closer: bool) -> tuple[np.ndarray, np.ndarray]:
    """detection.py's ROC of one trial: the pooled list sorted stably from the farthest (ties
    keep list order), each step removing one pair; (roc_tp, roc_fp), one point per pair."""
    order = np.argsort(scores if larger_closer else -scores, kind="stable")
    lab = labels[order]
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    tp = (n_pos - np.cumsum(lab)) / n_pos
    fp = (n_neg - np.cumsum(~lab)) / n_neg
    return tp, fp


def _read_out(tps: list[np.ndarray], fps: list[np.ndarray], fpr: float) -> dict[str, Any]:
    """The script's closing block: curves averaged index-wise over trials; the mean TPR (and
    its std over trials) at the first index where the mean FPR drops below ``fpr``."""
    tp, fp = np.stack(tps), np.stack(fps)
    mean_tp, std_tp, mean_fp = np.mean(tp, 0), np.std(tp, 0), np.mean(fp, 0)
    i = int(np.flatnonzero(mean_fp < fpr)[0])  # the last point has FPR 0
    return {"mean": float(mean_tp[i]), "std": float(std_tp[i]), "fpr": float(mean_fp[i]),
            "trials": len(tps)}


def authors_detection(data: AuthorsData, selection: str, delegate: str, Ls: Sequence[int],
                      trials: int, rng: np.random.Generator, *, distance: str = AUTHORS_DISTANCE,
                      fpr: float = 0.05, read: Sequence[int] | None = None) -> dict[int, dict]:
    """One run of detection.py for one (selection, delegate): {L: read-out} for the L in
    ``read`` (default all; the draws of every L in ``Ls`` are made either way, in order)."""
    fams = list(data.families)
    nF, M = len(fams), len(data.models)
    read = list(Ls) if read is None else list(read)
    dele = np.array([data.delegate(f, delegate, distance) for f in fams], dtype=np.int64)
    fam_of = data.family_of()
    labels = (fam_of[None, :] == np.arange(nF)[:, None]).reshape(-1)  # family-major list
    larger_closer = distance == "mi"
    if selection in _P_WRONG:  # the delegate's (alice_model) right and wrong images
        ok = data.top[dele, :, 0] == data.truth[None]
        lists = [(np.flatnonzero(o).astype(np.int64), np.flatnonzero(~o).astype(np.int64))
                 for o in ok]
    else:
        pool = (data.entropy_pool() if selection == "entropy"
                else np.arange(data.sym.shape[1]))
    curves: dict[int, tuple[list, list]] = {L: ([], []) for L in read}
    for _ in range(trials):  # for time_i in range(n_times)
        images: dict[int, list[np.ndarray]] = {L: [] for L in Ls}
        for j in range(nF):  # for f in families
            if selection in _P_WRONG:  # one shuffle per family and trial: right, then wrong
                right = rng.permutation(lists[j][0])
                wrong = rng.permutation(lists[j][1])
                for L in Ls:  # nested prefixes: n_wrong = int(L * p)
                    n_wrong = int(L * _P_WRONG[selection])
                    images[L].append(np.concatenate([wrong[:n_wrong], right[:L - n_wrong]]))
            else:
                for L in Ls:  # random.sample(images, L), one draw per L
                    images[L].append(rng.choice(pool, size=L, replace=False))
        for L in read:
            D = data.distances(images[L], dele, distance).reshape(-1)
            tp, fp = _roc_tp_fp(D, labels, larger_closer)
            curves[L][0].append(tp)
            curves[L][1].append(fp)
    if M == 0:
        raise ValueError("db: no model left after the accuracy filter")
    return {L: _read_out(*curves[L], fpr) for L in read}


def authors_identification(data: AuthorsData, Ls: Sequence[int], repeats: int,
                           rng: np.random.Generator, *, unknown: int,
                           distance: str = AUTHORS_DISTANCE, fpr: float = 0.05) -> dict[int, dict]:
    """identification_pure.py (Table VI): per repeat, ``max(Ls)`` Entropy images, then the
    known families (``nF - unknown`` of them, in draw order); every model's first argmax (its
    best score) over the known families' close delegates on the first L images. The rate: tau
    from the unknown families' models pooled over repeats (at most ``fpr`` accepted), success
    = accepted and its own family, over the models of known families, mean over repeats; the
    rate without any threshold beside it (see fastfp.reference.fbi_authors)."""
    fams = list(data.families)
    nF, M = len(fams), len(data.models)
    dele = np.array([data.delegate(f, "close", distance) for f in fams], dtype=np.int64)
    fam_of = data.family_of()
    pool = data.entropy_pool()
    larger_closer = distance == "mi"
    sign = -1.0 if larger_closer else 1.0
    runs: dict[int, list] = {L: [] for L in Ls}
    for _ in range(repeats):
        images = rng.choice(pool, size=max(Ls), replace=False)
        kept = rng.choice(nF, size=nF - unknown, replace=False)
        where = np.full(nF, -1, dtype=np.int64)
        where[kept] = np.arange(kept.size)
        own = where[fam_of]  # index of the model's family in the kept list, -1: unknown
        for L in Ls:
            S = images[:L]
            D = np.round(np.asarray(pairwise_distance(
                data.sym[:, S], data.sym[dele[kept]][:, S], k=data.k, distance=distance,
                exact=True)), AUTHORS_DECIMALS)
            best = np.argmax(D, 1) if larger_closer else np.argmin(D, 1)  # the first one
            score = D[np.arange(M), best]
            runs[L].append((sign * score, best == own, own >= 0))
    out = {}
    for L in Ls:
        negatives = np.concatenate([s[~known] for s, _, known in runs[L]])
        tau = float(np.sort(negatives)[int(math.floor(fpr * negatives.size))]) \
            if negatives.size else math.inf
        with_t, without = [], []
        for s, ok, known in runs[L]:
            n = int(known.sum())
            with_t.append(int((ok & known & (s < tau)).sum()) / n)
            without.append(int((ok & known).sum()) / n)
        out[L] = {"mean": float(np.mean(with_t)), "std": float(np.std(with_t)),
                  "fpr": float(np.mean(negatives < tau)) if negatives.size else 0.0,
                  "trials": repeats, "tau": float(sign * tau),
                  "no_threshold": float(np.mean(without)),
                  "no_threshold_std": float(np.std(without))}
    return out


def _cell(r: dict[str, Any], key: str) -> str:
    return f"{100 * r[key]:5.1f} +- {100 * r[key + '_std']:4.1f}"


def _pct(x: float | None, width: int = 5, sign: bool = False) -> str:
    if x is None:
        return f"{'-':>{width}}"
    return f"{100 * x:+{width}.1f}" if sign else f"{100 * x:{width}.1f}"


def format_tables(tables: dict[str, Any]) -> str:
    """The result of :func:`paper_tables` as plain text: per cell the paper's number, fastfp's
    (mean +- std over trials), the difference and the actual FPR, in percent."""
    d = tables["database"]
    protocol = d.get("protocol", "paper")
    lines = [f"database: {d['models']} models in {d['families']} families, {d['inputs']} inputs, "
             f"top-{d['k']}; {len(d['dropped'])} variants dropped by the "
             f"{100 * d['max_drop']:.0f} % accuracy filter; {d['trials']} trials; protocol "
             f"{protocol}, distance {d.get('distance', 'rajski')}", ""]
    cells = tables.get("cells", {})
    titles = [
        ("III", f"Table III: detection TPR at 5 % FPR by selection (L = {d['L']}, close "
                f"delegate)"),
        ("IV", f"Table IV: detection TPR at 5 % FPR by delegate (L = {d['L']}, 30/70)"),
        ("V", "Table V: detection TPR at 5 % FPR by L (30/70, close delegate)"),
        ("VI", "Table VI: identification success (Entropy, close delegate, with abstention)"),
    ]
    for prefix, title in titles:
        rows = [(n, c) for n, c in cells.items() if n.split(" ")[0] == prefix]
        if not rows:
            continue
        lines.append(title)
        lines.append(f"  {'cell':<24} {'paper':>5}  {'fastfp':>13}  {'diff':>5}  "
                     f"{'FPR':>5}")
        for n, c in rows:
            lines.append(f"  {n:<24} {_pct(c['paper'])}  {_pct(c['mean'])} +- "
                         f"{100 * c['std']:4.1f}  {_pct(c['diff'], sign=True)}  "
                         f"{_pct(c['fpr'])}")
        lines.append("")
    if protocol == "paper":
        lines.append("Table VI in detail (fastfp's protocol: abstentions and unknown families)")
        lines.append(f"  {'distance':>8} {'':>8}  {'success':^13}  {'abstain':^13}  "
                     f"{'error':^13}  {'unknown rejected':^13}")
        for dk, by_L in tables["table6_identification"].items():
            for L, r in sorted(by_L.items(), key=lambda kv: int(kv[0])):  # JSON: keys as text
                lines.append(f"  {dk:>8} L = {L:>4}  {_cell(r, 'success')}  "
                             f"{_cell(r, 'abstain')}  {_cell(r, 'error')}  "
                             f"{_cell(r, 'unknown_rejected')}")
    return "\n".join(lines) + "\n"
