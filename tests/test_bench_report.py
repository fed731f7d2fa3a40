"""The bench reporter, the peak table and `fastfp bench`, on synthetic pytest-benchmark data."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from fastfp.bench import curves, peaks, report

BENCH = Path(__file__).resolve().parents[1] / "bench"


def entry(group, role, seconds, name=None, **info):
    """One benchmark as pytest-benchmark's JSON writes it (min, and a larger median)."""
    return {"group": group, "name": name or f"{group}[{role}]", "fullname": f"x::{group}",
            "extra_info": {"role": role, "device": "cpu (test)", "device_type": "cpu", **info},
            "stats": {"min": seconds, "median": seconds * 3, "mean": seconds * 4, "rounds": 5}}


def rows_of(benchmarks, peaks_for=None):
    return {(r["group"], r["name"]): r for r in report.build_rows(benchmarks, peaks_for)}


# --- pairing and ratios -------------------------------------------------------------------------

def test_pairs_by_group_and_uses_min_times():
    rows = rows_of([entry("a", "baseline", 2.0), entry("a", "fastfp", 0.5),
                    entry("b", "fastfp", 1.0), entry("b", "baseline", 3.0)])
    assert rows[("a", "a[fastfp]")]["speedup"] == pytest.approx(4.0)
    assert rows[("a", "a[fastfp]")]["baseline_s"] == 2.0
    assert rows[("b", "b[fastfp]")]["speedup"] == pytest.approx(3.0)
    assert len(rows) == 2


def test_paired_baseline_time_of_a_fastfp_entry_is_its_baseline():
    # the floor case times its baseline in alternate rounds: no baseline entry, the paired time
    rows = rows_of([entry("floor", "fastfp", 0.8, paired_baseline_s=0.7,
                          target_speedup={"cpu": 0.87})])
    row = rows[("floor", "floor[fastfp]")]
    assert row["baseline_s"] == 0.7 and row["speedup"] == pytest.approx(0.875)
    assert row["result"] == "PASS" and not row["baseline_extrapolated"]
    slow = rows_of([entry("floor", "fastfp", 0.9, paired_baseline_s=0.7,
                          target_speedup={"cpu": 0.87})])[("floor", "floor[fastfp]")]
    assert slow["result"] == "FAIL"


def test_several_fastfp_entries_and_unpaired_entries():
    rows = rows_of([entry("g", "baseline", 1.0), entry("g", "fastfp", 0.5, name="torch"),
                    entry("g", "fastfp", 0.25, name="triton"),
                    entry("lonely", "baseline", 1.0, target_speedup={"cpu": 2}),
                    entry("nobase", "fastfp", 1.0, target_speedup={"cpu": 2}),
                    {"group": "g", "name": "no role", "extra_info": {}, "stats": {"min": 9.0}}])
    assert rows[("g", "torch")]["speedup"] == pytest.approx(2.0)
    assert rows[("g", "triton")]["speedup"] == pytest.approx(4.0)
    lonely = rows[("lonely", "lonely[baseline]")]
    assert lonely["fastfp_s"] is None and lonely["result"] == "FAIL"
    assert "no fastfp entry" in lonely["why"]
    nobase = rows[("nobase", "nobase[fastfp]")]
    assert nobase["speedup"] is None and nobase["result"] == "FAIL"
    assert "no baseline" in nobase["why"]
    assert len(rows) == 4  # the entry without a role is not part of any pair


def test_extrapolated_baseline_replaces_the_sample_time():
    rows = rows_of([entry("mi", "baseline", 0.01, baseline_extrapolated_s=50.0),
                    entry("mi", "fastfp", 0.1, target_speedup={"cpu": 150})])
    row = rows[("mi", "mi[fastfp]")]
    assert row["baseline_extrapolated"] is True
    assert row["baseline_s"] == 50.0
    assert row["speedup"] == pytest.approx(500.0)
    assert row["result"] == "PASS"
    table = report.format_table({"rows": list(rows.values())})
    assert "50 s ~" in table


def test_targets_are_per_device_type():
    def case(device_type, target):
        fast = entry("t", "fastfp", 1.0, target_speedup=target)
        fast["extra_info"]["device_type"] = device_type
        return rows_of([entry("t", "baseline", 5.0), fast])[("t", "t[fastfp]")]

    assert case("cpu", {"cpu": 2, "cuda": 10})["result"] == "PASS"
    cuda = case("cuda", {"cpu": 2, "cuda": 10})
    assert cuda["result"] == "FAIL" and "5x < 10x" in cuda["why"]
    assert case("cuda", {"cpu": 2})["result"] == "-"  # no target stated for this device type
    assert case("cpu", 6)["result"] == "FAIL"  # a bare number applies to every device type
    assert case("cpu", 5)["result"] == "PASS"  # the bound is inclusive


def test_peak_fraction_bandwidth_flops_and_target():
    gpu = {"gbps": 1000.0, "tflops": {"bf16": 100.0, "fp32": 10.0}}

    def row(**info):
        fast = entry("p", "fastfp", 1e-3, **info)
        fast["extra_info"]["device_type"] = "cuda"
        return rows_of([entry("p", "baseline", 1e-2), fast],
                       lambda t, n: gpu)[("p", "p[fastfp]")]

    r = row(bytes=8e8, target_peak={"cuda": 0.75})  # 800 GB/s of 1000
    assert r["gbps"] == pytest.approx(800.0) and r["peak_frac"] == pytest.approx(0.8)
    assert r["peak_of"] == "bandwidth" and r["result"] == "PASS"
    r = row(bytes=5e8, target_peak={"cuda": 0.75})
    assert r["result"] == "FAIL" and "50% of peak" in r["why"]
    r = row(flops=6e10, dtype="torch.bfloat16", target_peak={"cuda": 0.5})  # 60 of 100 TFLOP/s
    assert r["tflops"] == pytest.approx(60.0) and r["peak_of"] == "bf16 FLOP/s"
    assert r["peak_frac"] == pytest.approx(0.6) and r["result"] == "PASS"
    r = row(flops=6e9, dtype="float32", peak_precision="bf16")  # explicit precision wins
    assert r["peak_frac"] == pytest.approx(0.06)
    # both recorded: the bound resource (the larger fraction) is reported
    r = row(bytes=1e8, flops=6e10, dtype="bfloat16")
    assert r["peak_of"] == "bf16 FLOP/s" and r["peak_frac"] == pytest.approx(0.6)
    # no peak known for the device: no fraction, and a peak target cannot pass
    fast = entry("q", "fastfp", 1e-3, bytes=1e9, target_peak={"cpu": 0.5})
    r = rows_of([entry("q", "baseline", 1.0), fast], lambda t, n: None)[("q", "q[fastfp]")]
    assert r["gbps"] == pytest.approx(1000.0) and r["peak_frac"] is None
    assert r["result"] == "FAIL" and "peak unknown" in r["why"]


def test_absolute_time_target():
    ok = rows_of([entry("m", "baseline", 1.0), entry("m", "fastfp", 5e-4,
                                                     target_max_s={"cpu": 1e-3})])
    assert ok[("m", "m[fastfp]")]["result"] == "PASS"
    slow = rows_of([entry("m", "baseline", 1.0), entry("m", "fastfp", 2e-3,
                                                       target_max_s={"cpu": 1e-3})])
    assert slow[("m", "m[fastfp]")]["result"] == "FAIL"


# --- outputs ------------------------------------------------------------------------------------

def synthetic_report():
    rep = report.build([entry("ops hp", "baseline", 0.2), entry("ops hp", "fastfp", 0.01,
                                                                target_speedup={"cpu": 15}),
                        entry("fbi", "baseline", 1e-3, baseline_extrapolated_s=3.0),
                        entry("fbi", "fastfp", 1e-3, target_speedup={"cpu": 150})],
                       measure_cpu=False)
    return rep


def test_build_adds_run_metadata_and_summary():
    rep = synthetic_report()
    meta = rep["meta"]
    assert meta["device"] == "cpu (test)" and meta["device_type"] == "cpu"
    assert meta["versions"]["torch"] and meta["versions"]["numpy"] and meta["versions"]["python"]
    assert "triton" in meta["versions"] and "cupy" in meta["versions"]
    assert meta["timestamp"].endswith("+00:00")
    assert set(meta["commit"]) == {"id", "dirty"}
    assert rep["summary"] == {"rows": 2, "pass": 2, "fail": 0, "no_target": 0}


def test_table_csv_json_png(tmp_path):
    rep = synthetic_report()
    table = report.format_table(rep)
    assert "ops hp" in table and "20x" in table and "PASS" in table and "3e+03x" in table
    parsed = list(csv.DictReader(io.StringIO(report.to_csv(rep))))
    assert [r["group"] for r in parsed] == ["ops hp", "fbi"]
    assert float(parsed[0]["speedup"]) == pytest.approx(20.0)
    assert parsed[1]["baseline_extrapolated"] == "True"
    written = report.save(rep, tmp_path / "out")
    assert sorted(p.name for p in written) == ["report.csv", "report.json", "report.png"]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["rows"][0]["speedup"] == \
        pytest.approx(20.0)
    assert (tmp_path / "out" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # nothing to chart: no PNG, and no error
    empty = report.build([entry("z", "baseline", 1.0)], measure_cpu=False)
    assert [p.name for p in report.save(empty, tmp_path / "e")] == ["report.json", "report.csv"]


def test_report_from_benchmark_json(tmp_path):
    run = {"datetime": "2026-01-01T00:00:00", "commit_info": {"id": "abc", "dirty": False},
           "machine_info": {"python_version": "3.11"},
           "benchmarks": [entry("a", "baseline", 2.0), entry("a", "fastfp", 1.0)]}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    rep = report.from_benchmark_json(path)
    assert rep["rows"][0]["speedup"] == pytest.approx(2.0)
    assert rep["meta"]["commit"]["id"] == "abc"
    assert report.main([str(path), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "report.csv").is_file()
    with pytest.raises(FileNotFoundError, match="run"):
        report.from_benchmark_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        report.from_benchmark_json(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="benchmarks"):
        report.from_benchmark_json(tmp_path / "other.json")
    assert report.main([str(tmp_path / "bad.json")]) == 2


def test_compare_two_runs(tmp_path, capsys):
    def run(path, fast, commit):
        path.write_text(json.dumps({"commit_info": {"id": commit}, "benchmarks": [
            entry("a", "baseline", 1.0), entry("a", "fastfp", fast),
            entry("only-" + commit, "baseline", 1.0), entry("only-" + commit, "fastfp", 1.0)]}))
        return path

    old, new = run(tmp_path / "old.json", 0.5, "old"), run(tmp_path / "new.json", 0.25, "new")
    rows = report.compare(report.from_benchmark_json(new), report.from_benchmark_json(old))
    (row,) = rows  # only the groups present in both runs
    assert row["group"] == "a" and row["change"] == pytest.approx(2.0)
    assert row["old_speedup"] == pytest.approx(2.0) and row["new_speedup"] == pytest.approx(4.0)
    assert report.main([str(new), "--against", str(old)]) == 0
    text = capsys.readouterr().out
    assert "change" in text and "2x" in text and "@ old" in text
    assert report.main([str(new), "--against", str(tmp_path / "none.json")]) == 2


# --- peaks --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, key", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H100 NVL", "H100 NVL"), ("NVIDIA H200", "H200 SXM"), ("NVIDIA H200 NVL", "H200 NVL"),
    ("NVIDIA A100-SXM4-80GB", "A100 SXM 80GB"), ("NVIDIA A100-SXM4-40GB", "A100 SXM 40GB"),
    ("NVIDIA A100 80GB PCIe", "A100 PCIe 80GB"), ("NVIDIA A100-PCIE-40GB", "A100 PCIe 40GB"),
    ("NVIDIA L4", "L4"), ("NVIDIA L40S", "L40S"), ("NVIDIA L40", "L40"), ("NVIDIA A10", "A10"),
    ("Tesla T4", "T4"), ("Tesla V100-SXM2-16GB", "V100 SXM2"), ("NVIDIA GH200 480GB", "GH200"),
])
def test_peak_lookup(name, key):
    found = peaks.lookup(name)
    assert found is not None and found[0] == key
    assert found[1] == peaks.GPU_PEAKS[key][0]


def test_peak_values_and_unknowns(monkeypatch):
    assert peaks.lookup("NVIDIA H100 80GB HBM3")[1:] == (3350.0, peaks.GPU_PEAKS["H100 SXM"][1])
    assert peaks.lookup("NVIDIA H200")[1] == 4800.0
    assert peaks.lookup("NVIDIA H100 80GB HBM3")[2]["bf16"] == pytest.approx(989.4)
    assert peaks.lookup("Some Future GPU") is None and peaks.lookup("") is None
    assert peaks.precision_of(torch.bfloat16) == "bf16"
    assert peaks.precision_of("float16") == "fp16" and peaks.precision_of(None) is None
    monkeypatch.delenv("FASTFP_PEAK_GBPS", raising=False)
    monkeypatch.delenv("FASTFP_PEAK_TFLOPS", raising=False)
    unknown = peaks.device_peaks("cuda", "Some Future GPU")
    assert unknown["gbps"] is None and unknown["tflops"] == {}
    monkeypatch.setenv("FASTFP_PEAK_GBPS", "1234")
    monkeypatch.setenv("FASTFP_PEAK_TFLOPS", "99")
    forced = peaks.device_peaks("cuda", "Some Future GPU")
    assert forced["gbps"] == 1234.0 and forced["tflops"]["bf16"] == 99.0
    monkeypatch.setenv("FASTFP_PEAK_GBPS", "fast")
    with pytest.raises(ValueError, match="FASTFP_PEAK_GBPS"):
        peaks.device_peaks("cuda", "NVIDIA L4")


def test_cpu_bandwidth_is_measured(monkeypatch):
    monkeypatch.delenv("FASTFP_PEAK_GBPS", raising=False)
    gbps = peaks.measure_cpu_bandwidth(nbytes=1 << 22, repeats=2)
    assert 0.1 < gbps < 10_000
    assert peaks.device_peaks("cpu", "cpu", measure_cpu=False)["gbps"] is None


# --- the bench suite end to end on a synthetic bench folder --------------------------------------

SYNTHETIC = '''
import pytest, torch
from .common import measure, bench_device

X = torch.randn(64, 64)

@pytest.mark.parametrize("role", ["baseline", "fastfp"])
def test_matmul(benchmark, role):
    dev = bench_device()
    fn = (lambda: X @ X) if role == "fastfp" else (
        lambda: torch.stack([(X[i] * X.T).sum(1) for i in range(64)]))
    out = measure(benchmark, fn, group="matmul", role=role, device=dev, rounds=2,
                  bytes=3 * 4 * 64 * 64, flops=2 * 64 ** 3, dtype="float32",
                  target_speedup={"cpu": 1e-9})
    torch.testing.assert_close(out, X @ X, atol=1e-4, rtol=1e-4)

@pytest.mark.gpu
def test_gpu_only():
    assert torch.cuda.is_available()
'''


@pytest.fixture
def bench_copy(tmp_path):
    """A bench package with the real conftest/report/peaks/common and one synthetic benchmark."""
    folder = tmp_path / "bench"
    folder.mkdir()
    for name in ("__init__.py", "conftest.py", "report.py", "peaks.py", "common.py"):
        shutil.copy(BENCH / name, folder / name)
    (folder / "bench_ops.py").write_text(SYNTHETIC)
    return folder


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTFP_BENCH")}
    env.update(FASTFP_PEAK_GBPS="10", **extra)  # no bandwidth measurement in tests
    return env


PYTEST = [sys.executable, "-m", "pytest", "-q", "-o", "python_files=bench_*.py", "-p",
          "no:cacheprovider"]


@pytest.mark.slow  # a pytest run in a subprocess
def test_disabled_benchmarks_stay_quiet_and_green(bench_copy, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([*PYTEST, str(bench_copy), "--benchmark-disable"],
                          capture_output=True, text=True, cwd=tmp_path,
                          env=_env(FASTFP_BENCH_OUT=str(out)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed, 1 skipped" in proc.stdout  # the benchmark bodies ran, the GPU one skipped
    assert "benchmarks disabled" in proc.stdout
    assert "ratios against the baselines" not in proc.stdout
    assert not out.exists()


@pytest.mark.slow  # a pytest run in a subprocess
def test_timed_run_reports_and_saves(bench_copy, tmp_path):
    out, raw = tmp_path / "out", tmp_path / "raw.json"
    proc = subprocess.run([*PYTEST, str(bench_copy), "--benchmark-enable",
                           f"--benchmark-json={raw}"], capture_output=True, text=True,
                          cwd=tmp_path, env=_env(FASTFP_BENCH_OUT=str(out)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ratios against the baselines" in proc.stdout
    data = json.loads(raw.read_text())
    assert {b["extra_info"]["role"] for b in data["benchmarks"]} == {"baseline", "fastfp"}
    assert all(b["stats"]["rounds"] == 2 for b in data["benchmarks"])
    assert all(b["extra_info"]["achieved_gbps"] > 0 for b in data["benchmarks"])
    assert data["fastfp"]["rows"][0]["group"] == "matmul"
    rep = report.from_benchmark_json(raw)  # the saved run re-reports
    assert rep["rows"][0]["speedup"] > 0
    assert json.loads((out / "report.json").read_text())["summary"]["rows"] == 1


@pytest.mark.slow  # a pytest run in a subprocess
def test_suite_without_pytest_benchmark_says_what_to_install(bench_copy, tmp_path):
    proc = subprocess.run([*PYTEST, str(bench_copy), "-p", "no:benchmark"], capture_output=True,
                          text=True, cwd=tmp_path, env=_env())
    assert proc.returncode != 0
    assert "needs pytest-benchmark" in proc.stdout + proc.stderr


@pytest.mark.slow  # a pytest run in a subprocess
def test_fastfp_bench_end_to_end(bench_copy, tmp_path):
    out = tmp_path / "res"
    proc = subprocess.run(
        [sys.executable, "-m", "fastfp", "bench", "--bench-dir", str(bench_copy), "--out",
         str(out), "--quick", "--device", "cpu", "--json", str(tmp_path / "copy.json")],
        capture_output=True, text=True, cwd=tmp_path, env=_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ratios against the baselines" in proc.stdout and "matmul" in proc.stdout
    assert "1 PASS, 0 FAIL" in proc.stdout
    rep = json.loads((out / "report.json").read_text())
    assert rep["meta"]["quick"] is True and rep["meta"]["device_type"] == "cpu"
    (row,) = rep["rows"]
    assert row["group"] == "matmul" and row["speedup"] > 0 and row["peak_frac"] is not None
    raw = json.loads((out / "benchmark.json").read_text())
    assert raw["fastfp"]["meta"]["versions"]["torch"] == torch.__version__
    assert len(raw["benchmarks"]) == 2  # the raw file stays pytest-benchmark's own format
    for bench in raw["benchmarks"]:  # achieved figures recorded by measure() in extra_info
        info, best = bench["extra_info"], bench["stats"]["min"]
        assert info["achieved_gbps"] == pytest.approx(3 * 4 * 64 * 64 / best / 1e9)
        assert info["peak_fraction"] == pytest.approx(info["achieved_gbps"] / 10)
    assert (out / "report.png").is_file() and (out / "report.csv").is_file()
    assert json.loads((tmp_path / "copy.json").read_text())["rows"][0]["group"] == "matmul"


# --- CLI argument handling ----------------------------------------------------------------------

def cli(argv, capsys):
    from fastfp.cli.main import main

    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def test_cli_help(capsys):
    rc, text = cli(["bench", "--help"], capsys)
    assert rc == 0
    for option in ("--quick", "--device", "--only", "--out", "--curves", "--json"):
        assert option in text


def test_cli_bad_arguments_name_the_option(capsys, tmp_path, bench_copy):
    rc, text = cli(["bench", "--only", "everything"], capsys)
    assert rc == 2 and "--only" in text and "everything" in text
    rc, text = cli(["bench", "--device", "tpu"], capsys)
    assert rc == 2 and "--device" in text
    rc, text = cli(["bench", "--bench-dir", str(tmp_path / "nowhere")], capsys)
    assert rc == 2 and "--bench-dir" in text
    rc, text = cli(["bench", "--bench-dir", str(bench_copy), "--only", "fbi",
                    "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "--only fbi" in text and "bench_fbi.py" in text
    (tmp_path / "file").write_text("")
    rc, text = cli(["bench", "--bench-dir", str(bench_copy), "--out", str(tmp_path / "file")],
                   capsys)
    assert rc == 2 and "--out" in text
    if not torch.cuda.is_available():
        rc, text = cli(["bench", "--bench-dir", str(bench_copy), "--device", "cuda"], capsys)
        assert rc == 2 and "--device cuda" in text


def test_cli_environment_and_pytest_command(tmp_path, bench_copy):
    from fastfp.cli import bench as cli_bench
    from fastfp.cli.main import build_parser

    args = build_parser().parse_args(["bench", "--quick", "--device", "cpu", "--only", "ops",
                                      "--out", str(tmp_path / "o"), "-k", "matmul"])
    env = cli_bench._environment(args, bench_copy)
    assert env["FASTFP_BENCH_QUICK"] == "1" and env["FASTFP_BENCH_DEVICE"] == "cpu"
    assert env["FASTFP_BENCH_OUT"] == str((tmp_path / "o").resolve())
    files = cli_bench._check_args(args, bench_copy)
    assert files == [bench_copy / "bench_ops.py"]
    cmd = cli_bench.pytest_command(args, bench_copy, files)
    assert "--benchmark-enable" in cmd and str(bench_copy / "bench_ops.py") in cmd
    assert cmd[cmd.index("-k") + 1] == "matmul"
    assert f"--benchmark-json={(tmp_path / 'o' / 'benchmark.json').resolve()}" in cmd
    curves_cmd = cli_bench.curves_command(args, bench_copy)
    assert curves_cmd[1:3] == ["-m", "bench.curves"] and "--quick" in curves_cmd
    assert curves_cmd[curves_cmd.index("--only") + 1] == "ops"
    args = build_parser().parse_args(["bench", "--only", "openworld", "--only", "fbi"])
    assert cli_bench.curve_areas(args) == ["fbi"]  # open world has no curves
    assert cli_bench.curve_areas(build_parser().parse_args(["bench"])) == list(
        cli_bench.CURVE_AREAS)
    assert cli_bench.CURVE_AREAS == curves.AREAS  # the CLI's list follows bench/curves.py
    assert all((BENCH / f"bench_{area}.py").is_file() for area in cli_bench.AREAS)
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(bench_copy.parent)  # where bench is


def test_find_bench_dir_checkout_wheel_and_missing(tmp_path, monkeypatch):
    import fastfp
    from fastfp.cli import bench as cli_bench
    from fastfp.cli.main import UserError

    assert cli_bench.find_bench_dir() in (BENCH, Path(fastfp.__file__).resolve().parent / "bench")
    wheel = tmp_path / "site-packages" / "fastfp"
    (wheel / "bench").mkdir(parents=True)
    monkeypatch.setattr(fastfp, "__file__", str(wheel / "__init__.py"))
    with pytest.raises(UserError, match="cannot find the bench suite"):
        cli_bench.find_bench_dir()
    for name in ("__init__.py", "conftest.py", "report.py"):
        (wheel / "bench" / name).write_text("")
    assert cli_bench.find_bench_dir() == wheel / "bench"


def test_bench_package_names(tmp_path):
    """The curves run as ``python -m <package>.curves``: bench in a checkout, fastfp.bench in a
    wheel (pytest's own rule: the package ends where __init__.py files stop)."""
    from fastfp.cli import bench as cli_bench

    assert cli_bench._package(BENCH) == ("bench", BENCH.parent)
    wheel = tmp_path / "site-packages" / "fastfp" / "bench"
    wheel.mkdir(parents=True)
    for folder in (wheel, wheel.parent):
        (folder / "__init__.py").write_text("")
    assert cli_bench._package(wheel) == ("fastfp.bench", tmp_path / "site-packages")


# --- scaling curves -----------------------------------------------------------------------------

def test_curve_timing_budget_and_plot(tmp_path):
    calls = {"fastfp": 0, "baseline": 0}

    def make(n):
        def fast():
            calls["fastfp"] += 1
            return sum(range(n))

        def base():
            calls["baseline"] += 1
            return sum(range(100 * n))
        return fast, (base if n > 1 else None)

    curve = curves.Curve("models", [1, 10, 100, 1000], make, "synthetic")
    curves.run_curve(curve, torch.device("cpu"), repeats=2, budget_s=0.0, min_total_s=0.0)
    assert [p["value"] for p in curve.points] == [1, 10, 100, 1000]
    # every line is timed until one call exceeds the (zero) budget, then skipped
    assert curve.points[0]["fastfp_s"] > 0 and curve.points[0]["baseline_s"] is None
    assert curve.points[1]["fastfp_s"] is None and "fastfp skipped" in curve.points[1]["note"]
    assert curve.points[1]["baseline_s"] > 0
    assert curve.points[2]["baseline_s"] is None and "baseline skipped" in curve.points[2]["note"]
    assert calls == {"fastfp": 3, "baseline": 3}  # warm-up + 2 repeats, once each
    # short calls are repeated until enough time is measured (bounded)
    count = []
    best = curves.time_call(lambda: count.append(1), torch.device("cpu"), repeats=2,
                            min_total_s=10.0, max_repeats=7)
    assert len(count) == 1 + 7 and 0 <= best < 1.0
    curves.plot("synthetic", [curve], "cpu (test)", tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    text = curves.format_area("synthetic", [curve])
    assert "models" in text and "10:" in text


def test_curves_skip_an_area_without_api(tmp_path, monkeypatch):
    def missing(device, quick):
        raise curves.SkipArea("fastfp.fbi.pairwise_rajski is not available yet")

    monkeypatch.setitem(curves.BUILDERS, "fbi", missing)
    result = curves.run(tmp_path, ("fbi",), device=torch.device("cpu"), quick=True)
    assert "not available" in result["areas"]["fbi"]["skipped"]
    assert json.loads((tmp_path / "curves.json").read_text())["areas"]["fbi"]["skipped"]


# --- `fastfp bench` for real: from this checkout and from a wheel --------------------------------

OPS_TINY = ["--only", "ops", "-k", "test_vs_fft and highpass and 3x32x32", "--quick", "--device",
            "cpu"]


def _ran_tiny_ops(proc: subprocess.CompletedProcess, out: Path) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ratios against the baselines" in proc.stdout
    (row,) = json.loads((out / "report.json").read_text())["rows"]
    assert row["group"] == "highpass 3x32x32 k=2 | fft" and row["speedup"] > 0


@pytest.mark.slow
def test_fastfp_bench_runs_the_checkout_suite(tmp_path):
    out = tmp_path / "res"
    proc = subprocess.run([sys.executable, "-m", "fastfp", "bench", "--help"],
                          capture_output=True, text=True, cwd=tmp_path, env=_env())
    assert proc.returncode == 0 and "--only" in proc.stdout, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "fastfp", "bench", *OPS_TINY, "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=600)
    _ran_tiny_ops(proc, out)
    assert f"suite {BENCH}" in proc.stdout


def _editable_finders_off() -> dict:
    """Environment that switches scikit-build-core's editable-install finder off (it would serve
    the checkout's fastfp before anything on PYTHONPATH): its skip variable lists build dirs."""
    paths = [f.path for f in sys.meta_path if type(f).__name__.startswith("ScikitBuild")
             and isinstance(getattr(f, "path", None), str)]
    return {"SKBUILD_EDITABLE_SKIP": os.pathsep.join(paths)} if paths else {}


@pytest.mark.slow
def test_wheel_ships_and_runs_the_bench_suite(tmp_path):
    """The wheel maps bench/ to fastfp/bench, where `fastfp bench` finds and runs it (built
    without the compiler: the torch fallbacks serve)."""
    pytest.importorskip("scikit_build_core")
    pytest.importorskip("nanobind")
    root = BENCH.parent
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(root), "--no-build-isolation", "--no-deps",
         "-w", str(tmp_path), "-C", "wheel.cmake=false", "-C", f"build-dir={tmp_path / 'b'}",
         "-q"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = tmp_path.glob("fastfp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("__init__.py", "conftest.py", "report.py", "common.py", "peaks.py", "curves.py",
                 "bench_ops.py", "baselines/__init__.py", "baselines/dct.py"):
        assert f"fastfp/bench/{name}" in names
    assert "fastfp/py.typed" in names and "fastfp/kernels/__init__.py" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = _env(PYTHONPATH=str(site), **_editable_finders_off())
    where = subprocess.run([sys.executable, "-c", "import fastfp; print(fastfp.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
    assert where.stdout.strip() == str(site / "fastfp" / "__init__.py"), where.stderr
    proc = subprocess.run([sys.executable, "-m", "fastfp", "bench", "--help"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0 and "--only" in proc.stdout, proc.stderr
    out = tmp_path / "res"
    proc = subprocess.run([sys.executable, "-m", "fastfp", "bench", *OPS_TINY, "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    _ran_tiny_ops(proc, out)
    assert f"suite {site / 'fastfp' / 'bench'}" in proc.stdout
