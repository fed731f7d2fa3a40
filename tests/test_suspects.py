"""Suspect models load only in formats that cannot run code (fastfp.suspects, cli/loader)."""

import json
import os
import pickle

import numpy as np
import pytest
import torch
from helpers import HostilePickle, HostileScript, tiny_linear

from fastfp import Fingerprint, cexamples, suspects, zoo
from fastfp.cli.main import main

SHAPE = (3, 2, 2)


@pytest.fixture
def hostile(tmp_path):
    """marker path and hostile files: a torch.save'd pickle, a bare pickle, TorchScript."""
    marker = tmp_path / "MARKER"
    files = {"torch.save": tmp_path / "suspect.pt", "pickle": tmp_path / "suspect.pkl",
             "torchscript": tmp_path / "scripted.pt"}
    torch.save(HostilePickle(str(marker)), files["torch.save"])
    files["pickle"].write_bytes(pickle.dumps(HostilePickle(str(marker))))
    torch.jit.script(HostileScript(str(marker))).save(str(files["torchscript"]))
    assert not marker.exists()
    return marker, files


def _fingerprint(path, model=None, n=30):
    """A fingerprint the tiny model matches on 20 of 30 examples."""
    model = model or tiny_linear()
    x = torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[: n // 3] = (y[: n // 3] + 1) % 10
    fp = Fingerprint(x, y, {"method": "ltrc", "model": "tiny", "num_classes": 10})
    fp.save(path)
    return fp


def _export_onnx(model, path, shape=SHAPE):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    torch.onnx.export(model, (torch.zeros(2, *shape),), str(path), input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
                      dynamo=False)
    return path


def _one_error_line(capsys, phrase):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert phrase in err, err
    return err


# --- the Python API -------------------------------------------------------------------------

def test_sniff_reads_the_content_not_the_name(hostile, tmp_path):
    marker, files = hostile
    for kind, path in files.items():
        assert suspects.sniff(path) == kind
        renamed = path.with_suffix(".onnx")  # a pickle named .onnx is still a pickle
        renamed.write_bytes(path.read_bytes())
        assert suspects.sniff(renamed) == kind
    assert not marker.exists()


def test_load_suspect_refuses_code_formats_and_nothing_runs(hostile):
    marker, files = hostile
    for path in [*files.values(), *(p.with_suffix(".safetensors") for p in files.values())]:
        if not path.exists():
            path.write_bytes(files["torch.save"].read_bytes())
        with pytest.raises(suspects.UnsafeFormatError, match="runs code from it"):
            suspects.load_suspect(path)
        with pytest.raises(ValueError, match="safe formats: ONNX"):
            suspects.load_suspect(path)
    assert not marker.exists()


def test_trust_code_loads_them_with_a_warning(hostile):
    marker, files = hostile
    x = torch.rand(4, *SHAPE)
    for path in files.values():
        with pytest.warns(suspects.TrustCodeWarning, match="runs code from the file"):
            model = suspects.load_suspect(path, trust_code=True)
        assert marker.exists()  # the code did run: that is what the flag allows
        marker.unlink()
        torch.testing.assert_close(model(x), tiny_linear()(x))


@pytest.mark.slow
def test_pt2_is_refused(tmp_path):
    path = tmp_path / "suspect.pt2"
    torch.export.save(torch.export.export(tiny_linear(), (torch.zeros(2, *SHAPE),)), str(path))
    assert suspects.sniff(path) == "pt2"
    with pytest.raises(suspects.UnsafeFormatError, match="is a pt2 file"):
        suspects.load_suspect(path)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(TypeError, match="trust_code: expected a bool"):
        suspects.load_suspect(tmp_path / "x.onnx", trust_code="yes")
    with pytest.raises(ValueError, match="num_classes: only with arch"):
        suspects.load_suspect(tmp_path / "x.onnx", num_classes=3)
    with pytest.raises(ValueError, match="path: a model file is needed"):
        suspects.load_suspect(None)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x01\x02 not a model at all")
    with pytest.raises(ValueError, match="cannot tell the format"):
        suspects.load_suspect(garbage)


def test_onnx_suspect_scores_like_the_pytorch_model(tmp_path):
    model = tiny_linear()
    path = _export_onnx(model, tmp_path / "suspect.onnx")
    fp = _fingerprint(tmp_path / "fp.safetensors", model)
    onnx_model = suspects.load_suspect(path)
    assert isinstance(onnx_model, suspects.OnnxClassifier)
    assert onnx_model.input_shape == SHAPE and onnx_model.num_classes == 10
    score = cexamples.verify(model, fp)
    assert score == pytest.approx(20 / 30)
    assert cexamples.verify(onnx_model, fp) == score
    with pytest.raises(ValueError, match="takes inputs of shape"):
        onnx_model(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="runs forward only"):
        onnx_model(torch.zeros(2, *SHAPE, requires_grad=True))


def test_onnx_with_a_fixed_batch_runs_any_batch(tmp_path):
    pytest.importorskip("onnxruntime")
    model = tiny_linear(3)
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(model, (torch.zeros(4, *SHAPE),), str(path), dynamo=False)
    onnx_model = suspects.OnnxClassifier(path, providers=["CPUExecutionProvider"])
    x = torch.rand(10, *SHAPE)
    torch.testing.assert_close(onnx_model(x), model(x).detach(), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="providers: .* not available"):
        suspects.OnnxClassifier(path, providers=["NoSuchExecutionProvider"])


@pytest.mark.slow
def test_arch_random_init_is_seeded_and_round_trips_through_safetensors(tmp_path):
    from safetensors.torch import save_file

    a = suspects.load_suspect(None, arch="resnet18", num_classes=10, seed=3)
    b = suspects.load_suspect("random", arch="resnet18", num_classes=10, seed=3)
    c = suspects.load_suspect(None, arch="resnet18", num_classes=10, seed=4)
    assert a.fc.out_features == 10
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv1.weight"], sc["conv1.weight"])
    path = tmp_path / "suspect.safetensors"
    save_file({k: v.contiguous() for k, v in sa.items()}, str(path))
    with pytest.raises(ValueError, match="give its architecture"):
        suspects.load_suspect(path)
    d = suspects.load_suspect(path, arch="resnet18", num_classes=10)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(a(x), d(x))
    cfg = suspects.arch_config("resnet18", a)
    assert cfg.input_shape == (3, 224, 224) and cfg.normalize == suspects.IMAGENET


def test_arch_config_of_a_timm_model():
    pytest.importorskip("timm")
    model = zoo.load_arch("vit_tiny_patch16_224", num_classes=10, source="timm")
    cfg = suspects.arch_config("vit_tiny_patch16_224", model)
    assert cfg.input_shape == (3, 224, 224)
    assert cfg.normalize == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # not ImageNet's: timm's own


# --- the command line -----------------------------------------------------------------------

def test_verify_refuses_hostile_suspects(hostile, tmp_path, capsys):
    marker, files = hostile
    fp = tmp_path / "fp.safetensors"
    _fingerprint(fp)
    for path in files.values():
        assert main(["verify", "--null", "chance", str(path), str(fp), "--device", "cpu"]) == 2
        _one_error_line(capsys, "safe formats: ONNX")
    assert not marker.exists()
    # a state dict for --arch that is really TorchScript is refused too
    assert main(["verify", "--null", "chance",
                 str(files["torchscript"]), str(fp), "--arch", "resnet18",
                 "--device", "cpu"]) == 2
    _one_error_line(capsys, "not a state dict")
    assert not marker.exists()


def test_verify_with_trust_code_warns_and_scores(hostile, tmp_path, capsys):
    marker, files = hostile
    fp = tmp_path / "fp.safetensors"
    _fingerprint(fp)
    out = tmp_path / "v.json"
    code = main(["verify", "--null", "chance",
                 str(files["torch.save"]), str(fp), "--trust-code", "--device", "cpu",
                 "--json", str(out)])
    assert code in (0, 1)
    assert "warning: --trust-code" in capsys.readouterr().err
    assert marker.exists()
    assert json.loads(out.read_text())["match_rate"] == pytest.approx(20 / 30)


def test_verify_onnx_gives_the_pytorch_score(tmp_path, capsys):
    model = tiny_linear()
    onnx_path = _export_onnx(model, tmp_path / "suspect.onnx")
    script = tmp_path / "suspect.ts"
    torch.jit.script(model).save(str(script))
    fp = tmp_path / "fp.safetensors"
    _fingerprint(fp, model)
    reports = []
    for args in ([str(onnx_path)], [str(script), "--trust-code"]):
        out = tmp_path / "v.json"
        assert main(["verify", "--null", "chance",
                     *args, str(fp), "--device", "cpu", "--json", str(out)]) in (0, 1)
        reports.append(json.loads(out.read_text()))
    assert reports[0]["match_rate"] == reports[1]["match_rate"] == pytest.approx(20 / 30)
    assert reports[0]["is_copy"] == reports[1]["is_copy"]


@pytest.mark.slow
def test_verify_arch_safetensors_is_the_same_network_as_its_seeded_random_init(tmp_path):
    from safetensors.torch import save_file

    state = zoo.load_arch("mobilenet_v3_small", num_classes=10, seed=5).state_dict()
    weights = tmp_path / "suspect.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    model = zoo.load_arch("mobilenet_v3_small", num_classes=10, seed=5)
    x = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    fp = tmp_path / "fp.safetensors"
    Fingerprint(x, y, {"num_classes": 10}).save(fp)
    rates = []
    for model_arg in ("random", str(weights)):
        out = tmp_path / "v.json"
        assert main(["verify", "--null", "chance",
                     model_arg, str(fp), "--arch", "mobilenet_v3_small",
                     "--num-classes", "10", "--seed", "5", "--device", "cpu",
                     "--json", str(out)]) in (0, 1)
        rates.append(json.loads(out.read_text())["match_rate"])
    assert rates == [1.0, 1.0]
    out = tmp_path / "v.json"
    assert main(["verify", "--null", "chance", "random", str(fp), "--arch", "mobilenet_v3_small",
                 "--num-classes", "10", "--seed", "6", "--device", "cpu",
                 "--json", str(out)]) in (0, 1)
    assert json.loads(out.read_text())["match_rate"] < 1.0  # another seed: another network


# --- FBI: --blackbox and model-list entries -------------------------------------------------

@pytest.fixture
def fbi_setup(tmp_path):
    """A database of three ONNX families (spec 'path' entries: safe, no flag needed)."""
    entries = []
    for fam in range(3):
        base = tiny_linear(fam)
        for j in range(2):
            m = tiny_linear(fam)
            with torch.no_grad():
                for p, q in zip(m.parameters(), base.parameters(), strict=True):
                    p.copy_(q + 0.05 * j * torch.randn_like(q))
            name = f"fam{fam}_{j}"
            _export_onnx(m, tmp_path / f"{name}.onnx")
            torch.save(m, tmp_path / f"{name}.pt")
            entries.append({"name": name, "family": f"fam{fam}", "path": f"{name}.onnx"})
    spec = tmp_path / "models.json"
    spec.write_text(json.dumps({"models": entries, "inputs": "inputs.pt"}))
    torch.save(torch.rand(80, *SHAPE, generator=torch.Generator().manual_seed(0)),
               tmp_path / "inputs.pt")
    db = tmp_path / "db.safetensors"
    assert main(["fbi", "build", "--spec", str(spec), "--k", "2", "--out", str(db)]) == 0
    return tmp_path, db


def test_fbi_blackbox_refuses_hostile_files(fbi_setup, hostile, capsys):
    tmp, db = fbi_setup
    marker, files = hostile
    for cmd in (["identify"], ["detect", "--family", "fam1"]):
        for path in files.values():
            assert main(["fbi", *cmd, "--db", str(db), "--inputs", str(tmp / "inputs.pt"),
                         "--blackbox", str(path), "--L", "40", "--trials", "3"]) == 2
            _one_error_line(capsys, "safe formats: ONNX")
    assert not marker.exists()
    out = tmp / "id.json"
    assert main(["fbi", "identify", "--db", str(db), "--inputs", str(tmp / "inputs.pt"),
                 "--blackbox", str(files["torch.save"]), "--trust-code", "--mode", "walled",
                 "--json", str(out)]) == 0
    assert "warning: --trust-code" in capsys.readouterr().err and marker.exists()


def test_fbi_onnx_blackbox_answers_like_its_outputs(fbi_setup, capsys):
    from fastfp import fbi

    tmp, db = fbi_setup
    d = fbi.Database.load(db)
    np.save(tmp / "bb.npy", d.outputs("fam2_1"))
    reports = []
    for bb in (str(tmp / "fam2_1.onnx"), str(tmp / "bb.npy")):
        out = tmp / "id.json"
        assert main(["fbi", "identify", "--db", str(db), "--inputs", str(tmp / "inputs.pt"),
                     "--blackbox", bb, "--mode", "walled", "--json", str(out)]) == 0
        reports.append(json.loads(out.read_text()))
    sent = [r.pop("sent") for r in reports]
    assert reports[0] == reports[1] and reports[0]["family"] == "fam2"
    # the ONNX model was asked only the walled garden's queries; the answers file nothing
    assert sent[0]["images"] == reports[0]["L"] and sent[1]["images"] == 0


def test_fbi_spec_path_entries_are_safe_and_confined(fbi_setup, hostile, capsys):
    tmp, _ = fbi_setup
    marker, files = hostile
    inside = tmp / "specs"
    inside.mkdir()
    (inside / "inputs.pt").write_bytes((tmp / "inputs.pt").read_bytes())
    (inside / "a.onnx").write_bytes((tmp / "fam0_0.onnx").read_bytes())
    (inside / "evil.pt").write_bytes(files["torch.save"].read_bytes())

    def build(models, *extra):
        spec = inside / "models.json"
        spec.write_text(json.dumps({"models": models, "inputs": "inputs.pt"}))
        out = inside / "db.safetensors"
        out.unlink(missing_ok=True)
        return main(["fbi", "build", "--spec", str(spec), "--out", str(out), *extra])

    good = {"name": "a", "family": "A", "path": "a.onnx"}
    assert build([good, {"name": "e", "family": "E", "path": "evil.pt"}]) == 2
    _one_error_line(capsys, "safe formats: ONNX")
    assert not marker.exists()
    outside = [good, {"name": "b", "family": "B", "path": "../fam1_0.onnx"}]
    assert build(outside) == 2
    _one_error_line(capsys, "outside the model list's folder")
    assert build([good, {"name": "b", "family": "B", "path": str(tmp / "fam1_0.onnx")}]) == 2
    _one_error_line(capsys, "--allow-absolute-paths")
    os.symlink(tmp / "fam1_0.onnx", inside / "link.onnx")
    assert build([good, {"name": "b", "family": "B", "path": "link.onnx"}]) == 2
    _one_error_line(capsys, "outside the model list's folder")
    assert build(outside, "--allow-absolute-paths") == 0
    assert build([good, {"name": "e", "family": "E", "path": "evil.pt"}], "--trust-code") == 0
    assert "warning: --trust-code" in capsys.readouterr().err and marker.exists()


@pytest.mark.slow
def test_fbi_spec_arch_entries_take_num_classes_and_seed(tmp_path):
    from safetensors.torch import save_file

    from fastfp import fbi

    state = zoo.load_arch("resnet18", num_classes=10, seed=1).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "r.safetensors"))
    torch.save(torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
               tmp_path / "inputs.pt")
    models = [{"name": "w", "family": "R", "arch": "resnet18", "weights": "r.safetensors",
               "num_classes": 10},
              {"name": "r", "family": "R", "arch": "resnet18", "num_classes": 10, "seed": 1},
              {"name": "o", "family": "O", "arch": "resnet18", "num_classes": 10, "seed": 2}]
    spec = tmp_path / "models.json"
    spec.write_text(json.dumps({"models": models, "inputs": "inputs.pt"}))
    out = tmp_path / "db.safetensors"
    assert main(["fbi", "build", "--spec", str(spec), "--k", "3", "--out", str(out)]) == 0
    d = fbi.Database.load(out)
    assert d.num_classes == 10
    assert np.array_equal(d.outputs("w"), d.outputs("r"))
    assert not np.array_equal(d.outputs("w"), d.outputs("o"))
