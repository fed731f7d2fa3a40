"""``fastfp bench``: run the benchmark suite (fastfp against its baselines) and report the ratios.

The suite is the package of pytest-benchmark files in ``bench/``: a wheel ships it as
``fastfp/bench`` (``fastfp.bench``), a source checkout (the editable install ``pip install -e .``)
has it as ``<checkout>/bench``. ``--bench-dir`` points at any other copy.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

AREAS = ("ops", "noise", "cexamples", "fbi", "openworld")  # bench/bench_<area>.py
CURVE_AREAS = ("ops", "noise", "cexamples", "fbi")  # the areas bench/curves.py draws


def add_parser(sub: Any) -> None:
    """Add ``bench`` to the sub-command parsers ``sub`` (argparse's ``add_subparsers()``)."""
    p = sub.add_parser(
        "bench", help="benchmark fastfp against the baselines a user would write (ratio table)",
        description="Run the bench suite (pytest-benchmark, fastfp and baseline in the same run), "
                    "print the ratio table (speed-up, % of peak, target, PASS/FAIL) and write "
                    "JSON, CSV and a PNG bar chart of the speed-ups into --out.")
    p.add_argument("--quick", action="store_true",
                   help="small shapes (FASTFP_BENCH_QUICK=1): a few minutes on a laptop CPU")
    p.add_argument("--device", choices=("cpu", "cuda"),
                   help="device under test (FASTFP_BENCH_DEVICE); default: cuda when present")
    p.add_argument("--only", action="append", choices=AREAS, metavar="AREA",
                   help=f"run one area only ({'|'.join(AREAS)}); repeat for several")
    p.add_argument("-k", dest="keyword", metavar="EXPR",
                   help="pytest -k expression selecting benchmarks by test name")
    p.add_argument("--out", metavar="DIR", default="bench-results",
                   help="folder for benchmark.json (raw pytest-benchmark, works with "
                        "`pytest-benchmark compare`), report.json/.csv/.png and the curves "
                        "(default: %(default)s)")
    p.add_argument("--curves", action="store_true",
                   help="also draw scaling curves (time vs batch, image size, k, q, models, L), "
                        "one PNG per area")
    p.add_argument("--curves-only", action="store_true", help="draw the curves, skip the suite")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when a row misses its target on this device")
    p.add_argument("--json", metavar="PATH", help="also copy the ratio report (JSON) to PATH")
    p.add_argument("--bench-dir", metavar="DIR",
                   help="the bench folder to run (default: the checkout's bench/ or the "
                        "installed fastfp/bench)")
    p.set_defaults(func=run)


def find_bench_dir(explicit: str | None = None) -> Path:
    """Where the bench suite lives; a clear error when it cannot be found."""
    from fastfp.cli.main import UserError

    def is_suite(path: Path) -> bool:
        return all((path / name).is_file() for name in ("__init__.py", "conftest.py", "report.py"))

    if explicit:
        path = Path(explicit)
        if not is_suite(path):
            raise UserError(f"--bench-dir: {explicit!r} is not a fastfp bench folder "
                            f"(no __init__.py, conftest.py and report.py in it)")
        return path.resolve()
    import fastfp

    package = Path(fastfp.__file__).resolve().parent
    for candidate in (package / "bench", package.parent / "bench"):  # wheel, then checkout
        if is_suite(candidate):
            return candidate
    raise UserError(
        "cannot find the bench suite: neither a source checkout's bench/ next to "
        f"{package} nor an installed fastfp/bench. Run from a checkout "
        "(git clone ... && pip install --no-build-isolation -e '.[dev]') or pass --bench-dir.")


def _check_args(args: argparse.Namespace, bench_dir: Path) -> list[Path]:
    """Validate everything before any work starts; return the bench files to run."""
    from fastfp.cli.main import UserError

    missing = [name for name in ("pytest", "pytest_benchmark")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"the bench suite needs pytest and pytest-benchmark ({', '.join(missing)} "
                        f"missing): pip install 'fastfp[dev]'")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda: torch sees no CUDA device on this machine")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {args.out!r} exists and is not a folder")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise UserError(f"--json: folder of {args.json!r} does not exist")
    files = []
    for area in args.only or ():
        path = bench_dir / f"bench_{area}.py"
        if not path.is_file():
            raise UserError(f"--only {area}: {path} does not exist (no benchmarks for this area)")
        files.append(path)
    return files


def _package(bench_dir: Path) -> tuple[str, Path]:
    """(dotted package name, folder to import it from) of a bench folder: ``bench`` under a
    checkout, ``fastfp.bench`` in a wheel; the same rule pytest uses to import it."""
    parts, root = [bench_dir.name], bench_dir.parent
    while (root / "__init__.py").is_file():
        parts.insert(0, root.name)
        root = root.parent
    return ".".join(parts), root


def _environment(args: argparse.Namespace, bench_dir: Path) -> dict:
    env = dict(os.environ)
    if args.quick:
        env["FASTFP_BENCH_QUICK"] = "1"
    if args.device:
        env["FASTFP_BENCH_DEVICE"] = args.device
    env["FASTFP_BENCH_OUT"] = str(Path(args.out).resolve())
    env.setdefault("MPLBACKEND", "Agg")
    root = str(_package(bench_dir)[1])  # the curves run as ``python -m <package>.curves``
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    if "site-packages" in bench_dir.parts or "dist-packages" in bench_dir.parts:
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave an installed package untouched
    return env


def pytest_command(args: argparse.Namespace, bench_dir: Path, files: list[Path]) -> list[str]:
    out = Path(args.out).resolve()
    cmd = [sys.executable, "-m", "pytest", *(map(str, files or [bench_dir])),
           "--benchmark-enable", f"--benchmark-json={out / 'benchmark.json'}",
           "--benchmark-columns=min,median,max,rounds", "--benchmark-sort=name",
           "-o", "python_files=bench_*.py", "-p", "no:cacheprovider", "-q", "-rfEs"]
    if args.keyword:
        cmd += ["-k", args.keyword]
    return cmd


def curves_command(args: argparse.Namespace, bench_dir: Path) -> list[str]:
    cmd = [sys.executable, "-m", f"{_package(bench_dir)[0]}.curves", "--out",
           str(Path(args.out).resolve())]
    if args.quick:
        cmd.append("--quick")
    if args.device:
        cmd += ["--device", args.device]
    for area in curve_areas(args):
        cmd += ["--only", area]
    return cmd


def curve_areas(args: argparse.Namespace) -> list[str]:
    """The areas of ``--only`` that have scaling curves (all of them without ``--only``)."""
    return [a for a in args.only or CURVE_AREAS if a in CURVE_AREAS]


def run(args: argparse.Namespace) -> int:
    bench_dir = find_bench_dir(args.bench_dir)
    files = [] if args.curves_only else _check_args(args, bench_dir)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    env = _environment(args, bench_dir)
    status = 0
    print(f"fastfp bench: suite {bench_dir}", flush=True)
    if not args.curves_only:
        report_path = Path(args.out) / "report.json"
        if report_path.exists():
            report_path.unlink()  # never mistake the previous run's report for this one's
        rc = subprocess.call(pytest_command(args, bench_dir, files), env=env)
        if rc == 5:
            print("fastfp bench: no benchmark was collected", file=sys.stderr)
        status = rc
        status = max(status, _summarize(args, report_path))
    if (args.curves or args.curves_only) and not curve_areas(args):
        print(f"fastfp bench: no scaling curves for {', '.join(args.only)}", file=sys.stderr)
    elif args.curves or args.curves_only:
        status = max(status, subprocess.call(curves_command(args, bench_dir), env=env))
    return status


def _summarize(args: argparse.Namespace, report_path: Path) -> int:
    """One closing line from the saved report; 1 under --strict when a target was missed."""
    if not report_path.is_file():
        print("fastfp bench: no ratio report was written (no benchmark recorded a time)",
              file=sys.stderr)
        return 1
    report = json.loads(report_path.read_text())
    if args.json:
        from fastfp.io import write_json

        write_json(args.json, report)
    summary = report["summary"]
    print(f"fastfp bench: {summary['pass']} PASS, {summary['fail']} FAIL, "
          f"{summary['no_target']} without a target; results in {Path(args.out).resolve()}")
    return 1 if args.strict and summary["fail"] else 0
