"""The ratio reporter: one pytest-benchmark run -> one table of speed-ups, % of peak and verdicts.

Used two ways:

- as part of the bench suite: ``bench/conftest.py`` calls :func:`build` at the end of the pytest
  session, prints :func:`format_table` and writes :func:`save` (JSON, CSV, PNG chart) into
  ``FASTFP_BENCH_OUT`` (default ``bench-results/``);
- as a script over a saved ``--benchmark-json`` file (also the files of another machine or
  commit): ``python -m fastfp.bench.report RUN.json [--out DIR] [--against OLD.json]``
  (``python -m bench.report`` in a checkout).

Pairing rule (see bench/common.py): benchmarks sharing a ``group`` form one case; the entry with
``extra_info.role == "baseline"`` is the reference time, every ``role == "fastfp"`` entry gives
one row with ``speed-up = baseline time / fastfp time``. Times are the *minimum* over rounds (on
a shared machine noise only ever adds time). A baseline too slow to time in full records the
extrapolated time of the full work as ``extra_info.baseline_extrapolated_s``, which then replaces
its measured time (the row is marked ``~``). A fastfp entry that timed its baseline in alternate
rounds of its own (``extra_info.paired_baseline_s``: load that drifts between two tests cannot
move the ratio) takes that time as its baseline. Targets are per device type (``"cpu"``,
``"cuda"``): ``target_speedup`` (>=), ``target_peak`` (fraction of peak bandwidth or FLOP/s, >=) and
``target_max_s`` (fastfp time, <=). A row with no target for this device type is ``-``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from . import peaks

HERE = Path(__file__).resolve().parent

COLUMNS = ("group", "name", "fastfp_s", "baseline_s", "baseline_extrapolated", "speedup", "gbps",
           "tflops", "peak_frac", "peak_of", "target", "target_speedup", "result", "why", "device",
           "device_type", "dtype", "shape")


# ---------------------------------------------------------------------------------------------
# Building rows


def _time(entry: dict) -> float | None:
    stats = entry.get("stats") or {}
    value = stats.get("min")
    return float(value) if value is not None else None


def _per_device(value, device_type: str):
    """A target given as ``{"cpu": x, "cuda": y}`` (or a bare number, meaning every device)."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get(device_type)
    return value


def peak_fraction(info: dict, seconds: float, device_peaks: dict | None):
    """Achieved GB/s, TFLOP/s and the fraction of the matching peak (the larger of the two:
    the resource that bounds the kernel)."""
    gbps = info["bytes"] / seconds / 1e9 if info.get("bytes") else None
    tflops = info["flops"] / seconds / 1e12 if info.get("flops") else None
    fracs = []
    if device_peaks:
        if gbps is not None and device_peaks.get("gbps"):
            fracs.append((gbps / device_peaks["gbps"], "bandwidth"))
        precision = info.get("peak_precision") or peaks.precision_of(info.get("dtype"))
        peak_tflops = (device_peaks.get("tflops") or {}).get(precision) if precision else None
        if tflops is not None and peak_tflops:
            fracs.append((tflops / peak_tflops, f"{precision} FLOP/s"))
    frac, of = max(fracs) if fracs else (None, None)
    return gbps, tflops, frac, of


def _verdict(info: dict, device_type: str, fastfp_s, speedup, frac):
    """(target text, "PASS"/"FAIL"/"-", reason) against this device type's targets."""
    parts, failures = [], []
    want = _per_device(info.get("target_speedup"), device_type)
    if want is not None:
        parts.append(f">={want:g}x")
        if speedup is None:
            failures.append("no baseline to compare with")
        elif speedup < want:
            failures.append(f"speed-up {speedup:.3g}x < {want:g}x")
    want = _per_device(info.get("target_peak"), device_type)
    if want is not None:
        parts.append(f">={want:.0%} peak")
        if frac is None:
            failures.append("peak unknown for this device (set FASTFP_PEAK_GBPS)")
        elif frac < want:
            failures.append(f"{frac:.0%} of peak < {want:.0%}")
    want = _per_device(info.get("target_max_s"), device_type)
    if want is not None:
        parts.append(f"<={_fmt_time(want)}")
        if fastfp_s is not None and fastfp_s > want:
            failures.append(f"{_fmt_time(fastfp_s)} > {_fmt_time(want)}")
    if not parts:
        return "", "-", ""
    return ", ".join(parts), ("FAIL" if failures else "PASS"), "; ".join(failures)


def build_rows(benchmarks: list[dict], peaks_for=None) -> list[dict]:
    """Pair the entries of each group and compute one row per fastfp entry.

    ``peaks_for(device_type, device_name)`` returns the peaks dict of bench/peaks.py (or ``None``);
    entries without ``extra_info.role`` are ignored (not part of a pair).
    """
    groups: dict[str, dict] = {}
    for entry in benchmarks:
        info = entry.get("extra_info") or {}
        role = info.get("role")
        if role not in ("fastfp", "baseline"):
            continue
        name = str(entry.get("group") or entry.get("name"))
        group = groups.setdefault(name, {"baseline": None, "fastfp": []})
        if role == "baseline":
            if group["baseline"] is None:
                group["baseline"] = entry
        else:
            group["fastfp"].append(entry)

    rows = []
    for name, group in groups.items():
        base = group["baseline"]
        base_info = (base or {}).get("extra_info") or {}
        fast_entries = group["fastfp"] or []
        if not fast_entries:  # a baseline alone still shows up, so a missing pair is visible
            rows.append(_row(name, None, base, base_info, peaks_for))
        for fast in fast_entries:
            rows.append(_row(name, fast, base, base_info, peaks_for))
    return rows


def _row(group: str, fast: dict | None, base: dict | None, base_info: dict, peaks_for) -> dict:
    info = dict(base_info)
    info.update((fast or {}).get("extra_info") or {})  # fastfp entry's targets/bytes win
    device_type = info.get("device_type", "cpu")
    fastfp_s = _time(fast) if fast else None
    extrapolated = base_info.get("baseline_extrapolated_s", info.get("baseline_extrapolated_s"))
    paired = ((fast or {}).get("extra_info") or {}).get("paired_baseline_s")
    baseline_s: float | None = None
    if extrapolated is not None:
        baseline_s = float(extrapolated)
    elif paired is not None:
        baseline_s = float(paired)
    elif base:
        baseline_s = _time(base)
    speedup = baseline_s / fastfp_s if baseline_s and fastfp_s else None
    found = peaks_for(device_type, info.get("device", "")) if peaks_for else None
    gbps = tflops = frac = of = None
    if fastfp_s:
        gbps, tflops, frac, of = peak_fraction(info, fastfp_s, found)
    target, result, why = _verdict(info, device_type, fastfp_s, speedup, frac)
    target_speedup = _per_device(info.get("target_speedup"), device_type)
    if fast is None:
        result, why = ("FAIL" if target else "-"), "no fastfp entry in this group"
    shape = info.get("shape")
    return {
        "group": group,
        "name": (fast or base or {}).get("name", ""),
        "fastfp_s": fastfp_s,
        "baseline_s": baseline_s,
        "baseline_extrapolated": extrapolated is not None,
        "speedup": speedup,
        "gbps": gbps,
        "tflops": tflops,
        "peak_frac": frac,
        "peak_of": of,
        "target": target,
        "target_speedup": target_speedup,
        "result": result,
        "why": why,
        "device": info.get("device", ""),
        "device_type": device_type,
        "dtype": str(info.get("dtype", "")),
        "shape": ("x".join(map(str, shape)) if isinstance(shape, (list, tuple))
                  else str(shape or "")),
    }


# ---------------------------------------------------------------------------------------------
# Run metadata


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict:
    """Versions read from package metadata (no import of triton/cupy, which is slow or fails)."""
    versions = {name: _version(name) for name in ("fastfp", "torch", "triton", "numpy",
                                                    "scipy", "scikit-learn", "pytest-benchmark")}
    cupy = next((v for d in ("cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy")
                 if (v := _version(d))), None)
    versions["cupy"] = cupy
    import torch  # already loaded by the suite; its __version__ carries the CUDA build tag

    versions["torch"] = torch.__version__
    versions["torch_cuda"] = torch.version.cuda
    versions["python"] = platform.python_version()
    return versions


def git_commit(where: Path = HERE) -> dict:
    """``{"id", "dirty"}`` of the checkout holding ``where`` (``None`` outside a git checkout)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=where, capture_output=True, text=True,
                              timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"id": None, "dirty": None}
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return {"id": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return {"id": None, "dirty": None}


def run_meta(rows: list[dict], peaks_used: dict | None = None) -> dict:
    first = rows[0] if rows else {}
    return {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": first.get("device"),
        "device_type": first.get("device_type"),
        "host": platform.node(),
        "platform": platform.platform(),
        "versions": library_versions(),
        "commit": git_commit(),
        "quick": os.environ.get("FASTFP_BENCH_QUICK", "0") not in ("", "0"),
        "peaks": peaks_used,
    }


def build(benchmarks: list[dict], *, measure_cpu: bool = True) -> dict:
    """The whole report: ``{"meta": ..., "rows": [...], "summary": {...}}``."""
    used: dict = {}

    def peaks_for(device_type, device_name):
        key = (device_type, device_name)
        if key not in used:
            used[key] = peaks.device_peaks(device_type, device_name, measure_cpu=measure_cpu)
        return used[key]

    rows = build_rows(benchmarks, peaks_for)
    meta = run_meta(rows, {f"{t}:{n}": p for (t, n), p in used.items()} or None)
    return {"meta": meta, "rows": rows, "summary": summarize(rows)}


def summarize(rows: list[dict]) -> dict:
    results = [r["result"] for r in rows]
    return {"rows": len(rows), "pass": results.count("PASS"), "fail": results.count("FAIL"),
            "no_target": results.count("-")}


# ---------------------------------------------------------------------------------------------
# Output


def _fmt_time(seconds) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _fmt(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{format(value, spec)}{suffix}"


def _short(name: str, width: int = 40) -> str:
    """A long parametrised test id, cut to its function and last id part (usually the role):
    the group already names the case, the entry only tells fastfp variants apart."""
    if len(name) <= width or "[" not in name:
        return name
    func, _, params = name.partition("[")
    return f"{func}[..{params.rstrip(']').split('-')[-1]}]"


def format_table(report: dict) -> str:
    rows = report["rows"]
    meta = report.get("meta") or {}
    head = ("group", "entry", "fastfp", "baseline", "speed-up", "GB/s", "TFLOP/s", "% peak",
            "target", "result")
    lines = []
    for r in rows:
        baseline = _fmt_time(r["baseline_s"]) + (" ~" if r["baseline_extrapolated"] else "")
        peak = "-" if r["peak_frac"] is None else f"{r['peak_frac']:.0%} {r['peak_of'].split()[0]}"
        lines.append((r["group"], _short(r["name"]), _fmt_time(r["fastfp_s"]), baseline,
                      _fmt(r["speedup"], ".3g", "x"), _fmt(r["gbps"], ".4g"),
                      _fmt(r["tflops"], ".3g"), peak, r["target"] or "-",
                      r["result"] + (f" ({r['why']})" if r["why"] else "")))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    widths[-1] = len(head[-1])  # the last column is free text

    def fmt(cells):
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    title = f"fastfp bench: {meta.get('device') or '?'}"
    if meta.get("timestamp"):
        title += f", {meta['timestamp']}"
    commit = (meta.get("commit") or {}).get("id")
    if commit:
        title += f", commit {commit[:10]}" + ("+dirty" if meta["commit"].get("dirty") else "")
    s = report.get("summary") or summarize(rows)
    foot = (f"{s['rows']} rows: {s['pass']} PASS, {s['fail']} FAIL, {s['no_target']} without a "
            f"target on this device.  ~ = baseline extrapolated from a sample; times are the "
            f"minimum over rounds.")
    out = [title]
    for peak in (meta.get("peaks") or {}).values():
        if peak and (peak.get("gbps") or peak.get("tflops")):
            flops = ", ".join(f"{k} {v:g}" for k, v in (peak.get("tflops") or {}).items())
            out.append(f"peaks of {peak.get('name')}: {peak.get('gbps') or '?'} GB/s"
                       + (f", TFLOP/s {flops}" if flops else "") + f" ({peak.get('source')})")
    out += [fmt(head), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines]
    return "\n".join(out + [foot])


def to_csv(report: dict) -> str:
    buf = io.StringIO()
    meta = report.get("meta") or {}
    extra = ("timestamp", "commit")
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS) + list(extra), lineterminator="\n")
    writer.writeheader()
    for row in report["rows"]:
        writer.writerow({**row, "timestamp": meta.get("timestamp"),
                         "commit": (meta.get("commit") or {}).get("id")})
    return buf.getvalue()


def _speedup_text(value: float) -> str:
    """``1160x`` rather than ``1.16e+03x`` on the chart."""
    return f"{value:.0f}x" if value >= 100 else f"{value:.3g}x"


def plot(report: dict, path: str | os.PathLike[str]) -> bool:
    """A horizontal bar chart of the speed-ups (log scale) with the targets marked.

    Returns ``False`` (and writes nothing) when no row has a speed-up.
    """
    rows = [r for r in report["rows"] if r["speedup"]]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from fastfp.io import atomic_path

    labels = [r["group"] + (f" [{_short(r['name'], 30)}]" if _several(report, r["group"]) else "")
              + (" (baseline ~)" if r["baseline_extrapolated"] else "") for r in rows]
    colors = {"PASS": "tab:green", "FAIL": "tab:red", "-": "tab:gray"}
    fig, ax = plt.subplots(figsize=(13, 0.4 * len(rows) + 2.2))
    y = range(len(rows))
    # Bars grow from 1x, so a slowdown points left.
    ax.barh(list(y), [r["speedup"] - 1 for r in rows], left=1,
            color=[colors[r["result"]] for r in rows])
    ends = []
    for i, r in enumerate(rows):
        want = r.get("target_speedup")
        if want:
            ax.plot([want, want], [i - 0.4, i + 0.4], color="black", lw=2)
        # The value sits beyond the bar's end and the target tick, on the bar's side of 1x.
        if r["speedup"] >= 1:
            end, offset, ha = max(r["speedup"], want or 0), 4, "left"
        else:
            end, offset, ha = min(r["speedup"], want or 1), -4, "right"
        ends.append(end)
        ax.annotate(_speedup_text(r["speedup"]), (end, i), xytext=(offset, 0),
                    textcoords="offset points", va="center", ha=ha, fontsize=7)
    ax.axvline(1.0, color="gray", ls=":", lw=1)
    ax.set_xscale("log")
    # Room for the value labels on both sides (a factor of ~3 is enough for "1160x" at 7 pt).
    ax.set_xlim(min(min(ends), 1.0) / 3, max(max(ends), 1.0) * 3)
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("speed-up over the baseline (x, log scale; left of 1x = slower)"
                  + ("\n(baseline ~): baseline time extrapolated from a partial run"
                     if any(r["baseline_extrapolated"] for r in rows) else ""))
    meaning = {"PASS": "PASS: meets its targets", "FAIL": "FAIL: misses a target",
               "-": "no target on this device"}
    shown = {r["result"] for r in rows}
    legend: list = [Patch(color=colors[k], label=v) for k, v in meaning.items() if k in shown]
    if any(r.get("target_speedup") for r in rows):
        legend.append(Line2D([], [], color="black", lw=2, label="target speed-up"))
    # Above the bars, under the title: never covers a bar whatever the values.
    ax.legend(handles=legend, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4,
              frameon=False)
    meta = report.get("meta") or {}
    ax.set_title(f"fastfp vs baseline on {meta.get('device') or rows[0]['device_type']}"
                 f" ({(meta.get('timestamp') or '')[:10]})", fontsize=10, pad=24)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight")
    plt.close(fig)
    return True


def _several(report, group) -> bool:
    return sum(r["group"] == group for r in report["rows"]) > 1


def save(report: dict, out_dir, *, stem: str = "report") -> list[Path]:
    """Write ``<stem>.json``, ``<stem>.csv`` and ``<stem>.png`` (atomically) into ``out_dir``."""
    from fastfp.io import write_json, write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / f"{stem}.json", out / f"{stem}.csv"]
    write_json(written[0], report)
    write_text(written[1], to_csv(report))
    if plot(report, out / f"{stem}.png"):
        written.append(out / f"{stem}.png")
    return written


def load_benchmark_json(path) -> tuple[list[dict], dict]:
    """The ``benchmarks`` list of a ``--benchmark-json`` file and its fastfp metadata (if any)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"run: no such file {str(path)!r}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"run: {str(path)!r} is not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(f"run: {str(path)!r} is not a pytest-benchmark --benchmark-json file "
                         f"(no 'benchmarks' list)")
    return data["benchmarks"], data


def from_benchmark_json(path) -> dict:
    """Rebuild the report of a saved run (keeps the run's own metadata where it was stored)."""
    benchmarks, data = load_benchmark_json(path)
    saved = data.get("fastfp") or {}
    stored_peaks = saved.get("peaks") or {}

    def peaks_for(device_type, device_name):
        # Peaks of the machine that ran it: stored with the run, else the GPU table (no CPU
        # measurement here, this may be another machine).
        key = f"{device_type}:{device_name}"
        if key in stored_peaks:
            return stored_peaks[key]
        return peaks.device_peaks(device_type, device_name, measure_cpu=False)

    rows = build_rows(benchmarks, peaks_for)
    meta = dict(saved.get("meta") or {})
    if not meta:
        meta = {"timestamp": data.get("datetime"), "device": rows[0]["device"] if rows else None,
                "device_type": rows[0]["device_type"] if rows else None,
                "commit": {"id": (data.get("commit_info") or {}).get("id"),
                           "dirty": (data.get("commit_info") or {}).get("dirty")},
                "versions": {"python": (data.get("machine_info") or {}).get("python_version")}}
    meta["source"] = str(path)
    return {"meta": meta, "rows": rows, "summary": summarize(rows)}


def compare(new: dict, old: dict) -> list[dict]:
    """Rows of two reports matched on (group, entry): each side's fastfp time and speed-up, and
    ``change`` = old fastfp time / new fastfp time (> 1: the new run is faster)."""
    before = {(r["group"], r["name"]): r for r in old["rows"]}
    rows = []
    for r in new["rows"]:
        o = before.get((r["group"], r["name"]))
        if o is None:
            continue
        change = o["fastfp_s"] / r["fastfp_s"] if o["fastfp_s"] and r["fastfp_s"] else None
        rows.append({"group": r["group"], "name": r["name"], "old_fastfp_s": o["fastfp_s"],
                     "new_fastfp_s": r["fastfp_s"], "old_speedup": o["speedup"],
                     "new_speedup": r["speedup"], "change": change,
                     "old_result": o["result"], "new_result": r["result"]})
    return rows


def format_comparison(rows: list[dict], new: dict, old: dict) -> str:
    def where(rep):
        meta = rep.get("meta") or {}
        commit = ((meta.get("commit") or {}).get("id") or "?")[:10]
        return f"{meta.get('device') or '?'} @ {commit} ({(meta.get('timestamp') or '?')[:19]})"

    head = ("group", "entry", "old fastfp", "new fastfp", "change", "old speed-up",
            "new speed-up", "result old -> new")
    lines = [(r["group"], _short(r["name"]), _fmt_time(r["old_fastfp_s"]),
              _fmt_time(r["new_fastfp_s"]), _fmt(r["change"], ".3g", "x"),
              _fmt(r["old_speedup"], ".3g", "x"), _fmt(r["new_speedup"], ".3g", "x"),
              f"{r['old_result']} -> {r['new_result']}") for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]

    def fmt(cells):
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([f"old: {where(old)}", f"new: {where(new)}", fmt(head),
                      fmt(["-" * w for w in widths]), *map(fmt, lines),
                      "change = old fastfp time / new fastfp time (> 1x: new is faster)"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fastfp.bench.report",
        description="Ratio table (speed-up, % of peak, pass/fail) of a pytest-benchmark "
                    "--benchmark-json file written by the fastfp bench suite.")
    parser.add_argument("run", help="the --benchmark-json file")
    parser.add_argument("--out", metavar="DIR", help="also write report.json/.csv/.png here")
    parser.add_argument("--against", metavar="OLD.json",
                        help="also compare with an earlier run (another commit or machine)")
    args = parser.parse_args(argv)
    try:
        report = from_benchmark_json(args.run)
        old = from_benchmark_json(args.against) if args.against else None
    except (FileNotFoundError, ValueError) as exc:
        print(f"report: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(report))
    if old is not None:
        print()
        print(format_comparison(compare(report, old), report, old))
    if args.out:
        for path in save(report, args.out):
            print(f"wrote {path}")
    return 1 if report["summary"]["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
