"""User errors of the command line are one line on stderr and exit 2, found at their argument
before any work: no traceback for a missing sub-command, a device that holds no data, sizes no
machine holds, a model that cannot take the inputs; outputs are checked before the work."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from fastfp import fbi
from fastfp.cli.main import main


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_errors")
    rng = np.random.default_rng(0)
    x = torch.rand(30, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    path = tmp / "db.safetensors"
    fbi.Database(rng.integers(0, 10, size=(4, 30, 2)), ["a0", "a1", "b0", "b1"],
                 ["a", "a", "b", "b"], k=2, num_classes=10, inputs=x).save(path)
    return path


def _one_line(argv, capsys, *needles):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, (argv, err)
    for n in needles:
        assert n in err, (argv, err)
    return err


def test_fbi_without_a_subcommand_is_a_usage_error(capsys):
    _one_line(["fbi"], capsys, "fastfp fbi: error:", "SUBCOMMAND", "--help")


def test_a_device_that_holds_no_data(capsys, tmp_path):
    _one_line(["verify", "cnn-s0", tmp_path / "fp.safetensors", "--device", "meta"], capsys,
              "--device", "'meta'")
    _one_line(["fbi", "build", "--spec", tmp_path / "none.json", "--inputs", "zoo:5", "--out",
               tmp_path / "o.safetensors", "--device", "meta"], capsys, "--device")


@pytest.mark.parametrize("argv, needle", [
    (["-n", "100000000000"], "--num"),
    (["-n", "1e11"], "invalid int value"),
    (["--input-shape", "1x99999x99999"], "--input-shape"),
    (["--input-shape", "3,99999,99999"], "--input-shape"),
    (["-n", "10000000", "--input-shape", "3,224,224"], "--num"),
])
def test_oversized_generation_is_refused_before_allocating(capsys, tmp_path, argv, needle):
    _one_line(["generate", "cnn-s0", *argv, "--out", tmp_path / "fp.safetensors", "--device",
               "cpu", "--no-progress"], capsys, needle)
    assert not (tmp_path / "fp.safetensors").exists()


def test_library_caps_the_example_shape():
    from fastfp.cexamples import checks

    with pytest.raises(ValueError, match="input_shape: .* values per example"):
        checks.check_input_shape((1, 99999, 99999))
    with pytest.raises(ValueError, match="num: "):
        checks.check_size(10 ** 7, (3, 224, 224))
    assert checks.check_input_shape((3, 224, 224)) == (3, 224, 224)


def test_too_many_zoo_inputs(capsys, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text('{"models": [{"name": "m", "family": "F", "zoo": "cnn-s0"}]}')
    _one_line(["fbi", "build", "--spec", spec, "--inputs", "zoo:99999999999", "--out",
               tmp_path / "o.safetensors"], capsys, "zoo:N draws at most")


def test_an_architecture_that_cannot_take_the_inputs(db, capsys):
    pytest.importorskip("torchvision")
    _one_line(["fbi", "identify", "--db", db, "--blackbox", "arch:resnet18", "--L", "5",
               "--trials", "2"], capsys, "--blackbox arch:resnet18: cannot run on the "
              "database's inputs of shape (1, 32, 32)")


@pytest.mark.parametrize("flag, value", [("--batch-size", "0"), ("--timeout", "-1"),
                                         ("--timeout", "nan")])
def test_query_settings_are_checked(db, capsys, flag, value):
    _one_line(["fbi", "identify", "--db", db, "--blackbox", "db:a0", flag, value], capsys, flag)


def test_outputs_are_checked_before_anything_is_read(tmp_path, capsys):
    """A missing output folder is named first: the database / spec given here do not even exist,
    so any other order would name them instead."""
    missing = tmp_path / "no" / "such"
    nodb = tmp_path / "none.safetensors"
    cases = [
        (["fbi", "identify", "--db", nodb, "--blackbox", "db:a0", "--json", missing / "r.json"],
         "--json"),
        (["fbi", "detect", "--db", nodb, "--family", "a", "--blackbox", "db:a0", "--json",
          missing / "r.json"], "--json"),
        (["fbi", "distances", "--db", nodb, "--png", missing / "d.png"], "--png"),
        (["fbi", "distances", "--db", nodb, "--embedding-png", missing / "e.png"],
         "--embedding-png"),
        (["fbi", "distances", "--db", nodb, "--json", missing / "d.json"], "--json"),
        (["fbi", "law", "--db", nodb, "--json", missing / "l.json"], "--json"),
        (["fbi", "build", "--spec", tmp_path / "none.json", "--inputs", "zoo:5", "--out",
          tmp_path / "o.safetensors", "--json", missing / "b.json"], "--json"),
        (["fbi", "export-queries", "--db", nodb, "--out", tmp_path / "file" / "q"], "--out"),
    ]
    (tmp_path / "file").write_text("a file, not a folder")
    for argv, flag in cases:
        _one_line(argv, capsys, flag)


def test_a_symlinked_cache_is_refused_before_the_first_request(db, tmp_path, capsys):
    target = tmp_path / "elsewhere.jsonl"
    target.write_text("")
    link = tmp_path / "cache.jsonl"
    os.symlink(target, link)
    # port 9 (discard) has no server: a request would be a connection error, not this one
    _one_line(["fbi", "identify", "--db", db, "--blackbox",
               "http://127.0.0.1:9/v2/models/m", "--cache", link, "--timeout", "1"], capsys,
              "--cache", "symbolic link")
    assert target.read_text() == ""


def test_export_queries_refuses_a_link_inside_its_folder_before_writing(db, tmp_path, capsys):
    out = tmp_path / "q"
    out.mkdir()
    os.symlink(tmp_path / "victim.json", out / "queries.json")
    _one_line(["fbi", "export-queries", "--db", db, "--out", out, "--L", "5", "--trials", "2"],
              capsys, "--out", "symbolic link")
    assert sorted(p.name for p in out.iterdir()) == ["queries.json"]


@pytest.mark.parametrize("exc", [RecursionError("deep"), MemoryError(), OverflowError("big"),
                                 RuntimeError("DefaultCPUAllocator: can't allocate memory")])
def test_the_last_resort_is_one_line(monkeypatch, capsys, exc):
    import fastfp.cli.info as info

    def boom(args):
        raise exc

    monkeypatch.setattr(info, "run", boom)
    code = main(["info"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("fastfp info: error:"), err


def test_other_runtime_errors_still_show_their_traceback(monkeypatch):
    import fastfp.cli.info as info

    def boom(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(info, "run", boom)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["info"])
