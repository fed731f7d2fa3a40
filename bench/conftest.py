"""Shared fixtures and the end-of-session ratio report of the bench suite (see bench/README.md).

- GPU-marked benchmarks skip cleanly without a CUDA device (as in tests/).
- With benchmarks enabled, the ratio table of bench/report.py is printed after pytest-benchmark's
  own table and saved (report.json / report.csv / report.png) into ``FASTFP_BENCH_OUT``
  (default ``bench-results/``); ``--benchmark-json`` files also get the run's fastfp metadata
  (device peaks, library versions, commit) under the key ``"fastfp"``.
- With ``--benchmark-disable`` (CI: correctness only) the reporter prints one line and never fails.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _sibling(name: str):
    """bench/<name>.py under a private module name (bench/ is not a package)."""
    key = f"_fastfp_bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def _is_bench_item(item) -> bool:
    try:
        return HERE in Path(str(item.path)).resolve().parents
    except (AttributeError, OSError):
        return False


def pytest_configure(config):
    # Also registered in pyproject.toml; repeated here for a bench folder run from a wheel.
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped cleanly on CPU)")
    config.addinivalue_line("markers", "slow: longer CPU benchmarks")


def pytest_collection_modifyitems(config, items):
    import torch

    config._fastfp_bench_items = sum(_is_bench_item(i) for i in items)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and _is_bench_item(item):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def bench_device():
    """The device under test (FASTFP_BENCH_DEVICE, else cuda when present)."""
    return _sibling("common").bench_device()


@pytest.fixture(scope="session")
def bench_quick() -> bool:
    """True under FASTFP_BENCH_QUICK=1: use small shapes."""
    return _sibling("common").QUICK


def _benchmark_session(config):
    return getattr(config, "_benchmarksession", None)


def _report(config, benchmarks: list[dict]) -> dict:
    """Build the report once per session (the JSON hook and the summary both want it)."""
    cached = getattr(config, "_fastfp_bench_report", None)
    if cached is None:
        cached = _sibling("report").build(benchmarks)
        config._fastfp_bench_report = cached
    return cached


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Store device peaks, versions and commit with the raw --benchmark-json of the run."""
    try:
        report = _report(config, output_json.get("benchmarks") or [])
        output_json["fastfp"] = {"meta": report["meta"], "peaks": report["meta"].get("peaks"),
                                 "rows": report["rows"]}
    except Exception as exc:  # the raw JSON must be written whatever happens here
        output_json["fastfp"] = {"error": f"{type(exc).__name__}: {exc}"}


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = _benchmark_session(config)
    if session is None or not getattr(config, "_fastfp_bench_items", 0):
        return
    write = terminalreporter.write_line
    if session.disabled:
        write("fastfp bench: benchmarks disabled (correctness only, no timings, no ratio table)")
        return
    if not session.benchmarks:
        write("fastfp bench: no benchmark recorded a time (all skipped or failed)")
        return
    try:
        rep = _sibling("report")
        report = _report(config, [b.as_dict(include_data=False) for b in session.benchmarks])
        terminalreporter.section("fastfp bench: ratios against the baselines (same run)")
        for line in rep.format_table(report).splitlines():
            write(line)
        out = os.environ.get("FASTFP_BENCH_OUT") or "bench-results"
        for path in rep.save(report, out):
            write(f"fastfp bench: wrote {path}")
    except Exception as exc:  # a reporting problem must not turn a benchmark run red
        write(f"fastfp bench: could not build the ratio report: {type(exc).__name__}: {exc}",
              red=True)
