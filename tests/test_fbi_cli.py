"""``fastfp fbi``: build a database from a model list, detect / identify, distance figures."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from fastfp import fbi
from fastfp.cli.main import main


def _family(seed, n_variants, tmp_path, entries, scripted=False):
    torch.manual_seed(seed)
    base = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
    for j in range(n_variants):
        m = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
        m.load_state_dict(base.state_dict())
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.05 * j * torch.randn_like(p))
        name = f"fam{seed}_{j}"
        path = tmp_path / f"{name}.pt"
        if scripted and j == 0:
            torch.jit.script(m).save(str(path))
        else:
            torch.save(m, path)
        entries.append({"name": name, "family": f"fam{seed}", "path": path.name})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fbi_cli")
    entries = []
    for s in range(3):
        _family(s, 3, tmp, entries, scripted=(s == 0))
    spec = tmp / "models.json"
    spec.write_text(json.dumps({"models": entries}))
    x = torch.randn(120, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp / "inputs.pt")
    db = tmp / "db.safetensors"
    # the model files are pickles / TorchScript: code runs at load, so only with --trust-code
    assert main(["fbi", "build", "--spec", str(spec), "--inputs", str(tmp / "inputs.pt"), "--k",
                 "2", "--trust-code",
                 "--out", str(db), "--json", str(tmp / "build.json")]) == 0
    return tmp, db


def test_build_writes_a_loadable_database(setup):
    tmp, db = setup
    d = fbi.Database.load(db)
    assert d.num_models == 9 and d.k == 2 and d.family_names == ["fam0", "fam1", "fam2"]
    assert json.loads((tmp / "build.json").read_text())["models"] == d.names
    # a rerun resumes: nothing to do, same content
    before = d.topk.copy()
    assert main(["fbi", "build", "--spec", str(tmp / "models.json"), "--inputs",
                 str(tmp / "inputs.pt"),
                 "--k", "2", "--out", str(db), "--trust-code"]) == 0
    assert np.array_equal(fbi.Database.load(db).topk, before)


def test_detect_and_identify_from_model_and_outputs(setup, capsys):
    tmp, db = setup
    out = tmp / "det.json"
    detect = ["fbi", "detect", "--db", str(db), "--inputs", str(tmp / "inputs.pt"), "--L", "60",
              "--trials", "3", "--json", str(out), "--trust-code"]
    # open world: a member of fam1 is detected as fam1, and it is not in fam2
    assert main([*detect, "--family", "fam1", "--blackbox", str(tmp / "fam1_2.pt")]) == 0
    rep = json.loads(out.read_text())
    assert rep["mode"] == "open" and rep["L"] == 60 and rep["family"] == "fam1"
    assert rep["positive"] is True and 0 <= rep["distance"] <= rep["tau"]
    assert "open-world detection of 'fam1': positive" in capsys.readouterr().out
    # a decision is an exit code: 1 when the black box is not a member
    assert main([*detect, "--family", "fam2", "--blackbox", str(tmp / "fam1_2.pt")]) == 1
    rep = json.loads(out.read_text())
    assert rep["positive"] is False and rep["distance"] > rep["tau"]
    assert "open-world detection of 'fam2': negative" in capsys.readouterr().out
    d = fbi.Database.load(db)
    np.save(tmp / "bb.npy", d.outputs("fam2_1"))
    assert main(["fbi", "identify", "--db", str(db), "--blackbox", str(tmp / "bb.npy"), "--mode",
                 "walled",
                 "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["family"] == "fam2" and rep["status"] == "identified"
    assert main(["fbi", "detect", "--db", str(db), "--family", "fam0", "--blackbox", "db:fam0_1",
                 "--mode", "walled", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["decision"] == "positive"
    capsys.readouterr()
    assert main(["fbi", "identify", "--db", str(db), "--blackbox", "db:fam0_2", "--L", "60",
                 "--trials", "3", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["mode"] == "open" and rep["family"] == "fam0" and rep["status"] == "identified"
    assert min(rep["distances"], key=rep["distances"].get) == "fam0"
    assert "open-world identification: fam0 (identified" in capsys.readouterr().out


def test_distances_figures(setup):
    tmp, db = setup
    png, emb, js = tmp / "d.png", tmp / "e.png", tmp / "d.json"
    assert main(["fbi", "distances", "--db", str(db), "--png", str(png), "--embedding-png",
                 str(emb),
                 "--json", str(js)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG" and emb.read_bytes()[:4] == b"\x89PNG"
    rep = json.loads(js.read_text())
    dist = np.array(rep["distances"])
    assert dist.shape == (9, 9) and np.allclose(dist, dist.T) and np.all(np.diag(dist) == 0)
    sym = fbi.Database.load(db).symbols()
    np.testing.assert_allclose(dist, fbi.pairwise_rajski(sym), atol=1e-12)


def test_law_report(setup):
    tmp, db = setup
    js = tmp / "law.json"
    assert main(["fbi", "law", "--db", str(db), "--trials", "3", "--json", str(js)]) == 0
    assert set(json.loads(js.read_text())["fit"]) >= {"slope", "beta", "r2"}


def test_cli_errors(setup, capsys):
    tmp, db = setup
    assert main(["fbi", "detect", "--db", str(db), "--family", "nope", "--blackbox",
                 "db:fam0_1"]) == 2
    assert "unknown family" in capsys.readouterr().err
    assert main(["fbi", "identify", "--db", str(db), "--blackbox", "db:ghost"]) == 2
    assert "not in the database" in capsys.readouterr().err
    assert main(["fbi", "detect", "--db", str(tmp / "missing.safetensors"), "--family", "x",
                 "--blackbox", "db:a"]) == 2
    np.save(tmp / "short.npy", np.zeros((5, 2), dtype=np.int64))
    assert main(["fbi", "identify", "--db", str(db), "--blackbox", str(tmp / "short.npy")]) == 2
    assert "120 inputs" in capsys.readouterr().err
    assert main(["fbi", "detect", "--db", str(db), "--family", "fam0", "--blackbox", "db:fam0_1",
                 "--fpr", "1.5"]) == 2
    assert "fpr" in capsys.readouterr().err
    bad = tmp / "bad.json"
    bad.write_text(json.dumps({"models": [{"name": "a"}]}))
    assert main(["fbi", "build", "--spec", str(bad), "--inputs", str(tmp / "inputs.pt"), "--out",
                 str(tmp / "x.safetensors")]) == 2
    assert "family" in capsys.readouterr().err


def test_user_errors_are_one_line_before_any_work(setup, tmp_path, capsys):
    tmp, db = setup
    spec = tmp / "models.json"
    listed = tmp_path / "list.json"  # a JSON list instead of {"models": [...]}
    listed.write_text(json.dumps([{"name": "a", "family": "F", "zoo": "cnn-s0"}]))
    text = tmp_path / "inputs.txt"
    text.write_text("not a tensor\n")
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps({"models": [{"name": "a", "family": "F", "zoo": "cnn-s0"},
                                          {"name": "a", "family": "G", "zoo": "mlp-s0"}]}))
    out = tmp_path / "db.safetensors"
    cases = [
        (["--spec", str(listed), "--inputs", "zoo:20"], "expected an object"),
        (["--spec", str(dup), "--inputs", "zoo:20"], "duplicate name"),
        (["--spec", str(spec), "--inputs", str(text), "--trust-code"], "inputs.txt"),
        (["--spec", str(spec), "--inputs", "zoo:20", "--device", "cuda"], "--device"),
        (["--spec", str(spec), "--inputs", "zoo:20", "--device", "tpu:x"], "--device"),
    ]
    for extra, phrase in cases:
        if "cuda" in extra and torch.cuda.is_available():
            continue
        assert main(["fbi", "build", *extra, "--out", str(out)]) == 2, extra
        err = capsys.readouterr().err
        assert phrase in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not out.exists()  # nothing was queried or written
    # a missing output folder is found before the first model is queried
    assert main(["fbi", "build", "--spec", str(spec), "--inputs", "zoo:20", "--trust-code",
                 "--out", str(tmp_path / "no" / "db.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_subcommand_help_documents_formats(capsys):
    for cmd, phrase in (("build", '"models"'), ("detect", "/v2/models/"),
                        ("identify", "exit 0"), ("export-queries", "answer them")):
        with pytest.raises(SystemExit) as stop:
            main(["fbi", cmd, "--help"])
        assert stop.value.code == 0
        assert phrase in capsys.readouterr().out, cmd


def test_spec_inputs_and_labels_lie_beside_the_spec(setup, tmp_path, monkeypatch):
    tmp, _ = setup
    spec = json.loads((tmp / "models.json").read_text())
    spec["models"] = [dict(e, path=str(tmp / e["path"])) for e in spec["models"][:2]]
    folder = tmp_path / "job"
    folder.mkdir()
    torch.save(torch.load(tmp / "inputs.pt"), folder / "x.pt")
    np.save(folder / "y.npy", np.arange(120) % 10)
    (folder / "models.json").write_text(json.dumps({**spec, "inputs": "x.pt", "labels": "y.npy"}))
    monkeypatch.chdir(tmp_path)  # elsewhere: the spec's relative files must not be looked up here
    out = tmp_path / "db.safetensors"
    assert main(["fbi", "build", "--spec", str(folder / "models.json"), "--k", "2", "--out",
                 str(out), "--trust-code", "--allow-absolute-paths"]) == 0
    assert np.array_equal(fbi.Database.load(out).reference, np.arange(120) % 10)


def test_model_files_that_are_not_modules_are_user_errors(setup, tmp_path, capsys):
    tmp, _ = setup
    torch.save(nn.Linear(12, 10).state_dict(), tmp_path / "weights.pt")
    spec = tmp_path / "models.json"
    spec.write_text(json.dumps({"models": [{"name": "w", "family": "F", "path": "weights.pt"}]}))
    build = ["fbi", "build", "--spec", str(spec), "--inputs", str(tmp / "inputs.pt"),
             "--out", str(tmp_path / "db.safetensors")]
    assert main(build) == 2  # a torch.save'd file: refused before anything is unpickled
    err = capsys.readouterr().err
    assert "model 'w': " in err and "runs code from it: refused" in err and "Traceback" not in err
    assert main([*build, "--trust-code"]) == 2
    err = capsys.readouterr().err
    assert "model 'w': " in err and "not a torch.nn.Module" in err and "Traceback" not in err
    db = tmp / "db.safetensors"
    assert main(["fbi", "detect", "--db", str(db), "--family", "fam0", "--blackbox",
                 str(tmp_path / "missing.pt"), "--inputs", str(tmp / "inputs.pt")]) == 2
    assert "--blackbox: " in capsys.readouterr().err


def test_exported_queries_answered_by_hand(setup, tmp_path):
    tmp, db = setup
    common = ["--db", str(db), "--L", "40", "--trials", "3", "--seed", "4"]
    q = tmp_path / "q"
    assert main(["fbi", "export-queries", *common, "--out", str(q), "--format", "npy"]) == 0
    indices = json.loads((q / "queries.json").read_text())["indices"]
    d = fbi.Database.load(db)
    np.testing.assert_array_equal(np.load(q / "queries.npy"), d.inputs[indices].numpy())
    # the suspect's answers, one JSON row per exported image, decide as the simulation does
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(d.outputs("fam1_1")[indices].tolist()))
    rep = tmp_path / "rep.json"
    by_hand = main(["fbi", "identify", *common, "--blackbox", str(answers), "--queries",
                    str(q / "queries.json"), "--json", str(rep)])
    got = json.loads(rep.read_text())
    simulated = main(["fbi", "identify", *common, "--blackbox", "db:fam1_1", "--json", str(rep)])
    assert by_hand == simulated and got["distances"] == json.loads(rep.read_text())["distances"]
    assert got["queries"] == indices
    # other settings ask inputs that were not exported: one-line error
    assert main(["fbi", "identify", *common[:2], "--L", "50", "--blackbox", str(answers),
                 "--queries", str(q / "queries.json")]) == 2
