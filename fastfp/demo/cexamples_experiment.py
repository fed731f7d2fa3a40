"""Characteristic-examples experiment of the demo (Wang et al., IJCAI'21, Sect. 4), at zoo scale.

For each protected model (one architecture, several seeds): fingerprints with the four methods,
robustness on its pruned copies (global magnitude pruning 40..80 %, each repeat retrained briefly,
see :mod:`fastfp.metrics`), transferability to the same architecture's other seeds (the paper's
"variant model with similar functionality", like VGG-19 for VGG-16) and, separately, to the other
architectures; uniqueness = robustness - transferability. Averages over the protected seeds.

As in the paper (whose fingerprints are 100 % accurate on the base model), the metrics are computed
on the examples that fit the protected model; ``base_accuracy`` is the fraction that did before
that selection (examples that did not converge within the steps), ``fitted`` their number.

Each fingerprint records the null that :func:`fastfp.cexamples.verdict` tests against: the match
rate of the zoo models that are not copies of the protected one, Laplace-smoothed
(:func:`fastfp.cexamples.verdict.null_rate_of`), per group (other seeds of its architecture,
other architectures) and the higher of the two, so that the group the examples transfer to most
sets the bar (``meta["null_rate"]``, ``meta["null_models"]``: that group's size,
``meta["null_source"]``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .. import metrics
from .._models import eval_mode
from ..cexamples import METHODS
from ..cexamples.api import StepBar
from ..cexamples.verdict import null_rate_of
from ..fingerprint import Fingerprint
from ..variants import Data

NULL_SOURCE = "demo transferability"


def _generate(model: nn.Module, method: str, cfg: dict[str, Any], seed: int,
              delta: float | None = None,
              progress: bool | Callable[[int, int], None] = False) -> Fingerprint:
    from .. import cexamples

    kw: dict[str, Any] = {}
    if method != "vanilla":
        kw["delta"] = cfg["delta"] if delta is None else delta
    if method == "ltrc":
        kw["k"] = cfg["k"]
    if method in ("rcgm", "ltrc"):
        kw["q"] = cfg["q"]
    return cexamples.generate(model, cfg["num"], (1, 32, 32), 10, method=method, steps=cfg["steps"],
                              seed=seed, progress=progress, **kw)


def fitted(fp: Fingerprint, model: nn.Module) -> Fingerprint:
    """The examples the protected model classifies as their labels (the paper's fingerprints are
    100 % on the base model); all of them when none fits."""
    with torch.no_grad(), eval_mode(model):
        keep = model(fp.inputs).argmax(-1) == fp.labels
    if not bool(keep.any()):
        return fp
    return Fingerprint(fp.inputs[keep], fp.labels[keep], dict(fp.meta, fitted=int(keep.sum())))


def record_null(fp: Fingerprint, same: list[nn.Module], others: list[nn.Module]) -> Fingerprint:
    """Store in ``fp.meta`` the null rate of the models that are not copies (``same``: other seeds
    of the protected architecture, ``others``: other architectures): the higher group's."""
    rate, count = max((null_rate_of(fp, group), len(group)) for group in (same, others) if group)
    fp.meta.update(null_rate=rate, null_models=count, null_source=NULL_SOURCE)
    return fp


def evaluate(fp: Fingerprint, copies: metrics.Copies, same: Iterable[nn.Module],
             others: Iterable[nn.Module]) -> dict[str, Any]:
    """Robustness on ``copies``, transferability to ``same`` (other seeds) and ``others`` (other
    architectures), and the uniqueness scores."""
    per = metrics.robustness_per_rate(fp, copies=copies)
    rob = float(np.mean(list(per.values())))
    t_same = metrics.transferability(fp, same)
    t_other = metrics.transferability(fp, others)
    return {"robustness": rob, "transferability": t_same, "uniqueness": rob - t_same,
            "transferability_other_arch": t_other, "uniqueness_other_arch": rob - t_other,
            "per_rate": {f"{r:g}": {"robustness": v, "uniqueness": v - t_same} for r,
                         v in per.items()}}


def run(zoo_models: dict[str, nn.Module], protected: list[str], cfg: dict[str, Any], data: Data,
        *, progress: bool = True, log: Callable[[str], object] = print
        ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Fingerprint], dict[str, float]]:
    """Returns (results per method averaged over ``protected``, per-seed rows, fingerprints of the
    first protected model with their null rate recorded, timing)."""
    timing = {"pruned_copies_s": 0.0, "generate_s": 0.0, "evaluate_s": 0.0}
    rows = []
    first_fps = {}
    # One bar over every example-step (a fingerprint takes many seconds on a CPU).
    bar = StepBar(len(protected) * len(METHODS) * cfg["num"], cfg["steps"], "c-examples",
                  enabled=progress)
    for pi, name in enumerate(protected):
        model = zoo_models[name]
        arch = name.rpartition("-s")[0]
        same = [m for n, m in zoo_models.items() if n != name and n.rpartition("-s")[0] == arch]
        others = [m for n, m in zoo_models.items() if n.rpartition("-s")[0] != arch]
        if not same or not others:
            raise ValueError(f"model: {name!r} needs another seed of its architecture and other "
                             "architectures in the zoo")
        t0 = time.perf_counter()
        copies = metrics.pruned_copies(model, cfg["rates"], cfg["repeats"], data,
                                       epochs=cfg["prune_epochs"], seed=pi, progress=progress)
        timing["pruned_copies_s"] += time.perf_counter() - t0
        for method in METHODS:
            bar.bar.set_description(f"c-examples {name} {method}", refresh=False)
            t0 = time.perf_counter()
            fp = _generate(model, method, cfg, seed=pi, progress=bar)
            timing["generate_s"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            base = metrics.fp_accuracy(fp, model)
            fp = record_null(fitted(fp, model), same, others)
            r = evaluate(fp, copies, same, others)
            timing["evaluate_s"] += time.perf_counter() - t0
            r.update(model=name, method=method, base_accuracy=base, fitted=len(fp),
                     delta=fp.meta["delta"], k=fp.meta["k"], q=fp.meta["q"],
                     null_rate=fp.meta["null_rate"], null_models=fp.meta["null_models"])
            rows.append(r)
            if pi == 0:
                first_fps[method] = fp
    bar.close()
    summary = {}
    for method in METHODS:
        rs = [r for r in rows if r["method"] == method]
        keys = ("robustness", "transferability", "uniqueness", "transferability_other_arch",
                "uniqueness_other_arch", "base_accuracy")
        s: dict[str, Any] = {k: float(np.mean([r[k] for r in rs])) for k in keys}
        s["uniqueness_std"] = float(np.std([r["uniqueness"] for r in rs]))
        s["per_rate"] = {rate: {k: float(np.mean([r["per_rate"][rate][k] for r in rs]))
                                for k in ("robustness",
                                          "uniqueness")} for rate in rs[0]["per_rate"]}
        s.update(delta=rs[0]["delta"], k=rs[0]["k"], q=rs[0]["q"], seeds=len(rs))
        summary[method] = s
    return summary, rows, first_fps, timing


def sweep(zoo_models: dict[str, nn.Module], name: str, cfg: dict[str, Any], data: Data,
          settings: Iterable[tuple[str, float, int]], *, num: int | None = None,
          progress: bool = True) -> list[dict[str, Any]]:
    """Robustness / transferability / uniqueness of ``name``'s fingerprints for each
    ``(method, delta, k)`` in ``settings`` (the trade-off over delta, paper Fig. 4, and the k
    ablation, paper Table 2). ``num`` overrides the number of examples (cheaper sweeps)."""
    model = zoo_models[name]
    arch = name.rpartition("-s")[0]
    same = [m for n, m in zoo_models.items() if n != name and n.rpartition("-s")[0] == arch]
    others = [m for n, m in zoo_models.items() if n.rpartition("-s")[0] != arch]
    settings = list(settings)
    if not settings:
        return []
    copies = metrics.pruned_copies(model, cfg["rates"], cfg["repeats"], data,
                                   epochs=cfg["prune_epochs"], seed=0, progress=progress)
    out = []
    bar = StepBar(len(settings) * (num or cfg["num"]), cfg["steps"], "sweep", enabled=progress)
    for method, delta, k in settings:
        c = dict(cfg, k=k, num=num or cfg["num"])
        bar.bar.set_description(f"sweep {method} delta={delta:g} k={k}", refresh=False)
        fp = _generate(model, method, c, seed=0, delta=delta, progress=bar)
        base = metrics.fp_accuracy(fp, model)
        fp = fitted(fp, model)
        r = evaluate(fp, copies, same, others)
        out.append({"method": method, "delta": delta, "k": fp.meta["k"], "num": c["num"],
                    "fitted": len(fp),
                    "robustness": r["robustness"], "transferability": r["transferability"],
                    "uniqueness": r["uniqueness"], "base_accuracy": base})
    bar.close()
    return out
