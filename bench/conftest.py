"""Shared fixtures and the end-of-session ratio report of the bench suite (see bench/README.md).

- GPU-marked benchmarks skip cleanly without a CUDA device (as in tests/).
- With benchmarks enabled, the ratio table of bench/report.py is printed after pytest-benchmark's
  own table and saved (report.json / report.csv / report.png) into ``FASTFP_BENCH_OUT``
  (default ``bench-results/``); ``--benchmark-json`` files also get the run's fastfp metadata
  (device peaks, library versions, commit) under the key ``"fastfp"``.
- With ``--benchmark-disable`` (CI: correctness only) the reporter prints one line and never fails.
- Without pytest-benchmark installed (e.g. an offline GPU machine), a minimal built-in stand-in
  provides the ``benchmark`` fixture (``pedantic``, ``group``, ``extra_info``) and the options
  ``--benchmark-enable/-disable/-json``, so the suite and its ratio table still run.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
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


# --- stand-in for pytest-benchmark when it is not installed --------------------------------------

_PLUGIN = importlib.util.find_spec("pytest_benchmark") is not None and \
    os.environ.get("FASTFP_BENCH_FALLBACK", "0") in ("", "0")  # =1 tests the stand-in


class _Timed:
    """One benchmark's result, shaped like pytest-benchmark's (``as_dict``)."""

    def __init__(self, fixture, times):
        self.group, self.name, self.fullname = fixture.group, fixture.name, fixture.fullname
        self.extra_info = fixture.extra_info
        self.times = times

    def as_dict(self, include_data=False):
        t = sorted(self.times)
        mean, std = statistics.mean(t), (statistics.stdev(t) if len(t) > 1 else 0.0)
        q1, _, q3 = statistics.quantiles(t, n=4, method="inclusive") if len(t) > 1 else t * 3
        iqr = q3 - q1
        inside = [v for v in t if q1 - 1.5 * iqr <= v <= q3 + 1.5 * iqr]
        # every field pytest-benchmark writes, so `pytest-benchmark compare` reads the file
        stats = {"min": t[0], "max": t[-1], "mean": mean, "median": statistics.median(t),
                 "stddev": std, "rounds": len(t), "iterations": 1, "total": sum(t),
                 "ops": len(t) / sum(t) if sum(t) else 0.0, "q1": q1, "q3": q3, "iqr": iqr,
                 "ld15iqr": inside[0], "hd15iqr": inside[-1],
                 "iqr_outliers": len(t) - len(inside),
                 "stddev_outliers": sum(abs(v - mean) > std for v in t)}
        stats["outliers"] = f"{stats['stddev_outliers']};{stats['iqr_outliers']}"
        if include_data:
            stats["data"] = list(t)
        return {"group": self.group, "name": self.name, "fullname": self.fullname,
                "params": None, "param": None, "extra_info": self.extra_info, "options": {},
                "stats": stats}


class _Stats:
    def __init__(self, best):
        self.stats = self
        self.min = best


class _Session:
    def __init__(self, config):
        self.disabled = bool(config.getoption("benchmark_disable")) and \
            not config.getoption("benchmark_enable")
        self.benchmarks: list[_Timed] = []
        self.json_path = config.getoption("benchmark_json")


class _Fixture:
    """``benchmark.pedantic(fn, rounds=, warmup_rounds=, iterations=)`` and ``benchmark(fn)``."""

    def __init__(self, node, session: _Session):
        self.name, self.fullname = node.name, node.nodeid
        self.group = None
        self.extra_info: dict = {}
        self._session = session

    def pedantic(self, target, args=(), kwargs=None, setup=None, rounds=1, warmup_rounds=0,
                 iterations=1):
        kwargs = kwargs or {}
        if setup is not None:
            args, kwargs = setup() or (args, kwargs)
        if self._session.disabled:
            return target(*args, **kwargs)
        for _ in range(warmup_rounds):
            target(*args, **kwargs)
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(iterations):
                result = target(*args, **kwargs)
            times.append((time.perf_counter() - start) / iterations)
        self._session.benchmarks.append(_Timed(self, times))
        self.stats = _Stats(min(times))  # read like pytest-benchmark's fixture.stats.stats.min
        return result

    def __call__(self, target, *args, **kwargs):
        return self.pedantic(target, args, kwargs, rounds=5, warmup_rounds=1)


if not _PLUGIN:
    def pytest_addoption(parser):
        group = parser.getgroup("benchmark", "fastfp stand-in for pytest-benchmark")
        group.addoption("--benchmark-enable", action="store_true", help="time the benchmarks")
        group.addoption("--benchmark-disable", action="store_true",
                        help="run each benchmark once, untimed (correctness only)")
        group.addoption("--benchmark-json", metavar="PATH", help="save the timings as JSON")
        for name in ("columns", "sort", "group-by", "min-rounds", "warmup"):
            group.addoption(f"--benchmark-{name}", help="accepted and ignored by the stand-in")

    @pytest.fixture
    def benchmark(request):
        return _Fixture(request.node, request.config._benchmarksession)

    def pytest_sessionfinish(session, exitstatus):
        bench = getattr(session.config, "_benchmarksession", None)
        if bench is None or bench.disabled or not bench.json_path or not bench.benchmarks:
            return
        from fastfp.store import write_json

        data = {"machine_info": {"node": platform.node(), "machine": platform.machine(),
                                 "python_version": platform.python_version()},
                "commit_info": _sibling("report").git_commit(),
                "benchmarks": [b.as_dict(include_data=True) for b in bench.benchmarks],
                "datetime": datetime.now(timezone.utc).isoformat(),
                "version": "fastfp stand-in"}
        pytest_benchmark_update_json(session.config, bench.benchmarks, data)
        write_json(bench.json_path, data)


def _is_bench_item(item) -> bool:
    try:
        return HERE in Path(str(item.path)).resolve().parents
    except (AttributeError, OSError):
        return False


def pytest_configure(config):
    if not _PLUGIN:
        config._benchmarksession = _Session(config)
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


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-benchmark: unknown without the plugin
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
