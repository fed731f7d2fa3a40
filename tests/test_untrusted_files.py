"""Files of the checked party never run code: every CLI path that takes a suspect or an answers
file is given archives whose loading would plant a marker file, and must refuse each one (exit 2,
one line) without a single ``torch.load`` / ``torch.jit.load`` / ``torch.export.load`` that could
run it. With ``--trust-code`` they load (and the marker appears)."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import HostilePickle, HostileScript, tiny_linear

from fastfp import Fingerprint, fbi
from fastfp.cli.main import main

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit deprecation notes

SHAPE = (3, 2, 2)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A database of our own models (stored inputs), a fingerprint, and the hostile files."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    tmp = tmp_path_factory.mktemp("untrusted")
    entries = []
    for fam in range(2):
        for j in range(2):
            m = tiny_linear(fam)
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(0.05 * j * torch.randn_like(p))
            name = f"f{fam}_{j}"
            torch.jit.script(m).save(str(tmp / f"{name}.ts"))  # ours: loaded with --trust-code
            entries.append({"name": name, "family": f"F{fam}", "path": f"{name}.ts"})
    (tmp / "models.json").write_text(json.dumps({"models": entries}))
    x = torch.rand(40, *SHAPE, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp / "inputs.pt")
    db = tmp / "db.safetensors"
    assert main(["fbi", "build", "--spec", str(tmp / "models.json"), "--inputs",
                 str(tmp / "inputs.pt"), "--k", "2", "--store-inputs", "--trust-code",
                 "--out", str(db)]) == 0
    model = tiny_linear()
    with torch.no_grad():
        y = model(x[:20]).argmax(1)
    fp = tmp / "fp.safetensors"
    Fingerprint(x[:20], y, {"method": "ltrc", "model": "tiny", "num_classes": 10}).save(fp)
    owner = tmp / "owner.ts"  # the owner's model (generate / evaluate): theirs, it may be code
    torch.jit.script(model).save(str(owner))
    suspect = tmp / "suspect.onnx"  # a suspect in a safe format, for verify --negative
    torch.onnx.export(model, (torch.zeros(2, *SHAPE),), str(suspect), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
                      dynamo=False)

    marker = tmp / "MARKER"
    hostile = tmp / "hostile"
    hostile.mkdir()
    files = {}
    # the marker pickle inside a torch zip, under the names a model or a tensor file would have
    for name in ("pickled.pt", "pickled.pth", "answers.pt", "inputs.pt"):
        torch.save(HostilePickle(str(marker)), hostile / name)
        files[name] = hostile / name
    # a real TorchScript archive under .pt / .pth / .jit
    for name in ("scripted.pt", "scripted.pth", "scripted.jit"):
        torch.jit.script(HostileScript(str(marker))).save(str(hostile / name))
        files[name] = hostile / name
    # a bare pickle, also renamed as an answers / ONNX / safetensors file
    raw = pickle.dumps(HostilePickle(str(marker)))
    for name in ("bare.pkl", "bare.npy", "bare.onnx", "bare.safetensors"):
        (hostile / name).write_bytes(raw)
        files[name] = hostile / name
    assert not marker.exists()
    return {"tmp": tmp, "db": db, "fp": fp, "owner": owner, "suspect": suspect,
            "marker": marker, "files": files, "entries": entries}


@pytest.fixture
def no_loader_runs(world, monkeypatch):
    """Records every torch loader call on a hostile file's bytes (by path or as a buffer)."""
    hostile = {f.read_bytes() for f in world["files"].values()}
    calls = []

    def watch(name, real):
        def loader(f, *args, **kw):
            data = f.getvalue() if isinstance(f, io.BytesIO) else None
            if data is None and isinstance(f, str | os.PathLike) and os.path.isfile(f):
                data = Path(f).read_bytes()
            if data in hostile:
                calls.append((name, kw.get("weights_only")))
            return real(f, *args, **kw)

        return loader

    monkeypatch.setattr(torch, "load", watch("torch.load", torch.load))
    monkeypatch.setattr(torch.jit, "load", watch("torch.jit.load", torch.jit.load))
    monkeypatch.setattr(torch.export, "load", watch("torch.export.load", torch.export.load))
    return calls


def _refused(argv, capsys, world, calls):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, err)
    lines = [line for line in err.splitlines() if "warning: --trust-code" not in line]  # ours
    assert len(lines) == 1 and "Traceback" not in err, (argv, err)
    assert not world["marker"].exists(), argv
    assert calls == [], (argv, calls)


def _suspect_commands(world, path):
    """Every command line that gives ``path`` as a suspect or as its answers."""
    tmp, db, fp, owner = world["tmp"], world["db"], world["fp"], world["owner"]
    cpu = ["--device", "cpu"]
    return [
        ["verify", "--null", "chance", path, fp, *cpu],
        ["verify", world["suspect"], fp, "--negative", path, *cpu],
        ["evaluate", owner, fp, "--others", path, *cpu],
        ["generate", owner, "--input-shape", "3,2,2", "--negative", path, "--steps", "2",
         "--num", "2", "--no-progress", "--out", tmp / "never.safetensors", *cpu],
        ["fbi", "detect", "--db", db, "--family", "F0", "--blackbox", path, "--L", "10",
         "--trials", "2"],
        ["fbi", "identify", "--db", db, "--blackbox", path, "--L", "10", "--trials", "2"],
        ["fbi", "identify", "--db", db, "--blackbox", path, "--mode", "walled"],
    ]


@pytest.mark.parametrize("name", ["pickled.pt", "pickled.pth", "answers.pt", "scripted.pt",
                                  "scripted.pth", "scripted.jit", "bare.pkl", "bare.npy",
                                  "bare.onnx", "bare.safetensors"])
def test_every_suspect_path_refuses_without_running_code(world, name, capsys, no_loader_runs):
    path = world["files"][name]
    for argv in _suspect_commands(world, path):
        _refused(argv, capsys, world, no_loader_runs)


@pytest.mark.parametrize("name", ["pickled.pt", "scripted.pt", "bare.npy"])
def test_state_dicts_inputs_labels_and_spec_entries_refuse_too(world, name, capsys,
                                                               no_loader_runs, tmp_path):
    path = world["files"][name]
    tmp, db, fp, owner = world["tmp"], world["db"], world["fp"], world["owner"]
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    (spec_dir / path.name).write_bytes(path.read_bytes())
    (spec_dir / "inputs.pt").write_bytes((tmp / "inputs.pt").read_bytes())

    def spec(models, **extra):  # one file per command line (they are all built first)
        f = spec_dir / f"models{len(list(spec_dir.glob('models*.json')))}.json"
        f.write_text(json.dumps({"models": models, "inputs": "inputs.pt", **extra}))
        return f

    out = tmp_path / "db.safetensors"
    ours = [dict(e, path=str(tmp / e["path"])) for e in world["entries"][:2]]
    arch = {"name": "a", "family": "A", "arch": "resnet18", "weights": path.name}
    argvs = [
        # a state dict for --arch that is not a plain one
        ["verify", "--null", "chance", path, fp, "--arch", "resnet18", "--device", "cpu"],
        ["fbi", "identify", "--db", db, "--blackbox", f"arch:resnet18:{path}", "--mode",
         "walled"],
        # model-list entries: a model file, the weights of an architecture
        ["fbi", "build", "--spec", spec([{"name": "e", "family": "E", "path": path.name}]),
         "--out", out],
        ["fbi", "build", "--spec", spec([arch]), "--out", out],
        # inputs and labels files (the spec's, and the flags')
        ["fbi", "build", "--spec", spec(ours, inputs=path.name), "--out", out, "--trust-code",
         "--allow-absolute-paths"],
        ["fbi", "build", "--spec", spec(ours), "--inputs", path, "--out", out,
         "--trust-code", "--allow-absolute-paths"],
        ["fbi", "build", "--spec", spec(ours), "--labels", path, "--out", out,
         "--trust-code", "--allow-absolute-paths"],
        ["fbi", "detect", "--db", db, "--family", "F0", "--blackbox", tmp / "f0_0.ts",
         "--trust-code", "--inputs", path],
        ["generate", owner, "--inputs", path, "--steps", "2", "--no-progress", "--out",
         tmp_path / "never.safetensors", "--device", "cpu"],
    ]
    pytest.importorskip("torchvision")
    for argv in argvs:
        _refused(argv, capsys, world, no_loader_runs)
    assert not out.exists()


def test_answers_of_exported_queries_refuse_a_hostile_file(world, capsys, no_loader_runs,
                                                          tmp_path):
    q = tmp_path / "q"
    common = ["--db", world["db"], "--L", "10", "--trials", "2"]
    assert main([str(a) for a in ["fbi", "export-queries", *common, "--out", q,
                                  "--format", "npy"]]) == 0
    capsys.readouterr()
    for name in ("pickled.pt", "scripted.pt", "bare.npy"):
        _refused(["fbi", "identify", *common, "--blackbox", world["files"][name], "--queries",
                  q / "queries.json"], capsys, world, no_loader_runs)


def test_released_predictions_never_unpickle(world, capsys, no_loader_runs, tmp_path):
    folder = tmp_path / "released"
    folder.mkdir()
    np.save(folder / "m0.npy", np.zeros((5, 3), dtype=np.int64))
    (folder / "m1.npy").write_bytes(world["files"]["bare.npy"].read_bytes())
    code = main(["fbi", "import-predictions", str(folder), "--out",
                 str(tmp_path / "o.safetensors")])
    err = capsys.readouterr().err
    assert code in (0, 2) and "m1.npy" in err and "Traceback" not in err  # skipped, or refused
    assert not world["marker"].exists() and no_loader_runs == []


def test_with_trust_code_they_load(world, capsys):
    marker, files, db = world["marker"], world["files"], world["db"]
    for name in ("pickled.pt", "scripted.jit"):
        out = world["tmp"] / "id.json"
        assert main(["fbi", "identify", "--db", str(db), "--blackbox", str(files[name]),
                     "--mode", "walled", "--trust-code", "--json", str(out)]) in (0, 1)
        assert "warning: --trust-code" in capsys.readouterr().err
        assert marker.exists()  # its code ran: what the flag allows
        marker.unlink()
        assert json.loads(out.read_text())["sent"]["images"] >= 1
    assert main(["verify", "--null", "chance",
                 str(files["scripted.pt"]), str(world["fp"]), "--trust-code",
                 "--device", "cpu"]) in (0, 1)
    assert marker.exists()
    marker.unlink()


def test_plain_tensor_files_still_read(world, capsys, no_loader_runs):
    """A torch.save of tensors (answers, inputs) is read, and only with weights_only=True."""
    d = fbi.Database.load(world["db"])
    answers = world["tmp"] / "outputs.pt"
    torch.save(torch.from_numpy(d.outputs("f1_0")), answers)
    assert main(["fbi", "identify", "--db", str(world["db"]), "--blackbox", str(answers),
                 "--mode", "walled", "--inputs", str(world["tmp"] / "inputs.pt")]) == 0
    assert "F1" in capsys.readouterr().out
    assert no_loader_runs == []
