"""FBI experiment of the demo (Maho et al., TIFS'23, Sect. III-IV), at zoo scale, with
:mod:`fastfp.fbi`.

Families F(m): each zoo model m and its variants (the paper's procedures), stored in one
:class:`fastfp.fbi.Database` (top-k labels on the benign inputs, ground truth as the reference
class), then the accuracy filter of eq. (1) on that ground truth. Everything below is
:mod:`fastfp.fbi.protocol`, the functions ``fastfp fbi paper-tables`` runs, with the same seeds
and averaging: on one database the demo's detection and identification (Entropy selection) rows
are that command's Tables III, IV and VI. This module only lays out the experiment.

- **Walled garden** (I, F, A = B, k): every model of the database is the black box in turn;
  :func:`fastfp.fbi.greedy_identify` queries inputs until the candidates lie in one family.
- **Detection** (D, F, A != B, k): :class:`fastfp.fbi.OpenWorld` per input selection (All / 50-50
  / 30-70 / Entropy, close delegate) and per delegate (close / median / far, 30-70). Its ``fit``
  sets tau at 5 % FPR from the negatives (models outside the family) of ``trials`` random draws
  of L queries; the demo reports, per draw, the TPR of the members at that tau (the delegates
  themselves excluded: they are at distance 0) and the ROC AUC (:func:`fastfp.stats.roc_auc`).
- **Identification** (I, F, A != B, k), open world: Alice knows the families of seeds 0..S-2 (the
  vanilla model and a random half of each family's variants); black boxes are the other half of
  the known families' variants, plus every member of the unknown families (seed S-1), which she
  must reject (H0); :func:`fastfp.fbi.protocol.identification`, mean over trials.
  ``OpenWorld.fit`` on Alice's models only sets tau_identify, then
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

from .. import fbi, stats
from .._models import eval_mode
from ..fbi.protocol import (
    COMPOUND,
    MAX_DROP,
    accuracy_filter,
    detection_tables,
    identification,
    identification_table,
)
from ..variants import Data, Spec

__all__ = ["build_database", "distance_matrix", "identification", "known_families", "run",
           "walled_garden"]
SELECTIONS = fbi.openworld.SELECTIONS
DELEGATES = fbi.openworld.DELEGATES
SEED = 0  # the seed of fastfp fbi paper-tables' default, for both detection and identification


# ------------------------------------------------------------------------------------- database
def build_database(zoo_models: dict[str, nn.Module], inputs: torch.Tensor, labels: torch.Tensor,
                   specs: Sequence[Spec], data: Data, *, k: int = 1, progress: bool = True
                   ) -> tuple[fbi.Database, dict[str, Any]]:
    """Query every zoo model and its variants into a :class:`fastfp.fbi.Database` (the vanilla
    model is named like its family, a variant ``family/spec``; ground truth ``labels``); returns
    ``(db, info)`` with info ``kinds`` (variant kind per row, ``"vanilla"`` for the zoo model).
    The accuracy filter runs in :func:`run`, on this database."""
    from tqdm.auto import tqdm

    specs = [s for s in specs if s.kind != "identity"]  # identity = the vanilla model itself
    num_classes = int(next(iter(zoo_models.values()))(inputs[:1]).shape[1])
    db = fbi.Database.empty(inputs.shape[0], k=k, num_classes=num_classes,
                            ground_truth=np.asarray(labels))
    kinds = []
    bar = tqdm(total=len(zoo_models) * (1 + len(specs)), desc="fbi variants", unit="model",
               disable=not progress)
    for fam, m in zoo_models.items():
        # One variant at a time, made just before it is queried: the bar moves per model, and
        # only one variant is held in memory.
        for spec in [None, *specs]:
            name = fam if spec is None else f"{fam}/{spec.name}"
            bar.set_postfix_str(name, refresh=False)
            model = m if spec is None else spec.apply(m, data)
            with eval_mode(model):
                db.add(name, fam, fbi.query_topk(model, inputs, k))
            kinds.append("vanilla" if spec is None else spec.kind)
            bar.update(1)
    bar.close()
    return db, {"kinds": kinds}


def distance_matrix(db: fbi.Database) -> np.ndarray:
    """Rajski distances between every pair of models on all inputs (the heatmap)."""
    S = db.symbols()
    return np.asarray(fbi.pairwise_rajski(S, S, k=db.k))


# --------------------------------------------------------------------------------- walled garden
def walled_garden(db: fbi.Database) -> dict:
    """Greedy identification of every database model (A = B): success rate and queries spent."""
    enc = fbi.encode(db.topk)
    res = [fbi.greedy_identify(enc, db.families, i) for i in range(db.num_models)]
    counts = stats.identification_counts([r.family for r in res], db.families)
    L = np.asarray([r.L for r in res], dtype=np.float64)
    return {"success": counts["success"], "fail": counts["abstain_rate"], "error": counts["error"],
            "queries_mean": float(L.mean()), "queries_median": float(np.median(L)),
            "queries_max": int(L.max()), "black_boxes": db.num_models}


# ------------------------------------------------------------------------------------ experiment
def known_families(families: Iterable[str]) -> list[str]:
    """Open world: the last seed of every architecture is unknown to Alice."""
    fams = list(dict.fromkeys(families))
    last: dict[str, int] = {}
    for f in fams:
        arch, _, s = f.rpartition("-s")
        last[arch] = max(last.get(arch, -1), int(s))
    return [f for f in fams if int(f.rpartition("-s")[2]) != last[f.rpartition("-s")[0]]]


def run(db: fbi.Database, info: dict[str, Any], *, L: int, trials: int, seed: int = SEED,
        max_drop: float = MAX_DROP, progress: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """All FBI results on database ``db`` after the accuracy filter: ``(report["fbi"], {"roc":
    {selection: (scores, labels, auc)}, "distances": (M, M), "families": (M,)})``; ``info["kinds"]``
    holds the variant kind of each row of ``db``. The detection and Entropy identification rows
    are ``fastfp.fbi.protocol.paper_tables(db, trials=trials, Ls=[L], seed=seed,
    max_drop=max_drop, known_fams=known_families(db.families), protocol="paper")``'s."""
    from tqdm.auto import tqdm

    kind_of = dict(zip(db.names, info["kinds"], strict=True))
    db, dropped = accuracy_filter(db, max_drop)
    fams = db.family_names
    known = known_families(db.families)
    steps = len(SELECTIONS) + len(DELEGATES) - 1 + 2 * len(COMPOUND) + 1
    bar = tqdm(total=steps, desc="fbi experiments", disable=not progress)

    def tick() -> None:
        bar.update(1)

    det_sel, det_del, scores = detection_tables(db, L=L, trials=trials, seed=seed, tick=tick)
    roc = {sel: (s, y, det_sel[sel]["roc_auc"]) for sel, (s, y) in scores.items()}
    ident = {}
    for sel in ("all", "entropy"):
        by_dk = identification_table(db, Ls=[L], trials=trials, seed=seed, selection=sel,
                                     known_fams=known, tick=tick)
        ident.update({f"{sel}/{dk}": by_L[str(L)] for dk, by_L in by_dk.items()})
    garden = walled_garden(db)
    bar.update(1)
    bar.close()
    kinds: dict[str, int] = {}
    for name in db.names:
        kinds[kind_of[name]] = kinds.get(kind_of[name], 0) + 1
    report = {
        "database": {"models": db.num_models, "vanilla": len(fams), "inputs": db.num_inputs,
                     "k": db.k, "dropped": dropped, "max_drop": max_drop, "kinds": kinds,
                     "known_families": known, "L": L, "trials": trials, "seed": seed},
        "detection": {"tpr_at_5fpr": det_sel["30/70"]["tpr_at_5fpr"],
                      "roc_auc": det_sel["30/70"]["roc_auc"],
                      "by_selection": det_sel, "by_delegate": det_del},
        "identification": {**{k: ident["entropy/compound"][k]
                              for k in ("success", "abstain", "error", "unknown_rejected")},
                           "by_setting": ident},
        "walled_garden": garden,
    }
    return report, {"roc": roc, "distances": distance_matrix(db), "families": list(db.families)}
