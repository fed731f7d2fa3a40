"""``fastfp generate`` / ``fastfp verify`` end to end, and their user errors (exit 2, no
traceback)."""

import json

import pytest
import torch
from helpers import tiny_cnn

from fastfp import Fingerprint, cexamples
from fastfp.cli.main import main

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit deprecation notes


@pytest.fixture
def model_files(tmp_path):
    model = tiny_cnn(num_classes=5)
    scripted = tmp_path / "tiny.pt"
    torch.jit.script(model).save(str(scripted))
    pickled = tmp_path / "tiny_module.pth"
    torch.save(model, str(pickled))
    return model, scripted, pickled


@pytest.mark.parametrize("which", ["scripted", "pickled"])
def test_generate_then_verify(which, model_files, tmp_path, capsys):
    model, scripted, pickled = model_files
    path = scripted if which == "scripted" else pickled
    out, report = tmp_path / "fp.safetensors", tmp_path / "gen.json"
    rc = main(["generate", str(path), "--input-shape", "1,8,8", "--num", "4", "--steps", "20",
               "--method", "ltrc", "--q", "2", "--k", "1", "--seed", "7", "--out", str(out),
               "--json", str(report), "--no-progress", "--device", "cpu"])
    assert rc == 0
    fp = Fingerprint.load(out)
    assert fp.inputs.shape == (4, 1, 8, 8) and fp.meta["seed"] == 7 and fp.meta["k"] == 1
    rep = json.loads(report.read_text())
    assert rep["num"] == 4 and 0.0 <= rep["accuracy"] <= 1.0 and rep["method"] == "ltrc"
    assert rep["accuracy"] == cexamples.verify(model, fp)
    # Same seed from Python gives the same fingerprint.
    same = cexamples.generate(model, 4, (1, 8, 8), 5, method="ltrc", steps=20, q=2, k=1, seed=7,
                              progress=False)
    torch.testing.assert_close(same.inputs, fp.inputs, atol=1e-6, rtol=0)

    vreport = tmp_path / "ver.json"
    assert main(["verify", str(path), str(out), "--json", str(vreport)]) == 0
    assert json.loads(vreport.read_text())["accuracy"] == rep["accuracy"]
    assert "classified as their targets" in capsys.readouterr().out


def test_zoo_names_are_accepted(monkeypatch, tmp_path):
    from fastfp import zoo

    monkeypatch.setattr(zoo, "load", lambda name, **kw: tiny_cnn(num_classes=10))
    monkeypatch.setattr(zoo, "INPUT_SHAPE", (1, 8, 8))
    out = tmp_path / "z.safetensors"
    assert main(["generate", "cnn-s0", "--num", "2", "--steps", "3", "--method", "vanilla",
                 "--out", str(out), "--no-progress"]) == 0
    assert Fingerprint.load(out).meta["model"] == "cnn-s0"


@pytest.mark.parametrize("argv, message", [
    (["generate", "{scripted}", "--num", "2", "--out", "{out}"], "--input-shape"),
    (["generate", "{scripted}", "--input-shape", "1,8", "--out", "{out}"], "--input-shape"),
    (["generate", "{scripted}", "--input-shape", "1,8,8", "--q", "0", "--out", "{out}"],
     "q: expected an int"),
    (["generate", "{scripted}", "--input-shape", "1,8,8", "--num-classes", "3", "--out", "{out}"],
     "num_classes"),
    (["generate", "no-such-model", "--out", "{out}"], "MODEL"),
    (["generate", "{junk}", "--input-shape", "1,8,8", "--out", "{out}"], "MODEL"),
    (["verify", "{scripted}", "{junk}"], "not a fastfp fingerprint"),
    (["verify", "{scripted}", "{missing}"], "does not exist"),
    (["generate", "{scripted}", "--input-shape", "1,8,8", "--out", "{nodir}"],
     "--out: folder"),
    (["generate", "{scripted}", "--input-shape", "1,8,8", "--device", "cuda:x", "--out", "{out}"],
     "--device: not a torch device"),
    (["generate", "{folder}", "--input-shape", "1,8,8", "--out", "{out}"], "is a folder"),
    (["verify", "{scripted}", "{folder}"], "is a folder"),
])
def test_user_errors_exit_2_without_traceback(argv, message, model_files, tmp_path, capsys):
    _, scripted, _ = model_files
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00not a model at all")
    (tmp_path / "folder").mkdir()
    names = dict(scripted=scripted, out=tmp_path / "o.safetensors", junk=junk,
                 missing=tmp_path / "missing.safetensors", folder=tmp_path / "folder",
                 nodir=tmp_path / "nodir" / "o.safetensors")
    rc = main([a.format(**names) for a in argv] + (["--no-progress"] if argv[0] == "generate"
                                                   else []))
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o.safetensors").exists()


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs FIFOs")
def test_fifo_model_and_output_are_refused_before_any_work(model_files, tmp_path, capsys):
    import os

    _, scripted, _ = model_files
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)  # torch.jit.load on it would block forever
    rc = main(["generate", str(fifo), "--input-shape", "1,8,8", "--out",
               str(tmp_path / "o.safetensors"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "MODEL: " in err and "FIFO, not a regular file" in err
    rc = main(["generate", str(scripted), "--input-shape", "1,8,8", "--out", str(fifo),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--out: " in err and "FIFO, not a regular file" in err
