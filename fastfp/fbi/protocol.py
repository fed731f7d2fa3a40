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

All the work is :class:`fastfp.fbi.OpenWorld` (its fitted tau and ``detection_scores``). The
demo (``fastfp demo``) runs these same functions with the same seeds, so a database gives the same
numbers through both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from .. import _validate, stats
from .database import Database
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
              seed: int) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]:
    """TPR at the fitted tau (5 % FPR) and ROC AUC, mean / std over the fit's ``trials`` draws;
    also returns the pooled (scores = -distance, labels) for a ROC figure."""
    ow = OpenWorld(L, selection=selection, delegates=delegate, fpr=0.05, trials=trials,
                   seed=seed).fit(db)
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
                   fit_trials: int = 5) -> dict[str, Any]:
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
                       trials=fit_trials, seed=int(rng.integers(2**31))).fit(subset(db, alice))
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


def detection_tables(db: Database, *, L: int, trials: int, seed: int, tick: Tick = None
                     ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]],
                                dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Tables III and IV at ``L`` queries: ``(by selection (close delegate), by delegate (30/70),
    {selection: pooled (scores, labels)})``; the close delegate of Table IV is Table III's 30/70
    fit."""
    by_sel: dict[str, dict[str, Any]] = {}
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for sel in SELECTIONS:
        by_sel[sel], scores[sel] = detection(db, selection=sel, delegate="close", L=L,
                                             trials=trials, seed=seed)
        if tick is not None:
            tick()
    by_del: dict[str, dict[str, Any]] = {}
    for dk in DELEGATES:
        if dk == "close":
            by_del[dk] = by_sel["30/70"]
            continue
        by_del[dk] = detection(db, selection="30/70", delegate=dk, L=L, trials=trials,
                               seed=seed)[0]
        if tick is not None:
            tick()
    return by_sel, by_del, scores


def identification_table(db: Database, *, Ls: Sequence[int], trials: int, seed: int,
                         selection: str = "entropy", known_fams: Sequence[str] | None = None,
                         tick: Tick = None) -> dict[str, dict[str, dict[str, Any]]]:
    """Table VI: :func:`identification` per distance (vanilla / compound) and per L,
    ``{"vanilla" | "compound": {str(L): result}}``."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for dk in COMPOUND:
        out[dk] = {}
        for L in Ls:
            out[dk][str(L)] = identification(db, delegates=dk, L=L, trials=trials, seed=seed,
                                             selection=selection, known_fams=known_fams)
            if tick is not None:
                tick()
    return out


def paper_tables(db: Database, *, trials: int = 20, Ls: Sequence[int] = PAPER_L, seed: int = 0,
                 max_drop: float = MAX_DROP, known_fams: Sequence[str] | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Tables III-VI of the paper on ``db`` (after the accuracy filter); see the module
    docstring. Rates are fractions in [0, 1], each with its ``_std`` over trials. known_fams:
    fixed families known to Alice in Table VI (default: the paper's random 1/7 unknown per
    trial)."""
    from tqdm.auto import tqdm

    if not isinstance(db, Database):
        raise TypeError(f"db: expected a fastfp.fbi.Database, got {type(db).__name__}")
    trials = _validate.integer("trials", trials, lo=1)
    seed = _validate.integer("seed", seed, lo=0)
    Ls = [_validate.integer("Ls", L, lo=1) for L in Ls]
    if not Ls:
        raise ValueError("Ls: give at least one number of queries")
    db, dropped = accuracy_filter(db, max_drop)
    L0 = 100 if 100 in Ls else Ls[0]
    steps = len(SELECTIONS) + len(DELEGATES) + len(Ls) + 2 * len(Ls)
    bar = tqdm(total=steps, desc="paper tables", disable=not progress)

    def tick() -> None:
        bar.update(1)

    t3, t4, _ = detection_tables(db, L=L0, trials=trials, seed=seed, tick=tick)
    t5 = {str(L): (t3["30/70"] if L == L0 else
                   detection(db, selection="30/70", delegate="close", L=L, trials=trials,
                             seed=seed)[0]) for L in Ls}
    bar.update(len(Ls) + 1)  # Table V's rows (one shared with Table III), Table IV's close row
    t6 = identification_table(db, Ls=Ls, trials=trials, seed=seed, known_fams=known_fams,
                              tick=tick)
    bar.close()
    return {
        "database": {"models": db.num_models, "families": len(db.family_names),
                     "inputs": db.num_inputs, "k": db.k, "dropped": dropped,
                     "trials": trials, "L": L0, "Ls": Ls, "seed": seed, "max_drop": max_drop,
                     "known_families": None if known_fams is None else list(known_fams)},
        "table3_selection": t3, "table4_delegate": t4, "table5_queries": t5,
        "table6_identification": t6,
    }


def _cell(r: dict[str, Any], key: str) -> str:
    return f"{100 * r[key]:5.1f} +- {100 * r[key + '_std']:4.1f}"


def format_tables(tables: dict[str, Any]) -> str:
    """The result of :func:`paper_tables` as plain-text tables (percent, mean +- std)."""
    d = tables["database"]
    lines = [f"database: {d['models']} models in {d['families']} families, {d['inputs']} inputs, "
             f"top-{d['k']}; {len(d['dropped'])} variants dropped by the "
             f"{100 * d['max_drop']:.0f} % accuracy filter; {d['trials']} trials", ""]

    def table(title: str, rows: dict[str, dict[str, Any]], key: str = "tpr_at_5fpr") -> None:
        lines.append(title)
        for name, r in rows.items():
            lines.append(f"  {name:>10}  {_cell(r, key)}")
        lines.append("")

    table(f"Table III: detection TPR at 5 % FPR by selection (L = {d['L']}, close delegate)",
          tables["table3_selection"])
    table(f"Table IV: detection TPR at 5 % FPR by delegate (L = {d['L']}, 30/70)",
          tables["table4_delegate"])
    table("Table V: detection TPR at 5 % FPR by L (30/70, close delegate)",
          {f"L = {L}": r for L, r in sorted(tables["table5_queries"].items(),
                                             key=lambda kv: int(kv[0]))})
    lines.append("Table VI: identification with abstention (Entropy selection)")
    lines.append(f"  {'distance':>8} {'':>8}  {'success':^13}  {'abstain':^13}  {'error':^13}  "
                 f"{'unknown rejected':^13}")
    for dk, by_L in tables["table6_identification"].items():
        for L, r in sorted(by_L.items(), key=lambda kv: int(kv[0])):  # JSON sorts keys as text
            lines.append(f"  {dk:>8} L = {L:>4}  {_cell(r, 'success')}  {_cell(r, 'abstain')}  "
                         f"{_cell(r, 'error')}  {_cell(r, 'unknown_rejected')}")
    return "\n".join(lines) + "\n"
