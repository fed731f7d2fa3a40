"""The empirical law of identification cost (paper eq. 13), fitted rather than assumed:

    E(L) ~ a * E(|F|) * nF / k + beta(k)        (the paper reports a ~ 0.002 on ImageNet)

``query_law_experiment`` runs greedy identification on random subsets of nF families for each k
and records the mean number of queries; ``fit_query_law`` fits one slope a and one intercept
beta(k) per k by least squares and reports R^2.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from fastfp import _validate

from .greedy import greedy_identify


def fit_query_law(records: Iterable[Mapping[str, float]]) -> dict[str, Any]:
    """records: dicts with family_size (E|F|), n_families, k, queries (mean L)."""
    rec = list(records)
    if len(rec) < 2:
        raise ValueError("records: need at least two (family_size, n_families, k, queries) records")
    ks = sorted({int(r["k"]) for r in rec})
    x = np.array([r["family_size"] * r["n_families"] / r["k"] for r in rec], dtype=np.float64)
    y = np.array([r["queries"] for r in rec], dtype=np.float64)
    design = np.column_stack([x] + [np.array([float(r["k"] == kk) for r in rec]) for kk in ks])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    pred = design @ coef
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else 1.0
    return {
        "slope": float(coef[0]),
        "beta": {kk: float(b) for kk, b in zip(ks, coef[1:], strict=True)},
        "r2": r2,
        "paper_slope": 0.002,
        "n_records": len(rec),
    }


def query_law_experiment(
    outputs: Any,
    families: Sequence[Any],
    *,
    k_values: Sequence[int] = (1, 3, 5),
    n_families: Sequence[int] | None = None,
    trials: int = 20,
    seed: int = 0,
    max_queries: int | None = None,
    progress: bool = False,
) -> dict:
    """Mean greedy-identification cost vs (E|F|, nF, k) on random family subsets, plus the fit.

    outputs: (M, N, c) top-k labels with c >= max(k_values); families: one label per model.
    """
    out = np.asarray(outputs)
    if out.ndim == 2:
        out = out[:, :, None]
    fams = list(families)
    if len(fams) != out.shape[0]:
        raise ValueError(f"families: has {len(fams)} entries, expected M = {out.shape[0]}")
    names = list(dict.fromkeys(fams))
    if n_families is None:
        n_families = sorted({n for n in (2, len(names) // 2, len(names)) if n >= 2})
    for kk in k_values:
        _validate.integer("k_values", kk, lo=1, hi=out.shape[2])
    for n in n_families:
        _validate.integer("n_families", n, lo=2, hi=len(names))
    trials = _validate.integer("trials", trials, lo=1)
    rng = np.random.default_rng(_validate.integer("seed", seed, lo=0))
    fam_arr = np.array([names.index(f) for f in fams])
    records = []
    from tqdm.auto import tqdm

    grid = [(kk, n) for kk in k_values for n in n_families]
    for kk, n in tqdm(grid, desc="E(L) law", disable=not progress):
        Ls, sizes = [], []
        for _ in range(trials):
            chosen = rng.choice(len(names), size=n, replace=False)
            rows = np.flatnonzero(np.isin(fam_arr, chosen))
            sub_f = fam_arr[rows]
            bb = int(rng.integers(rows.size))
            r = greedy_identify(out[rows][:, :, :kk], sub_f.tolist(), bb, max_queries=max_queries)
            Ls.append(r.L)
            sizes.append(rows.size / n)
        records.append(
            {
                "k": kk,
                "n_families": n,
                "family_size": float(np.mean(sizes)),
                "queries": float(np.mean(Ls)),
            }
        )
    return {"records": records, "fit": fit_query_law(records)}
