"""``fastfp demo``: both papers' experiments end to end on one machine, no downloads.

Stages: (1) the embedded zoo (:mod:`fastfp.zoo`, trained once then cached); (2) characteristic
examples with the four methods on the protected models, robustness / transferability / uniqueness
(IJCAI'21 Tables 1-4 style) and the trade-off over delta (Fig. 4); (3) FBI: every zoo model's
variants, detection TPR at 5 % FPR and ROC AUC per input selection and delegate, open-world
identification success / abstain / error (TIFS'23 Tables III-IV, Sect. IV-C), and the walled
garden's greedy identification (queries per black box, Sect. III-B); (4) figures (PNG) and
a JSON report. The first line of a run says what it does and about how long it takes (measured:
:data:`MEASURED_S`); bars count optimizer steps (zoo training), example-steps (fingerprints) and
models (FBI). ``--out`` keeps one run: an earlier run's files there are refused, or removed with
``force`` (only those: :func:`earlier_outputs`). The fingerprints saved in ``--out/fingerprints``
carry the transferability measured as their null rate, so ``fastfp verify`` decides on them.

JSON report schema ``fastfp.demo/1`` (stable; rates are fractions in [0, 1], times in seconds)::

    schema          "fastfp.demo/1"
    config          the settings used (quick, protected models, num, steps, q, delta, k, rates, ...)
    zoo             {name: {"test_accuracy", "benign_accuracy"}}
    cexamples       {method: {robustness, transferability, uniqueness,             (mean over seeds)
                              transferability_other_arch, uniqueness_other_arch,
                              uniqueness_std, base_accuracy, delta, k, q, seeds,
                              (metrics on the examples that fit the protected model;
                               base_accuracy = the fraction that fit before that selection)
                              per_rate: {"0.4": {robustness, uniqueness}, ...}}}
                    for method in vanilla, rc, rcgm, ltrc
    cexamples_runs  one row per (protected model, method), same fields + null_rate, null_models
                    (the null recorded in the fingerprint: see cexamples_experiment)
    sweep           [{method, delta, k, num, fitted, robustness, transferability, uniqueness,
                      base_accuracy}]
                    first protected model: the trade-off over delta (rcgm, ltrc) and the k ablation
    fbi.database    {models, vanilla, inputs, k, dropped: [names], max_drop, kinds: {kind: count},
                     known_families: [names], L, trials, seed}
                    dropped: the accuracy filter of eq. (1) on the benign inputs' ground truth
                    (fastfp.fbi.protocol.accuracy_filter); detection and entropy identification
                    are fastfp fbi paper-tables' Tables III, IV, VI on the same database
    fbi.detection   {tpr_at_5fpr, roc_auc,                                  (default: 30/70, close)
                     by_selection: {sel: {tpr_at_5fpr, tpr_at_5fpr_std, roc_auc, roc_auc_std,
                                          fpr, tau, positives, negatives}},
                     by_delegate: {close|median|far: {...same...}}}              (30/70)
                    fastfp.fbi.OpenWorld.fit: tau at 5 % FPR over the negatives of all draws;
                    tpr / fpr / AUC per draw (delegates' own pairs left out), mean and std
    fbi.identification {success, abstain, error, unknown_rejected,    (default: entropy, compound)
                     by_setting: {"<all|entropy>/<vanilla|compound>": {...same..., ties, tau,
                                  black_boxes_known, black_boxes_unknown}}}
                    open world (OpenWorld.identify); unknown_rejected: unknown families' black
                    boxes that abstain (H0)
    fbi.walled_garden {success, fail, error, queries_mean, queries_median, queries_max, black_boxes}
                    A = B: fastfp.fbi.greedy_identify of every database model over the whole
                    database; fail = stopped without a single family (no input separates them)
    timing          {zoo_s, cexamples_s, sweep_s, fbi_s, figures_s, total_s, ...}
    figures         [paths of the PNG files]
    environment     {fastfp, torch, python, threads}
"""

from __future__ import annotations

import os
import platform
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch.nn as nn

    from ..variants import Spec

SCHEMA = "fastfp.demo/1"

# Wall time of a whole run on 2 CPU cores, in seconds: (what a cold zoo cache adds, the rest),
# measured with `fastfp demo [--quick]` from a fresh clone on a quiet x86-64 machine with 2 cores
# (torch 2.14.1, 2026-12-07): default, load average 0.1 before the run, cold 4 min 49 s (the zoo's
# training stage 134 s of it), cached 3 min 28 s; --quick, load average 1.2-1.3, cold 70 s, cached
# 29 s. The first line of a run and `fastfp demo --help` state them; `timing` in the JSON report
# gives a run's own numbers.
MEASURED_S = {"quick": (41.0, 29.0), "default": (81.0, 208.0)}

# What a run writes into --out (besides nothing else): a later run refuses to mix with them unless
# forced, and --force removes only these.
FIGURES = ("cexamples.png", "cexamples_dct.png", "fbi_roc.png", "tradeoff.png",
           "fbi_distances.png")
DATABASE = "fbi-database.safetensors"
FINGERPRINTS = "fingerprints"
_FINGERPRINT_NAME = re.compile(r"[a-z]+-s[0-9]+-(vanilla|rc|rcgm|ltrc)\.safetensors")

# LTRC band at 32x32 for the digits. The paper's k = 2 is for CIFAR-10, whose images carry detail up
# to the highest frequencies. The digits are 8x8 images upsampled to 28x28: their content sits in
# the first ~9 of the 32 DCT frequencies per axis, so the band that models of the same data share
# is wider. Measured on cnn-s0 (30 examples, 200 steps, delta 0.03): transferability to the other
# seeds 100 % at k = 2 (uniqueness +0), 18 % at k = 8 (+59), 17 % at k = 16 (+41, but only 60 %
# of the examples fit the protected model within the steps). The demo's sweep re-measures k = 2, 16.
K_DIGITS = 8


def quick_variant_specs(smoothing_n: int) -> list[Spec]:
    """The variant specs of the --quick FBI database: one per procedure."""
    from ..variants import Spec

    return [Spec("half"), Spec("jpeg", 50), Spec("posterize", 4),
            Spec("smoothing", 0.04, {"n": smoothing_n}), Spec("finetune_last", 1),
            Spec("prune_all", 0.02), Spec("prune_last", 0.8), Spec("prune_global", 0.4)]


def config(*, quick: bool = False, model: str | None = None, seeds: int | None = None,
           num: int | None = None, steps: int | None = None,
           full_variants: bool = False) -> dict[str, Any]:
    """Settings of a run; ``quick`` is the small version used by the tests (times:
    :data:`MEASURED_S`)."""
    from .. import _validate, zoo

    cfg: dict[str, Any]
    if quick:
        cfg = {"quick": True, "num": 16, "steps": 60, "q": 3, "delta": 0.03, "k": K_DIGITS,
               "rates": (0.4, 0.6, 0.8), "repeats": 1, "prune_epochs": 1,
               "deltas": (), "ks": (2,), "fbi_inputs": 300, "L": 60, "trials": 2, "smoothing_n": 8,
               "fbi_quick": True, "protected_seeds": 1, "arch": "cnn"}
    else:
        cfg = {"quick": False, "num": 32, "steps": 200, "q": 5, "delta": 0.03, "k": K_DIGITS,
               "rates": (0.4, 0.5, 0.6, 0.7, 0.8), "repeats": 2, "prune_epochs": 1,
               "deltas": (0.0, 0.07), "ks": (2, 16), "fbi_inputs": 400, "L": 100, "trials": 5,
               "smoothing_n": 8, "fbi_quick": False, "protected_seeds": 2, "arch": "cnn"}
    cfg["full_variants"] = bool(full_variants)
    zoo_names = zoo.names(quick=quick)
    if model is not None:
        if model not in zoo_names:
            raise ValueError(f"model: {model!r} is not in the {'quick ' if quick else ''}zoo; "
                             f"expected one of {', '.join(zoo_names)}")
        cfg["arch"] = model.rpartition("-s")[0]
        first_seed = int(model.rpartition("-s")[2])
    else:
        first_seed = 0
    if seeds is not None:
        cfg["protected_seeds"] = _validate.integer("seeds", seeds, lo=1)
    if num is not None:
        cfg["num"] = _validate.integer("num", num, lo=1)
    if steps is not None:
        cfg["steps"] = _validate.integer("steps", steps, lo=1)
    arch_seeds = [int(n.rpartition("-s")[2]) for n in zoo_names
                  if n.rpartition("-s")[0] == cfg["arch"]]
    order = arch_seeds[arch_seeds.index(first_seed):] + arch_seeds[:arch_seeds.index(first_seed)]
    if cfg["protected_seeds"] > len(order):
        raise ValueError(f"seeds: the zoo has {len(order)} seeds of {cfg['arch']!r}, got "
                         f"{cfg['protected_seeds']}")
    cfg["protected"] = [f"{cfg['arch']}-s{s}" for s in order[:cfg["protected_seeds"]]]
    return cfg


def earlier_outputs(out: str | os.PathLike[str]) -> list[Path]:
    """The files an earlier run of the demo wrote into ``out`` (figures, the FBI database and its
    lock, the fingerprints of its protected model); nothing else in the folder counts."""
    out = Path(out)
    found = [out / n for n in (*FIGURES, DATABASE, DATABASE + ".lock")]
    found = [p for p in found if p.is_file() or p.is_symlink()]
    fps = out / FINGERPRINTS
    if fps.is_dir() and not fps.is_symlink():
        found += sorted(p for p in fps.iterdir()
                        if _FINGERPRINT_NAME.fullmatch(p.name) and (p.is_file() or p.is_symlink()))
    return found


def check_output(out: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Create ``out`` if needed and make sure it can be written (before any long work). A folder
    that holds an earlier run's files is refused, so that two runs never mix, unless ``force``
    (then :func:`run` removes those files first)."""
    from .. import _validate

    out = _validate.path("--out", out)
    if not isinstance(force, bool):
        raise TypeError(f"force: expected a bool, got {type(force).__name__}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionError(f"--out: cannot create the output folder {str(out)!r}: "
                              f"{exc.strerror}") from None
    if not out.is_dir():
        raise NotADirectoryError(f"--out: {str(out)!r} is not a folder")
    if not os.access(out, os.W_OK | os.X_OK):
        raise PermissionError(f"--out: the output folder {str(out)!r} is not writable")
    earlier = earlier_outputs(out)
    if earlier and not force:
        names = ", ".join(str(p.relative_to(out)) for p in earlier[:3])
        more = f" and {len(earlier) - 3} more" if len(earlier) > 3 else ""
        raise FileExistsError(f"--out: {str(out)!r} holds the results of an earlier fastfp demo "
                              f"run ({names}{more}); pass --force to replace them, or choose "
                              "another --out")
    return out


def clear_earlier(out: str | os.PathLike[str]) -> list[Path]:
    """Remove the files of an earlier run from ``out`` (:func:`earlier_outputs`, nothing else; the
    fingerprints folder too when that leaves it empty); returns what was removed."""
    out = Path(out)
    removed = earlier_outputs(out)
    for p in removed:
        p.unlink(missing_ok=True)
    fps = out / FINGERPRINTS
    if fps.is_dir() and not fps.is_symlink() and not any(fps.iterdir()):
        fps.rmdir()
    return removed


def _duration(seconds: float) -> str:
    """A rough duration: to 5 s below 90 s, else to half a minute (an estimate, not a promise)."""
    if seconds < 90:
        return f"{max(5, round(seconds / 5) * 5)} s"
    half_minutes = round(seconds / 30)
    return f"{half_minutes // 2}{'.5' if half_minutes % 2 else ''} min"


def expected_seconds(cfg: dict[str, Any], untrained: int, total: int) -> float:
    """The measured wall time of ``cfg``'s mode on 2 CPU cores when ``untrained`` of the zoo's
    ``total`` models must be trained first."""
    zoo_s, rest_s = MEASURED_S["quick" if cfg["quick"] else "default"]
    return rest_s + zoo_s * untrained / max(total, 1)


def intro(cfg: dict[str, Any], untrained: Iterable[str], total: int) -> str:
    """The first line of a run: what it does and about how long it takes (from
    :data:`MEASURED_S`)."""
    from .. import zoo

    untrained = list(untrained)
    mode = "--quick" if cfg["quick"] else "default settings"
    zoo_s = MEASURED_S["quick" if cfg["quick"] else "default"][0]
    cache = f"{zoo.cache_dir()}, set by $FASTFP_CACHE"
    if untrained:
        which = "" if len(untrained) == total else f"{len(untrained)} of its models, "
        first = (f"trains the {total}-model digits zoo once ({which}adding about "
                 f"{_duration(zoo_s * len(untrained) / total)}; cached in {cache})")
    else:
        first = f"loads the {total}-model digits zoo from its cache ({cache})"
    protected = ", ".join(cfg["protected"])
    default = config(quick=cfg["quick"])
    changed = any(cfg.get(k) != default.get(k)
                  for k in ("num", "steps", "protected_seeds", "full_variants"))
    note = (" (measured with the mode's own settings; more --num, --steps, --seeds or "
            "--full-variants take longer)") if changed else ""
    return (f"fastfp demo ({mode}): {first}, then fingerprints {protected} with the four "
            "characteristic-example methods and runs FBI over the zoo's variants: about "
            f"{_duration(expected_seconds(cfg, len(untrained), total))} on 2 CPU cores{note}.")


def help_times() -> str:
    """The measured wall times, as ``fastfp demo --help`` states them."""
    q, d = (sum(MEASURED_S[m]) for m in ("quick", "default"))
    qw, dw = (MEASURED_S[m][1] for m in ("quick", "default"))
    return (f"Default run: about {_duration(d)} on 2 CPU cores including zoo training "
            f"({_duration(dw)} with the zoo cached); --quick: about {_duration(q)} "
            f"({_duration(qw)} cached).")


def cached_zoo(names: Iterable[str]) -> dict[str, nn.Module]:
    """The zoo models among ``names`` that the cache already holds (nothing is trained)."""
    from .. import zoo

    models: dict[str, nn.Module] = {}
    for n in names:
        try:
            models[n] = zoo.load(n, train=False)
        except FileNotFoundError:
            pass
    return models


def train_zoo(names: Iterable[str], have: dict[str, nn.Module], *,
              progress: bool = True) -> dict[str, nn.Module]:
    """``{name: model}`` for ``names``: ``have``'s models, the others trained now (and cached),
    with a bar over their optimizer steps (a model takes seconds to train on a CPU)."""
    import math

    from torch.optim.optimizer import register_optimizer_step_post_hook
    from tqdm.auto import tqdm

    from .. import zoo

    names = list(names)
    missing = [n for n in names if n not in have]
    if not missing:
        return {n: have[n] for n in names}
    batches = math.ceil(len(zoo.digits().y_train) / zoo.BATCH)
    total = sum(zoo.ARCHITECTURES[zoo.parse_name(n)[0]][2] * batches for n in missing)
    bar = tqdm(total=total, desc="zoo training", unit="step", disable=not progress,
               dynamic_ncols=True)
    # zoo.load trains with its own optimizer: a global step hook counts its steps while it runs.
    hook = register_optimizer_step_post_hook(lambda *_: bar.update(1))
    try:
        for i, n in enumerate(missing):
            bar.set_postfix_str(f"{n} ({i + 1}/{len(missing)} models)", refresh=False)
            have = {**have, n: zoo.load(n)}
    finally:
        hook.remove()
        bar.close()
    return {n: have[n] for n in names}


def run(cfg: dict[str, Any], out: str | os.PathLike[str], *, progress: bool = True,
        figures: bool = True, force: bool = False,
        log: Callable[[str], object] = print) -> dict[str, Any]:
    """Run the whole demo; returns the JSON-ready report (also printed as tables via ``log``,
    after a first line that says what the run does and about how long it takes). ``out`` must
    not hold an earlier run's files unless ``force``, which removes them first
    (:func:`clear_earlier`)."""
    import numpy as np
    import torch

    from .. import zoo
    from . import cexamples_experiment as CE
    from . import fbi_experiment as FE
    from . import tables

    out = check_output(out, force=force)
    t_start = time.perf_counter()
    timing = {}
    report: dict[str, Any] = {"schema": SCHEMA,
              "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}}

    # 1. zoo
    t0 = time.perf_counter()
    names = zoo.names(quick=cfg["quick"])
    models = cached_zoo(names)
    log(intro(cfg, [n for n in names if n not in models], len(names)))
    if force:
        clear_earlier(out)
    models = train_zoo(names, models, progress=progress)
    d = zoo.digits()
    xb, yb = zoo.benign_inputs(cfg["fbi_inputs"], seed=0)
    from tqdm.auto import tqdm

    report["zoo"] = {n: {"test_accuracy": zoo.accuracy(m, d.x_test, d.y_test),
                         "benign_accuracy": zoo.accuracy(m, xb, yb)}
                     for n, m in tqdm(models.items(), desc="zoo accuracy", unit="model",
                                      disable=not progress)}
    timing["zoo_s"] = time.perf_counter() - t0
    log(tables.zoo_table(report["zoo"]))

    # 2. characteristic examples
    t0 = time.perf_counter()
    data = (d.x_train, d.y_train)
    summary, rows, fps, ctiming = CE.run(models, cfg["protected"], cfg, data, progress=progress,
                                         log=log)
    report["cexamples"] = summary
    report["cexamples_runs"] = rows
    timing["cexamples_s"] = time.perf_counter() - t0
    timing.update({f"cexamples_{k}": v for k, v in ctiming.items()})
    log(tables.uniqueness_table(summary, cfg))
    fp_dir = out / "fingerprints"
    fp_dir.mkdir(exist_ok=True)
    for method, fp in fps.items():
        fp.save(fp_dir / f"{cfg['protected'][0]}-{method}.safetensors")

    t0 = time.perf_counter()
    settings = [(m, dl, cfg["k"]) for m in ("rcgm", "ltrc") for dl in cfg["deltas"]
                if not (m == "rcgm" and dl == 0)]  # rcgm with delta 0 is vanilla
    settings += [("ltrc", cfg["delta"], k) for k in cfg["ks"] if k != cfg["k"]]
    sweep = CE.sweep(models, cfg["protected"][0], cfg, data, settings, progress=progress)
    for r in rows:  # the main run's points complete the curves
        if r["model"] == cfg["protected"][0] and r["method"] in ("rcgm", "ltrc"):
            sweep.append({k: r[k] for k in ("method", "delta", "k", "robustness", "transferability",
                                            "uniqueness", "base_accuracy", "fitted")}
                         | {"num": cfg["num"]})
    sweep.sort(key=lambda p: (p["method"], p["k"], p["delta"]))
    report["sweep"] = sweep
    timing["sweep_s"] = time.perf_counter() - t0
    log(tables.sweep_table(sweep))

    # 3. FBI
    t0 = time.perf_counter()
    from .. import variants

    # Default: the paper's procedures at the two ends of each parameter range (18 variants per
    # model); --full-variants: every parameter of the paper (40 per model). The accuracy filter
    # (eq. 1) runs in FE.run on the database's ground truth, as fastfp fbi paper-tables does.
    specs = quick_variant_specs(cfg["smoothing_n"]) if cfg["fbi_quick"] else \
        variants.catalog(per_range=None if cfg.get("full_variants") else 2,
                         smoothing_n=cfg["smoothing_n"])
    db, info = FE.build_database(models, xb, yb, specs, data, k=1, progress=progress)
    db_path = out / "fbi-database.safetensors"
    db.save(db_path)  # the same database gives the same tables through fastfp fbi paper-tables
    timing["fbi_database_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    report["fbi"], fbi_figs = FE.run(db, info, L=cfg["L"], trials=cfg["trials"], progress=progress)
    timing["fbi_experiments_s"] = time.perf_counter() - t1
    timing["fbi_s"] = time.perf_counter() - t0
    fbi_db = report["fbi"]["database"]
    report["fbi"]["reproduce"] = (
        f"fastfp fbi paper-tables --db {db_path} --protocol paper --L {fbi_db['L']} "
        f"--trials {fbi_db['trials']} "
        f"--seed {fbi_db['seed']} --max-drop {fbi_db['max_drop']} --known-families "
        + " ".join(fbi_db["known_families"]))
    log(tables.fbi_tables(report["fbi"]))
    log(f"The same tables from the saved database: {report['fbi']['reproduce']}")

    # 4. figures
    t0 = time.perf_counter()
    paths = []
    if figures:
        from .. import plots, stats
        from ..cexamples import METHODS

        imgs = {m: fp.inputs[:64].numpy() for m, fp in fps.items()}
        labels = {m: fp.labels[:64].numpy() for m, fp in fps.items()}
        paths.append(plots.cexample_grid(
            imgs, labels, out / "cexamples.png",
            title=f"Characteristic examples of {cfg['protected'][0]}, one per target class\n"
                  f"(only those {cfg['protected'][0]} classifies as their target; "
                  "'no example': none of that target fitted)"))
        paths.append(plots.dct_spectra(imgs, out / "cexamples_dct.png"))
        roc = {}
        for sel, (s, y, auc) in fbi_figs["roc"].items():
            f, t, _ = stats.roc_curve(s, y)
            roc[sel] = (f, t, auc)
        paths.append(plots.roc_curves(roc, out / "fbi_roc.png",
                                      title=f"FBI detection ROC (L={cfg['L']}, top-1, close "
                                            "delegate)"))
        # The methods without a delta curve are single reference points (vanilla: delta 0).
        pts: dict[str, list[tuple[float, float, float]]] = {
            r["method"]: [(r["delta"] or 0.0, r["robustness"], r["transferability"])]
            for r in rows if r["model"] == cfg["protected"][0] and r["method"] in ("vanilla", "rc")}
        for p in sweep:
            if p["method"] == "rcgm" or p["k"] == cfg["k"]:
                pts.setdefault(f"{p['method']} (k={p['k']})" if p["k"] else p["method"], []).append(
                    (p["delta"], p["robustness"], p["transferability"]))
        pts = dict(sorted(pts.items(), key=lambda kv: METHODS.index(kv[0].split()[0])))
        paths.append(plots.tradeoff(
            pts, out / "tradeoff.png",
            title=f"Uniqueness trade-off over delta ({cfg['protected'][0]})"))
        families = fbi_figs["families"]  # the models the accuracy filter kept
        order = np.argsort(np.asarray(families), kind="stable")
        paths.append(plots.heatmap(fbi_figs["distances"][np.ix_(order, order)],
                                   [families[i] for i in order],
                                   out / "fbi_distances.png",
                                   title="Rajski distance between the FBI database's models "
                                         "(family: a zoo model and its variants)"))
    timing["figures_s"] = time.perf_counter() - t0
    timing["total_s"] = time.perf_counter() - t_start
    report["timing"] = timing
    report["figures"] = [str(p) for p in paths]
    import fastfp

    report["environment"] = {"fastfp": fastfp.__version__, "torch": torch.__version__,
                             "python": platform.python_version(),
                             "threads": torch.get_num_threads()}
    log(tables.timing_table(timing))
    return report

