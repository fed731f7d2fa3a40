"""FBI experiment of the demo (Maho et al., TIFS'23, Sect. IV), at zoo scale.

Families F(m): each zoo model m and its variants (the paper's procedures, accuracy-drop filtered).
Every model and variant is queried once on the benign inputs (top-k labels); a black box is
summarised by the surjection symbols S_k (rank of the ground-truth label among its top-k).

- **Detection** (D, F, A != B, k): for every hypothesis family F(m) and every other model or variant b,
  the Rajski distance D_L(b, delegate(F)) on L queries drawn from X' (selection All / 50-50 / 30-70
  / Entropy); positives are members of F (the delegate itself excluded: it is trivially at distance
  0), negatives all the rest. The threshold comes from the negatives (FPR 5 %), pooled over
  hypotheses; repeated over ``trials`` draws of the L queries.
- **Identification** (I, F, A != B, k), open world: Alice knows the families of seeds 0..S-2 (their
  vanilla model and, for the compound distance, a random half of each family's variants); black
  boxes are the other half of the known families' variants, plus every member of the unknown
  families (seed S-1), which she must reject (H0). Decide argmin_i D(b, F_i) when below the
  threshold tau, else abstain (ties abstain); tau is the 5 %-FPR threshold computed on Alice's own
  known models only. D(b, F_i) is the distance to the vanilla model ("vanilla") or the min over
  the known members ("compound", eq. 22).
"""

from __future__ import annotations

import numpy as np
import torch

from .. import metrics as M

SELECTIONS = ("all", "50/50", "30/70", "entropy")
DELEGATES = ("close", "median", "far")


# ------------------------------------------------------------------------------------- database
@torch.no_grad()
def topk_labels(model, x: torch.Tensor, k: int, batch_size: int = 512) -> np.ndarray:
    out = [model(x[i:i + batch_size]).topk(k, dim=-1).indices for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()


def build_database(zoo_models: dict, inputs, labels, specs, data, test, *, k: int = 1,
                   max_drop: float = 0.15, progress: bool = True):
    """Query every zoo model and its accepted variants; returns a dict with ``names``, ``families``,
    ``kinds`` (variant kind, ``"vanilla"`` for the zoo model), ``topk`` (M, N, k), ``symbols``
    (M, N), ``accuracy`` (test accuracy of each) and ``dropped`` (variants over the accuracy drop)."""
    from tqdm.auto import tqdm

    from .. import variants as V
    from ..fbi import surjection

    names, families, kinds, topk, accs, dropped = [], [], [], [], [], []
    specs = [s for s in specs if s.kind != "identity"]  # identity = the vanilla model itself
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
            names.append(name)
            families.append(fam)
            kinds.append(kind)
            accs.append(a)
            topk.append(topk_labels(model, inputs, k))
        bar.update(1)
    bar.close()
    topk = np.stack(topk)
    ref = np.asarray(labels)
    symbols = np.stack([np.asarray(surjection(t, ref, k)) for t in topk]).astype(np.int64)
    return {"names": names, "families": families, "kinds": kinds, "topk": topk, "symbols": symbols,
            "accuracy": accs, "dropped": dropped, "k": k, "labels": ref}


def distances(db, rows, cols, idx) -> np.ndarray:
    """Rajski distances between models ``rows`` and ``cols`` on the inputs ``idx``."""
    from ..fbi import pairwise_rajski

    S = db["symbols"]
    return np.asarray(pairwise_rajski(S[np.asarray(rows)][:, idx], S[np.asarray(cols)][:, idx], k=db["k"]))


# ------------------------------------------------------------------------------------ selection
def entropy_ranking(db, known: list[int]) -> np.ndarray:
    """Inputs sorted by the entropy of the known vanilla models' top-1 labels, highest first."""
    top1 = db["topk"][known][:, :, 0]  # (A, N)
    ent = np.zeros(top1.shape[1])
    for c in np.unique(top1):
        p = (top1 == c).mean(0)
        ent -= np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)
    return np.argsort(-ent, kind="stable")


def select(strategy: str, db, hyp: int, L: int, rng, ranking) -> np.ndarray:
    """L query indices drawn from X' (the paper's selections, Sect. IV-B2)."""
    N = db["symbols"].shape[1]
    if strategy == "all":
        return rng.choice(N, size=min(L, N), replace=False)
    if strategy == "entropy":
        head = ranking[:max(2 * L, N // 4)]
        return rng.choice(head, size=min(L, len(head)), replace=False)
    share = 0.5 if strategy == "50/50" else 0.3
    correct = db["topk"][hyp, :, 0] == db["labels"]
    good, bad = np.nonzero(correct)[0], np.nonzero(~correct)[0]
    n_good = min(len(good), max(1, round(L * share)))
    n_bad = min(len(bad), L - n_good)
    return np.concatenate([rng.choice(good, n_good, replace=False), rng.choice(bad, n_bad, replace=False)])


def delegate(db, fam: str, which: str, full: np.ndarray) -> int:
    """Member of ``fam`` closest to / at median distance of / farthest from the vanilla model."""
    members = [i for i, f in enumerate(db["families"]) if f == fam]
    van = db["names"].index(fam)
    d = full[van, members]
    order = np.argsort(d, kind="stable")
    pos = {"close": 0, "median": len(order) // 2, "far": len(order) - 1}[which]
    return members[order[pos]]


# ------------------------------------------------------------------------------------ detection
def detection(db, *, selection: str, delegate_kind: str, L: int, trials: int, seed: int, full, ranking):
    """Pooled scores (-distance) and labels over hypotheses; mean/std of TPR@5% and AUC over trials."""
    fams = list(dict.fromkeys(db["families"]))
    fam_arr = np.asarray(db["families"])
    tprs, aucs = [], []
    last = None
    for t in range(trials):
        rng = np.random.default_rng(seed * 1000 + t)
        scores, labels = [], []
        for fam in fams:
            d = delegate(db, fam, delegate_kind, full)
            idx = select(selection, db, db["names"].index(fam), L, rng, ranking)
            dist = distances(db, [d], range(len(fam_arr)), idx)[0]
            keep = np.arange(len(fam_arr)) != d
            scores.append(-dist[keep])
            labels.append((fam_arr == fam)[keep].astype(int))
        s, y = np.concatenate(scores), np.concatenate(labels)
        tprs.append(M.tpr_at_fpr(s, y, 0.05))
        aucs.append(M.roc_auc(s, y))
        last = (s, y)
    return {"tpr_at_5fpr": float(np.mean(tprs)), "tpr_at_5fpr_std": float(np.std(tprs)),
            "roc_auc": float(np.mean(aucs)), "roc_auc_std": float(np.std(aucs)),
            "positives": int(last[1].sum()), "negatives": int((1 - last[1]).sum())}, last


# ------------------------------------------------------------------------------- identification
def identification(db, *, known_fams, selection: str, compound: bool, L: int, trials: int, seed: int,
                   ranking, fpr: float = 0.05):
    """Open-world identification outcomes (see the module docstring)."""
    if selection not in ("all", "entropy"):
        raise ValueError(f"selection: identification uses 'all' or 'entropy', got {selection!r}")
    fam_arr = np.asarray(db["families"])
    kinds = np.asarray(db["kinds"])
    known_fams = list(known_fams)
    res = {"correct": 0, "abstain": 0, "wrong": 0, "unknown_abstain": 0, "unknown_wrong": 0}
    for t in range(trials):
        rng = np.random.default_rng(seed * 7919 + t)
        # Alice's knowledge: each known family's vanilla model + a random half of its variants
        alice = {}
        tests = []
        for fam in known_fams:
            van = db["names"].index(fam)
            var = np.nonzero((fam_arr == fam) & (kinds != "vanilla"))[0]
            var = rng.permutation(var)
            half = len(var) // 2
            alice[fam] = [van] + (list(var[:half]) if compound else [])
            tests += [(int(i), fam) for i in var[half:]]
        tests += [(int(i), None) for i in np.nonzero(~np.isin(fam_arr, known_fams))[0]]
        idx = select(selection, db, 0, L, rng, ranking)  # "all" or "entropy": no hypothesis needed
        alice_rows = sorted({i for rows in alice.values() for i in rows})

        def fam_dist(rows_b):
            # (len(rows_b), F): distance of each black box to each known family (min over its rows)
            D = distances(db, rows_b, alice_rows, idx)
            col = {r: j for j, r in enumerate(alice_rows)}
            return np.stack([D[:, [col[r] for r in alice[f]]].min(1) for f in known_fams], 1)

        # tau from Alice's own models: distances to the *other* known families, 5 % FPR
        Da = fam_dist(alice_rows)
        own = np.asarray([known_fams.index(db["families"][r]) for r in alice_rows])
        neg = Da[own[:, None] != np.arange(len(known_fams))[None, :]]
        tau = np.quantile(neg, fpr, method="lower")  # decide positive iff distance < tau
        Db = fam_dist([i for i, _ in tests])
        for (i, truth), row in zip(tests, Db):
            best = row.min()
            winners = np.nonzero(row == best)[0]
            decided = None if (best >= tau or len(winners) > 1) else known_fams[winners[0]]
            if truth is None:
                res["unknown_abstain" if decided is None else "unknown_wrong"] += 1
            elif decided is None:
                res["abstain"] += 1
            else:
                res["correct" if decided == truth else "wrong"] += 1
    n_known = res["correct"] + res["abstain"] + res["wrong"]
    n_unknown = res["unknown_abstain"] + res["unknown_wrong"]
    return {"success": res["correct"] / max(n_known, 1), "abstain": res["abstain"] / max(n_known, 1),
            "error": res["wrong"] / max(n_known, 1),
            "unknown_rejected": res["unknown_abstain"] / max(n_unknown, 1),
            "black_boxes_known": n_known // trials, "black_boxes_unknown": n_unknown // trials}
