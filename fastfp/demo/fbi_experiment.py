"""FBI experiment of the demo (Maho et al., TIFS'23, Sect. III-IV), at zoo scale, with
:mod:`fastfp.fbi`.

Families F(m): each zoo model m and its variants (the paper's procedures, accuracy-drop filtered),
stored in one :class:`fastfp.fbi.Database` (top-k labels on the benign inputs, ground truth as the
reference class). Everything below is the public FBI API; this module only lays out the experiment.

- **Walled garden** (I, F, A = B, k): every model of the database is the black box in turn;
  :func:`fastfp.fbi.greedy_identify` queries inputs until the candidates lie in one family.
- **Detection** (D, F, A != B, k): :class:`fastfp.fbi.OpenWorld` per input selection (All / 50-50
  / 30-70 / Entropy, close delegate) and per delegate (close / median / far, 30-70). Its ``fit``
  sets tau at 5 % FPR from the negatives (models outside the family) of ``trials`` random draws
  of L queries; the demo reports, per draw, the TPR of the members at that tau (the delegates
  themselves excluded: they are at distance 0) and the ROC AUC (:func:`fastfp.metrics.roc_auc`).
- **Identification** (I, F, A != B, k), open world: Alice knows the families of seeds 0..S-2 (the
  vanilla model and a random half of each family's variants); black boxes are the other half of
  the known families' variants, plus every member of the unknown families (seed S-1), which she
  must reject (H0). ``OpenWorld.fit`` on Alice's models only sets tau_identify, then
  ``OpenWorld.identify_many`` (``identify`` of every black box, batched) decides argmin_i
  D(b, F_i) below tau_identify, else abstains (ties abstain).
  D(b, F_i) is the distance to the vanilla model ("vanilla": the close delegate) or the min over
  the close / median / far delegates ("compound", eq. 22).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .. import fbi
from .. import metrics as M
from ..fbi.protocol import COMPOUND, detection, subset
from ..variants import Data, Spec

SELECTIONS = fbi.openworld.SELECTIONS
DELEGATES = fbi.openworld.DELEGATES


# ------------------------------------------------------------------------------------- database
def build_database(zoo_models: dict[str, nn.Module], inputs: torch.Tensor, labels: torch.Tensor,
                   specs: Sequence[Spec], data: Data, test: Data, *, k: int = 1,
                   max_drop: float = 0.15, progress: bool = True
                   ) -> tuple[fbi.Database, dict[str, Any]]:
    """Query every zoo model and its accepted variants into a :class:`fastfp.fbi.Database` (the
    vanilla model is named like its family); returns ``(db, info)`` with info ``kinds`` (variant
    kind per model, ``"vanilla"`` for the zoo model), ``accuracy`` and ``dropped`` (variants over
    the accuracy drop)."""
    from tqdm.auto import tqdm

    from .. import variants as V

    specs = [s for s in specs if s.kind != "identity"]  # identity = the vanilla model itself
    num_classes = int(next(iter(zoo_models.values()))(inputs[:1]).shape[1])
    db = fbi.Database.empty(inputs.shape[0], k=k, num_classes=num_classes,
                            ground_truth=np.asarray(labels))
    kinds, accs, dropped = [], [], []
    bar = tqdm(total=len(zoo_models) * (1 + len(specs)), desc="fbi variants", unit="model",
               disable=not progress)
    for fam, m in zoo_models.items():
        vs = {}
        for s in specs:
            vs[s.name] = s.apply(m, data)
            bar.update(1)
        kept, acc = V.accuracy_filter(m, vs, test[0], test[1], max_drop=max_drop)
        dropped += [f"{fam}/{n}" for n in vs if n not in kept]
        for name, model, kind, a in [(fam, m, "vanilla", acc[None])] + \
                [(f"{fam}/{n}", v, n.split(":")[0], acc[n]) for n, v in kept.items()]:
            model.eval()
            db.add(name, fam, fbi.query_topk(model, inputs, k))
            kinds.append(kind)
            accs.append(a)
        bar.update(1)
    bar.close()
    return db, {"kinds": kinds, "accuracy": accs, "dropped": dropped}


def distance_matrix(db: fbi.Database) -> np.ndarray:
    """Rajski distances between every pair of models on all inputs (the heatmap)."""
    S = db.symbols()
    return np.asarray(fbi.pairwise_rajski(S, S, k=db.k))


# --------------------------------------------------------------------------------- walled garden
def walled_garden(db: fbi.Database) -> dict:
    """Greedy identification of every database model (A = B): success rate and queries spent."""
    enc = fbi.encode(db.topk)
    res = [fbi.greedy_identify(enc, db.families, i) for i in range(db.num_models)]
    counts = M.identification_counts([r.family for r in res], db.families)
    L = np.asarray([r.L for r in res], dtype=np.float64)
    return {"success": counts["success"], "fail": counts["abstain_rate"], "error": counts["error"],
            "queries_mean": float(L.mean()), "queries_median": float(np.median(L)),
            "queries_max": int(L.max()), "black_boxes": db.num_models}


# ------------------------------------------------------------------------------- identification
def identification(db: fbi.Database, *, known_fams: Sequence[str], selection: str,
                   delegates: str, L: int, trials: int, seed: int,
                   fpr: float = 0.05) -> dict[str, Any]:
    """Open-world identification outcomes (see the module docstring); ``delegates`` is
    ``"vanilla"`` or ``"compound"``."""
    if selection not in ("all", "entropy"):
        raise ValueError(f"selection: identification uses 'all' or 'entropy', got {selection!r}")
    if delegates not in COMPOUND:
        raise ValueError(f"delegates: expected 'vanilla' or 'compound', got {delegates!r}")
    fam_arr = np.asarray(db.families)
    known_fams = list(known_fams)
    pred: list[str | None] = []
    truth: list[str] = []
    pred_unknown: list[str | None] = []
    taus: list[float] = []
    ties = 0
    for t in range(trials):
        rng = np.random.default_rng(seed * 7919 + t)
        # Alice's knowledge: each known family's vanilla model + a random half of its variants
        alice: list[int] = []
        tests: list[tuple[int, str | None]] = []
        for fam in known_fams:
            var = rng.permutation([i for i in db.members(fam) if db.names[i] != fam])
            half = len(var) // 2
            alice += [db.index(fam)] + [int(i) for i in var[:half]]
            tests += [(int(i), fam) for i in var[half:]]
        tests += [(int(i), None) for i in np.nonzero(~np.isin(fam_arr, known_fams))[0]]
        ow = fbi.OpenWorld(L, identify_selection=selection, delegates=COMPOUND[delegates], fpr=fpr,
                           trials=trials, seed=seed * 7919 + t).fit(subset(db, alice))
        taus.append(ow.tau_identify_)
        seeds = [int(rng.integers(2 ** 31)) for _ in tests]  # in the order identify() drew them
        results = ow.identify_many([db.topk[i] for i, _ in tests], seeds=seeds)
        for (_, true_fam), r in zip(tests, results, strict=True):
            ties += r.status == "abstain-tie"
            if true_fam is None:
                pred_unknown.append(r.family)
            else:
                pred.append(r.family)
                truth.append(true_fam)
    known = M.identification_counts(pred, truth)
    unknown = M.identification_counts(pred_unknown, [None] * len(pred_unknown))
    return {"success": known["success"], "abstain": known["abstain_rate"], "error": known["error"],
            "unknown_rejected": unknown["abstain_rate"], "ties": ties, "tau": float(np.mean(taus)),
            "black_boxes_known": known["n"] // trials,
            "black_boxes_unknown": unknown["n"] // trials}


# ------------------------------------------------------------------------------------ experiment
def known_families(families: Iterable[str]) -> list[str]:
    """Open world: the last seed of every architecture is unknown to Alice."""
    fams = list(dict.fromkeys(families))
    last: dict[str, int] = {}
    for f in fams:
        arch, _, s = f.rpartition("-s")
        last[arch] = max(last.get(arch, -1), int(s))
    return [f for f in fams if int(f.rpartition("-s")[2]) != last[f.rpartition("-s")[0]]]


def run(db: fbi.Database, info: dict[str, Any], *, L: int, trials: int,
        progress: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """All FBI results on database ``db``: ``(report["fbi"], {"roc": {selection: (scores, labels,
    auc)}, "distances": (M, M)})``."""
    from tqdm.auto import tqdm

    fams = db.family_names
    known = known_families(db.families)
    steps = len(SELECTIONS) + len(DELEGATES) - 1 + 4 + 1
    bar = tqdm(total=steps, desc="fbi experiments", disable=not progress)
    det_sel, det_del, roc = {}, {}, {}
    for sel in SELECTIONS:
        det_sel[sel], (s, y) = detection(db, selection=sel, delegate="close", L=L, trials=trials,
                                         seed=1)
        roc[sel] = (s, y, det_sel[sel]["roc_auc"])
        bar.update(1)
    for dk in DELEGATES:
        if dk == "close":  # the same fit as the 30/70 selection
            det_del[dk] = det_sel["30/70"]
            continue
        det_del[dk], _ = detection(db, selection="30/70", delegate=dk, L=L, trials=trials, seed=1)
        bar.update(1)
    ident = {}
    for sel in ("all", "entropy"):
        for dk in COMPOUND:
            ident[f"{sel}/{dk}"] = identification(db, known_fams=known, selection=sel, delegates=dk,
                                                  L=L, trials=trials, seed=3)
            bar.update(1)
    garden = walled_garden(db)
    bar.update(1)
    bar.close()
    kinds: dict[str, int] = {}
    for kd in info["kinds"]:
        kinds[kd] = kinds.get(kd, 0) + 1
    report = {
        "database": {"models": db.num_models, "vanilla": len(fams), "inputs": db.num_inputs,
                     "k": db.k,
                     "dropped": info["dropped"], "kinds": kinds, "known_families": known,
                     "L": L, "trials": trials},
        "detection": {"tpr_at_5fpr": det_sel["30/70"]["tpr_at_5fpr"],
                      "roc_auc": det_sel["30/70"]["roc_auc"],
                      "by_selection": det_sel, "by_delegate": det_del},
        "identification": {**{k: ident["entropy/compound"][k] for k in ("success", "abstain",
                                                                        "error",
                                                                          "unknown_rejected")},
                           "by_setting": ident},
        "walled_garden": garden,
    }
    return report, {"roc": roc, "distances": distance_matrix(db)}
