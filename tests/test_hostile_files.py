"""Files a hostile party names: FIFOs, devices, deeply nested JSON, ``.npy`` headers that
declare more than the file holds. Every reader opens regular files only and caps sizes before it
reads; every case ends in one line on stderr and exit 2, quickly, with nothing left running."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest
import torch

from fastfp import fbi
from fastfp import io as fileio
from fastfp.answers import read_answers
from fastfp.cli.main import main

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")

DEEP = "[" * 100_000 + "]" * 100_000
FIFO_LIMIT_S = 5.0


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A database with stored inputs, a release folder, and a spec of one zoo model."""
    tmp = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    x = torch.rand(30, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    db = fbi.Database(rng.integers(0, 10, size=(4, 30, 2)), ["a0", "a1", "b0", "b1"],
                      ["a", "a", "b", "b"], k=2, num_classes=10, inputs=x)
    db.save(tmp / "db.safetensors")
    rel = tmp / "release"
    rel.mkdir()
    np.save(rel / "alpha.npy", rng.integers(0, 10, 30))
    np.save(rel / "HALF-alpha-1.npy", rng.integers(0, 10, 30))
    (tmp / "spec.json").write_text(json.dumps({"models": [{"name": "m", "family": "F",
                                                           "zoo": "cnn-s0"}]}))
    return {"tmp": tmp, "db": tmp / "db.safetensors", "release": rel, "spec": tmp / "spec.json"}


def _commands(world, path, out):
    """Every command line that reads ``path`` as a file the user or the checked party names."""
    db, rel, spec = world["db"], world["release"], world["spec"]
    ident = ["fbi", "identify", "--db", db, "--L", "5", "--trials", "2"]
    build = ["fbi", "build", "--spec", spec, "--inputs", "zoo:10", "--out", out / "o.safetensors"]
    imp = ["fbi", "import-predictions", rel, "--out", out / "imp.safetensors"]
    return {
        "--blackbox": [*ident, "--blackbox", path],
        "--queries": [*ident, "--blackbox", world["tmp"] / "answers.csv", "--queries", path],
        "--db identify": ["fbi", "identify", "--db", path, "--blackbox", "db:a0"],
        "--db distances": ["fbi", "distances", "--db", path],
        "--db paper-tables": ["fbi", "paper-tables", "--db", path],
        "--spec": ["fbi", "build", "--spec", path, "--inputs", "zoo:10", "--out",
                   out / "o.safetensors"],
        "--labels": [*build, "--labels", path],
        "--inputs": ["fbi", "build", "--spec", spec, "--inputs", path, "--out",
                     out / "o.safetensors"],
        "--families": [*imp, "--families", path],
        "--ground-truth": [*imp, "--ground-truth", path],
    }


def _run_bounded(argv, fifo, capsys):
    """``main(argv)`` in a thread, at most FIFO_LIMIT_S: a reader stuck on the FIFO is released
    (a writer opens and closes it) so that nothing is left running, and the test fails."""
    result: dict = {}

    def target():
        try:
            result["code"] = main([str(a) for a in argv])
        except BaseException as exc:  # noqa: BLE001 - reported below
            result["exc"] = exc

    t = threading.Thread(target=target, daemon=True)
    start = time.monotonic()
    t.start()
    t.join(FIFO_LIMIT_S)
    hung = t.is_alive()
    while t.is_alive():  # unblock the reader: open for writing, close (EOF)
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass
        t.join(0.1)
    err = capsys.readouterr().err.strip()
    assert not hung, (argv, "hung on the FIFO")
    assert "exc" not in result, (argv, result.get("exc"))
    return result["code"], err, time.monotonic() - start


@pytest.mark.parametrize("suffix", [".csv", ".json", ".pt", ".npy", ".safetensors"])
def test_fifos_are_refused_at_once(world, tmp_path, capsys, suffix):
    (world["tmp"] / "answers.csv").write_text("1,2\n" * 5)
    fifo = tmp_path / f"pipe{suffix}"
    os.mkfifo(fifo)
    for flag, argv in _commands(world, fifo, tmp_path).items():
        code, err, seconds = _run_bounded(argv, fifo, capsys)
        assert code == 2, (flag, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, (flag, err)
        assert "FIFO" in err or "not a regular file" in err, (flag, err)
        assert seconds < FIFO_LIMIT_S, flag
    assert not (tmp_path / "o.safetensors").exists()
    assert not (tmp_path / "imp.safetensors").exists()


def test_dev_zero_is_refused_without_reading_it(world, tmp_path):
    """/dev/zero under the names of answers, labels, families, spec: refused before a byte is
    read (in a child with a memory limit and a timeout, so that a regression cannot hurt)."""
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    for suffix in (".csv", ".json", ".npy"):
        os.symlink("/dev/zero", tmp_path / f"zero{suffix}")
    cases = []
    for suffix in (".csv", ".json", ".npy"):
        for flag, argv in _commands(world, tmp_path / f"zero{suffix}", tmp_path).items():
            if flag.startswith(("--blackbox", "--labels", "--families", "--spec")):
                cases.append([str(a) for a in argv])
    script = (
        "import contextlib, io, json, resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))\n"
        "from fastfp.cli.main import main\n"
        "out = []\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):\n"
        "        code = main(argv)\n"
        "    out.append([code, err.getvalue()])\n"
        "print(json.dumps(out))\n")
    r = subprocess.run([sys.executable, "-c", script, json.dumps(cases)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for argv, (code, err) in zip(cases, json.loads(r.stdout.strip().splitlines()[-1]),
                                 strict=True):
        assert code == 2, (argv, err)
        assert len(err.strip().splitlines()) == 1, (argv, err)
        assert "device node" in err, (argv, err)


@pytest.mark.parametrize("flag", ["--blackbox", "--spec", "--labels", "--families"])
def test_deeply_nested_json_is_one_line(world, tmp_path, capsys, flag):
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP)
    argv = _commands(world, deep, tmp_path)[flag]
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nested 100000 levels deep" in err, err


def test_bounded_json_reader(tmp_path):
    p = tmp_path / "deep.json"
    p.write_text(DEEP)
    with pytest.raises(ValueError, match="data: .* nested 100000 levels deep"):
        fileio.read_json(p, name="data")
    with pytest.raises(ValueError, match="nested 65 levels deep"):
        fileio.parse_json("[" * 65 + "]" * 65, name="x")
    assert fileio.parse_json("[" * 64 + "]" * 64, name="x") is not None
    # brackets inside strings do not count
    text = json.dumps({"a": "[" * 1000, "b": [[1]]})
    assert fileio.files.nesting_depth(text) == 3
    assert fileio.parse_json(text)["b"] == [[1]]
    big = tmp_path / "big.json"
    big.write_text("[" + "1," * 100 + "1]")
    with pytest.raises(ValueError, match="big.json.* holds 203 bytes, more than"):
        fileio.read_json(big, name="data", max_bytes=100)


def _forged_npy(path, shape, dtype="<i8", body=b"\0" * 24):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False,
                                               "shape": shape})
    path.write_bytes(buf.getvalue() + body)
    return path


def test_npy_headers_are_checked_before_allocating(tmp_path):
    huge = _forged_npy(tmp_path / "huge.npy", (10 ** 12,))
    with pytest.raises(ValueError, match="declares a .* 8000000000000 bytes, more than"):
        fileio.read_npy(huge, name="x")
    lying = _forged_npy(tmp_path / "lying.npy", (1000,))  # within the cap, beyond the file
    with pytest.raises(ValueError, match="declares .* 8000 bytes, but holds 24"):
        fileio.read_npy(lying, name="x")
    ok = tmp_path / "ok.npy"
    np.save(ok, np.arange(6, dtype=np.int32).reshape(2, 3), allow_pickle=False)
    np.testing.assert_array_equal(fileio.read_npy(ok), np.arange(6).reshape(2, 3))
    fortran = tmp_path / "f.npy"
    np.save(fortran, np.asfortranarray(np.arange(6.0).reshape(2, 3)))
    np.testing.assert_array_equal(fileio.read_npy(fortran), np.arange(6.0).reshape(2, 3))
    # an .npz member declaring terabytes
    npz = tmp_path / "a.npz"
    with zipfile.ZipFile(npz, "w") as zf:
        zf.writestr("labels.npy", huge.read_bytes())
    with pytest.raises(ValueError, match="declares .* more than"):
        read_answers(npz, num_inputs=None, k=1)


def test_huge_declared_and_empty_npy_on_the_command_line(world, tmp_path, capsys):
    huge = _forged_npy(tmp_path / "huge.npy", (10 ** 12,))
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0,), dtype=np.int64))
    for path, why in ((huge, "declares"), (empty, "empty")):
        cmds = _commands(world, path, tmp_path)
        for flag in ("--blackbox", "--labels", "--ground-truth", "--inputs"):
            code = main([str(a) for a in cmds[flag]])
            err = capsys.readouterr().err.strip()
            assert code == 2, (flag, err)
            assert len(err.splitlines()) == 1 and why in err, (flag, err)


def test_csv_and_json_answers_are_capped(tmp_path, monkeypatch):
    from fastfp import answers

    rows = tmp_path / "rows.csv"
    rows.write_text("1,2\n" * 100)
    monkeypatch.setattr(answers, "MAX_TEXT_VALUES", 50)
    with pytest.raises(ValueError, match="more than 50 values.*npy"):
        read_answers(rows, num_inputs=None, k=1)
    js = tmp_path / "rows.json"
    js.write_text(json.dumps([[1, 2]] * 100))
    with pytest.raises(ValueError, match="more than 50 values"):
        read_answers(js, num_inputs=None, k=1)
    monkeypatch.setattr(answers, "MAX_TEXT_BYTES", 100)
    with pytest.raises(ValueError, match="holds 400 bytes, more than .*npy"):
        read_answers(rows, num_inputs=None, k=1)


def test_queries_json_without_its_seal_is_refused(world, tmp_path, capsys):
    from fastfp.answers import read_queries

    q = tmp_path / "queries.json"
    fileio.write_json(q, {"indices": [0, 1, 2], "format": "png"}, sealed=True)
    assert read_queries(q, 30).tolist() == [0, 1, 2]
    q.write_text(json.dumps({"indices": [0, 1, 2], "format": "png"}))  # the seal removed
    with pytest.raises(ValueError, match="queries: .* has no checksum"):
        read_queries(q, 30)
    (tmp_path / "a.csv").write_text("1,2\n" * 3)
    assert main(["fbi", "identify", "--db", str(world["db"]), "--blackbox",
                 str(tmp_path / "a.csv"), "--queries", str(q), "--L", "3", "--trials",
                 "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no checksum" in err, err


@pytest.mark.parametrize("content", [
    {"settings_hash": "x", "world_size": 1, "n_items": 3, "settings": {"a": 1}},  # no seal
    [1, 2, 3],  # not an object
    "manifest",
])
def test_shard_manifest_without_seal_or_not_an_object_is_refused(tmp_path, content):
    from fastfp import distributed as dd

    store = dd.ShardStore(tmp_path, {"a": 1}, 3, dd.init()).open()  # writes a sealed one
    manifest = tmp_path / dd.MANIFEST
    assert "sha256" in json.loads(manifest.read_text())
    manifest.write_text(json.dumps(content))
    with pytest.raises(ValueError, match="no checksum"):
        dd.ShardStore(tmp_path, {"a": 1}, 3, dd.init()).open()
    del store
