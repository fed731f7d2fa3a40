"""Plain-text tables of the demo (the papers' Table 1-4 layout, at zoo scale)."""

from __future__ import annotations


def _pct(v: float, sign: bool = False) -> str:
    return f"{100 * v:+.0f}" if sign else f"{100 * v:.0f}"


def zoo_table(zoo: dict) -> str:
    lines = ["", "Zoo (digits 32x32): accuracy % on the held-out split / on the benign FBI inputs"]
    for n, r in zoo.items():
        lines.append(f"  {n:12s} {_pct(r['test_accuracy']):>4s} / {_pct(r['benign_accuracy']):>3s}")
    return "\n".join(lines)


def uniqueness_table(summary: dict, cfg: dict) -> str:
    rates = list(next(iter(summary.values()))["per_rate"])
    head = (f"{'method':8s} {'delta':>6s} {'k':>2s} {'fit%':>5s} {'transf%':>7s} {'robust%':>7s} "
            f"{'uniq%':>6s} "
            + " ".join(f"{'U@' + str(int(float(r) * 100)) + '%':>6s}" for r in rates)
            + f" {'T other%':>8s} {'U other%':>8s}")
    lines = ["",
             f"Characteristic examples on {', '.join(cfg['protected'])} ({cfg['num']} examples, "
             f"{cfg['steps']} steps; transferability to the same architecture's other seeds; "
             f"mean over {len(cfg['protected'])} protected seed(s))", head]
    for m, s in summary.items():
        lines.append(f"{m:8s} {s['delta']:6.3g} {s['k']:2d} {_pct(s['base_accuracy']):>5s} "
                     f"{_pct(s['transferability']):>7s} {_pct(s['robustness']):>7s} "
                     f"{_pct(s['uniqueness'], True):>6s} "
                     + " ".join(f"{_pct(s['per_rate'][r]['uniqueness'], True):>6s}" for r in rates)
                     + f" {_pct(s['transferability_other_arch']):>8s} "
                     f"{_pct(s['uniqueness_other_arch'], True):>8s}")
    return "\n".join(lines)


def sweep_table(rows: list) -> str:
    lines = ["", "Trade-off over delta and k ablation (first protected model)",
             f"{'method':8s} {'delta':>6s} {'k':>3s} {'fit%':>5s} {'robust%':>7s} "
             f"{'transf%':>7s} {'uniq%':>6s}"]
    for p in rows:
        lines.append(f"{p['method']:8s} {p['delta']:6.3g} {p['k']:3d} "
                     f"{_pct(p['base_accuracy']):>5s} "
                     f"{_pct(p['robustness']):>7s} {_pct(p['transferability']):>7s} "
                     f"{_pct(p['uniqueness'], True):>6s}")
    return "\n".join(lines)


def fbi_tables(fbi: dict) -> str:
    db, det, ide = fbi["database"], fbi["detection"], fbi["identification"]
    lines = ["", f"FBI database: {db['models']} models ({db['vanilla']} vanilla + variants), "
             f"{db['inputs']} benign inputs, top-{db['k']}, {len(db['dropped'])} variants dropped "
             f"(accuracy drop > {100 * db.get('max_drop', 0.15):.0f} % of the vanilla "
             "model's, eq. 1); "
             f"L = {db['L']} queries, {db['trials']} trials",
             "Detection, TPR % at 5 % FPR (tau fitted on the negatives; close delegate)  [ROC AUC]",
             "  " + "  ".join(f"{s:>16s}" for s in det["by_selection"]),
             "  " + "  ".join(f"{_pct(r['tpr_at_5fpr']):>5s} ± {_pct(r['tpr_at_5fpr_std']):>2s} "
                              f"[{r['roc_auc']:.3f}]"
                              for r in det["by_selection"].values()),
             "Detection by delegate (30/70), TPR % at 5 % FPR  [ROC AUC]",
             "  " + "  ".join(f"{s:>16s}" for s in det["by_delegate"]),
             "  " + "  ".join(f"{_pct(r['tpr_at_5fpr']):>5s} ± {_pct(r['tpr_at_5fpr_std']):>2s} "
                              f"[{r['roc_auc']:.3f}]"
                              for r in det["by_delegate"].values()),
             f"Identification, open world ({len(db['known_families'])} known families; the others "
             "must be rejected): % of known-family black boxes",
             f"  {'setting':20s} {'success':>7s} {'abstain':>7s} {'error':>6s} "
             f"{'unknown rejected':>17s}"]
    for name, r in ide["by_setting"].items():
        lines.append(f"  {name:20s} {_pct(r['success']):>7s} {_pct(r['abstain']):>7s} "
                     f"{_pct(r['error']):>6s} "
                     f"{_pct(r['unknown_rejected']):>17s}")
    wg = fbi.get("walled_garden")
    if wg:
        lines += ["Walled garden (A = B), greedy identification of each of the "
                  f"{wg['black_boxes']} models:",
                  f"  success {_pct(wg['success'])} %, fail {_pct(wg['fail'])} %, "
                  f"error {_pct(wg['error'])} %; queries mean {wg['queries_mean']:.1f}, "
                  f"median {wg['queries_median']:.0f}, max {wg['queries_max']}"]
    return "\n".join(lines)


def timing_table(timing: dict) -> str:
    return "\nTiming (s): " + ", ".join(f"{k[:-2] if k.endswith('_s') else k} {v:.1f}"
                                          for k, v in timing.items())
