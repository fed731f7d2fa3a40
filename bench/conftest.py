"""Shared fixtures and the end-of-session ratio report of the bench suite (see bench/README.md).

- GPU-marked benchmarks skip cleanly without a CUDA device (as in tests/).
- With benchmarks enabled, the ratio table of bench/report.py is printed after pytest-benchmark's
  own table and saved (report.json / report.csv / report.png) into ``FASTFP_BENCH_OUT``
  (default ``bench-results/``); ``--benchmark-json`` files also get the run's fastfp metadata
  (device peaks, library versions, commit) under the key ``"fastfp"``.
- With ``--benchmark-disable`` (CI: correctness only) the reporter prints one line and never fails.

pytest-benchmark is required (``pip install 'fastfp[dev]'``): it provides the ``benchmark``
fixture and the timing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from . import report

HERE = Path(__file__).resolve().parent
_ITEMS = pytest.StashKey[int]()  # how many collected items are benchmarks of this folder
_REPORT = pytest.StashKey[dict]()  # the session's ratio report, built once


def _is_bench_item(item: pytest.Item) -> bool:
    try:
        return HERE in Path(str(item.path)).resolve().parents
    except (AttributeError, OSError):
        return False


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.hasplugin("benchmark"):
        raise pytest.UsageError("the fastfp bench suite needs pytest-benchmark: "
                                "pip install 'fastfp[dev]'")
    # Also registered in pyproject.toml; repeated here for a bench folder run from a wheel.
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped cleanly on CPU)")
    config.addinivalue_line("markers", "slow: longer CPU benchmarks")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    config.stash[_ITEMS] = sum(_is_bench_item(i) for i in items)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and _is_bench_item(item):
            item.add_marker(skip)


def _report(config: pytest.Config, benchmarks: list[dict]) -> dict:
    """Build the report once per session (the JSON hook and the summary both want it)."""
    if _REPORT not in config.stash:
        config.stash[_REPORT] = report.build(benchmarks)
    return config.stash[_REPORT]


@pytest.hookimpl(optionalhook=True)  # pytest-benchmark's hook: a clear error above without it
def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list,
                                 output_json: dict) -> None:
    """Store device peaks, versions and commit with the raw --benchmark-json of the run."""
    try:
        built = _report(config, output_json.get("benchmarks") or [])
        output_json["fastfp"] = {"meta": built["meta"], "peaks": built["meta"].get("peaks"),
                                 "rows": built["rows"]}
    except Exception as exc:  # the raw JSON must be written whatever happens here
        output_json["fastfp"] = {"error": f"{type(exc).__name__}: {exc}"}


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    session = getattr(config, "_benchmarksession", None)  # pytest-benchmark's session
    if session is None or not config.stash.get(_ITEMS, 0):
        return
    write = terminalreporter.write_line
    if session.disabled:
        write("fastfp bench: benchmarks disabled (correctness only, no timings, no ratio table)")
        return
    if not session.benchmarks:
        write("fastfp bench: no benchmark recorded a time (all skipped or failed)")
        return
    try:
        built = _report(config, [b.as_dict(include_data=False) for b in session.benchmarks])
        terminalreporter.section("fastfp bench: ratios against the baselines (same run)")
        for line in report.format_table(built).splitlines():
            write(line)
        out = os.environ.get("FASTFP_BENCH_OUT") or "bench-results"
        for path in report.save(built, out):
            write(f"fastfp bench: wrote {path}")
    except Exception as exc:  # a reporting problem must not turn a benchmark run red
        write(f"fastfp bench: could not build the ratio report: {type(exc).__name__}: {exc}",
              red=True)
