"""What the wheel ships: the ``fastfp`` package only (with its ``fastfp.kernels`` and
``fastfp.bench`` subpackages, mapped from the checkout's kernels/ and bench/), never tests/ or a
stray top-level name. Checked from pyproject's mapping and the installed package, without building a
wheel (tests/test_bench_report.py builds one to run ``fastfp bench`` from it)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]


def _skbuild() -> dict:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["scikit-build"]


def _wheel_files() -> list[str]:
    """The wheel's file names as scikit-build-core lays them out from wheel.packages (each key a
    folder in the wheel, each value a folder of the checkout, minus wheel.exclude)."""
    settings = _skbuild()
    excluded = [p.strip("*/") for p in settings.get("wheel", {}).get("exclude", [])]
    names = []
    for target, source in settings["wheel"]["packages"].items():
        for path in sorted((REPO / source).rglob("*")):
            rel = path.relative_to(REPO / source)
            if path.is_file() and not any(e in rel.parts for e in excluded):
                names.append(f"{target}/{rel.as_posix()}")
    return names


def test_wheel_mapping_ships_the_fastfp_package_only():
    packages = _skbuild()["wheel"]["packages"]
    for target, source in packages.items():
        assert target == "fastfp" or target.startswith("fastfp/"), target
        folder = (REPO / source).resolve()
        assert folder != REPO and REPO in folder.parents, (target, source)  # never the root
        assert (folder / "__init__.py").is_file(), f"{source} is not a package"
        assert folder != REPO / "tests" and REPO / "tests" not in folder.parents
    names = _wheel_files()
    assert {n.split("/")[0] for n in names} == {"fastfp"}
    assert not [n for n in names if "tests" in n.split("/")[:-1] or "__pycache__" in n]
    assert not [n for n in names if n.startswith(("fastfp/fastfp/", "fastfp/csrc/"))]
    # what `fastfp bench` and the Triton dispatch need from the wheel
    for name in ("fastfp/bench/__init__.py", "fastfp/bench/conftest.py", "fastfp/bench/report.py",
                 "fastfp/bench/bench_ops.py", "fastfp/bench/baselines/dct.py",
                 "fastfp/kernels/__init__.py", "fastfp/py.typed", "fastfp/cli/main.py"):
        assert name in names, name


def test_cmake_installs_into_the_package_only():
    destinations = re.findall(r"DESTINATION\s+(\S+?)\)?\s", (REPO / "CMakeLists.txt").read_text())
    assert destinations and all(d == "fastfp" or d.startswith("fastfp/") for d in destinations)


INSTALLED = """
import importlib, os, pkgutil, fastfp
for name in ("fastfp.tests", "fastfp.fastfp", "fastfp.csrc", "fastfp.docs"):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        continue
    raise SystemExit(f"{name} imports: not part of the package")
roots = [p for p in fastfp.__path__ if os.path.isfile(os.path.join(p, "fastfp", "__init__.py"))]
assert not roots, f"fastfp.__path__ holds a folder above the package: {roots}"
names = {m.name for m in pkgutil.iter_modules(fastfp.__path__)}
assert not names & {"tests", "fastfp", "csrc", "docs", "build"}, names
for name in ("fastfp.bench", "fastfp.bench.baselines.dct", "fastfp.kernels"):
    module = importlib.import_module(name)
print(importlib.import_module("fastfp.bench").__file__)
"""


def test_installed_package_exposes_its_own_subpackages_only(tmp_path):
    # a fresh interpreter outside the checkout: what a user of the installed package sees
    run = subprocess.run([sys.executable, "-c", INSTALLED], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    bench = Path(run.stdout.strip())
    assert bench.name == "__init__.py" and (bench.parent / "conftest.py").is_file()
