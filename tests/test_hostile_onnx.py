"""Hostile ONNX suspects, crafted with ``onnx.helper``: external data that reaches for the
checker's files, a ``Loop`` that never ends, NaN / inf / 1-D outputs and runtime failures. Each
ends in one line and exit 2 on the command line (or a ValueError naming the file in Python),
within the stated time limit, and reads nothing outside the suspect's own folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from fastfp import Fingerprint, cexamples, fbi, suspects  # noqa: E402
from fastfp.cli.main import main  # noqa: E402

SHAPE = (1, 8, 8)
CLASSES = 10
W = np.random.default_rng(0).standard_normal((64, CLASSES)).astype(np.float32)
SECRET = np.random.default_rng(1).standard_normal((64, CLASSES)).astype(np.float32)
FLOAT = TensorProto.FLOAT


# --- crafted models ------------------------------------------------------------------------------

def _model(nodes, inits, out_shape=("N", CLASSES)):
    graph = helper.make_graph(
        nodes, "suspect", [helper.make_tensor_value_info("x", FLOAT, ["N", *SHAPE])],
        [helper.make_tensor_value_info("y", FLOAT, list(out_shape))], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save(model, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def _linear_nodes():
    return [helper.make_node("Flatten", ["x"], ["f"]),
            helper.make_node("MatMul", ["f", "w"], ["y"])]


def linear(w: np.ndarray = W):
    """y = flatten(x) @ w."""
    return _model(_linear_nodes(), [numpy_helper.from_array(w, "w")])


def external(location: str, length: int = W.nbytes):
    """The linear model with its weights in an external file ``location``."""
    w = numpy_helper.from_array(np.zeros_like(W), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    return _model(_linear_nodes(), [w])


def loop(trips: int = 2**40):
    """A Loop adding 1 to the first 10 pixels ``trips`` times."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["acc_in", "one"], ["acc_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", FLOAT, ["N", CLASSES])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", FLOAT, ["N", CLASSES])],
        [helper.make_tensor("one", FLOAT, [1], [1.0])])
    inits = [helper.make_tensor("trips", TensorProto.INT64, [], [trips]),
             helper.make_tensor("cond", TensorProto.BOOL, [], [True]),
             helper.make_tensor("s0", TensorProto.INT64, [1], [0]),
             helper.make_tensor("s1", TensorProto.INT64, [1], [CLASSES]),
             helper.make_tensor("axis", TensorProto.INT64, [1], [1])]
    nodes = [helper.make_node("Flatten", ["x"], ["f"]),
             helper.make_node("Slice", ["f", "s0", "s1", "axis"], ["start"]),
             helper.make_node("Loop", ["trips", "cond", "start"], ["y"], body=body)]
    return _model(nodes, inits)


def one_dim():
    """Outputs one number per image: (N,) instead of (N, classes)."""
    nodes = [helper.make_node("Flatten", ["x"], ["f"]),
             helper.make_node("ReduceSum", ["f", "axes"], ["y"], keepdims=0)]
    return _model(nodes, [helper.make_tensor("axes", TensorProto.INT64, [1], [1])], ("N",))


def failing():
    """Fails inside onnxruntime at run time (a Gather index out of range)."""
    nodes = [helper.make_node("Flatten", ["x"], ["f"]),
             helper.make_node("Gather", ["f", "idx"], ["y"], axis=1)]
    idx = helper.make_tensor("idx", TensorProto.INT64, [CLASSES], [1000] * CLASSES)
    return _model(nodes, [idx])


def _fingerprint(path: Path, n: int = 20) -> Path:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, *SHAPE, generator=g)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    Fingerprint(x, y, {"num_classes": CLASSES, "method": "vanilla", "model": "owner"}).save(path)
    return path


def _one_line(capsys, *needles: str) -> str:
    """The one error line on stderr (progress bars aside)."""
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines()
             if line.strip() and "\x1b[A" not in line and "it/s]" not in line
             and "model/s]" not in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _verify(model: Path, fp: Path, *extra: str) -> int:
    # a fixed threshold: these tests are about the suspect, not about the null rate
    return main(["verify", str(model), str(fp), "--device", "cpu", "--threshold", "0.5", *extra])


def _spec(folder: Path, models: dict[str, str], inputs: Path) -> Path:
    entries = [{"name": name, "family": name.rstrip("0123456789"), "path": path}
               for name, path in models.items()]
    spec = folder / "models.json"
    spec.write_text(json.dumps({"models": entries, "inputs": inputs.name}))  # beside the spec
    return spec


@pytest.fixture
def inputs(tmp_path) -> Path:
    path = tmp_path / "inputs.npy"
    np.save(path, np.random.default_rng(2).random((40, *SHAPE), dtype=np.float32))
    return path


# --- external data -------------------------------------------------------------------------------

def test_external_data_is_never_read_from_the_working_directory(tmp_path, monkeypatch, capsys):
    """A suspect naming ``secret.bin`` must not get the checker's ``./secret.bin`` as weights."""
    model = _save(external("secret.bin"), tmp_path / "suspect" / "model.onnx")
    cwd = tmp_path / "checker"
    cwd.mkdir()
    (cwd / "secret.bin").write_bytes(SECRET.tobytes())
    monkeypatch.chdir(cwd)
    with pytest.raises(ValueError, match="external data") as err:
        suspects.load_suspect(model)
    assert "secret.bin" in str(err.value) and str(model) in str(err.value)
    fp = _fingerprint(tmp_path / "fp.safetensors")
    assert _verify(model, fp) == 2
    _one_line(capsys, "external data", "secret.bin")


def _fifo_unblocker(path: Path, done: threading.Event) -> threading.Thread:
    """Opens the FIFO for writing after a while (unless ``done`` first), so that a reader
    blocked on it returns."""
    def run() -> None:
        if done.wait(5):
            return
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:  # nobody is reading it (it was refused): nothing to unblock
            pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("case", ["dotdot", "nested-dotdot", "absolute", "symlink-out", "fifo",
                                  "folder", "missing", "too-short"])
def test_external_data_outside_the_suspects_folder_is_refused(case, tmp_path, monkeypatch):
    folder = tmp_path / "suspect"
    folder.mkdir()
    outside = tmp_path / "x.bin"
    outside.write_bytes(SECRET.tobytes())
    (folder / "sub").mkdir()
    unblock, done = None, threading.Event()
    location, length = {"dotdot": "../x.bin", "nested-dotdot": "sub/../../x.bin",
                        "absolute": str(outside), "symlink-out": "link.bin", "fifo": "fifo.bin",
                        "folder": "sub", "missing": "none.bin",
                        "too-short": "short.bin"}[case], W.nbytes
    if case == "symlink-out":
        os.symlink(outside, folder / "link.bin")
    elif case == "fifo":
        os.mkfifo(folder / "fifo.bin")
        unblock = _fifo_unblocker(folder / "fifo.bin", done)
    elif case == "too-short":
        (folder / "short.bin").write_bytes(W.tobytes()[:100])
    model = _save(external(location, length), folder / "model.onnx")
    monkeypatch.chdir(folder)  # even where the cwd is the suspect's folder
    with pytest.raises(ValueError, match="external data"):
        suspects.OnnxClassifier(model)
    done.set()
    if unblock is not None:
        unblock.join(10)


@pytest.mark.parametrize("name", ["fp.safetensors", "queries.json", "inputs.npy", "q.png"])
def test_external_data_is_never_the_checkers_own_files(name, tmp_path, inputs):
    """Even in the suspect's folder, a fingerprint, exported queries or inputs are no weights: a
    suspect reading them could tell the fingerprint's queries and answer them wrongly."""
    folder = tmp_path  # the suspect next to the checker's files
    if name == "fp.safetensors":
        _fingerprint(folder / name, n=200)
    elif name == "queries.json":
        (folder / name).write_text(json.dumps({"indices": list(range(2000))}, indent=2))
    elif name == "q.png":
        from fastfp.io import png_bytes

        (folder / name).write_bytes(png_bytes(torch.rand(1, 1, 64, 64))[0])
    else:
        name = inputs.name
    model = _save(external(name, length=0), folder / "model.onnx")
    with pytest.raises(ValueError, match="not raw tensor data"):
        suspects.load_suspect(model)


def test_external_data_beside_the_model_loads_from_any_working_directory(tmp_path, monkeypatch,
                                                                        capsys):
    folder = tmp_path / "suspect"
    (folder / "weights").mkdir(parents=True)
    (folder / "weights" / "w.bin").write_bytes(W.tobytes())
    os.symlink("weights/w.bin", folder / "link.bin")  # a link that stays inside is fine
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "weights").mkdir()
    (elsewhere / "weights" / "w.bin").write_bytes(SECRET.tobytes())  # must not be the one read
    monkeypatch.chdir(elsewhere)
    x = torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(3))
    want = x.flatten(1) @ torch.from_numpy(W)
    for location in ("weights/w.bin", "./weights/w.bin", "link.bin"):
        model = _save(external(location), folder / "model.onnx")
        onnx_model = suspects.load_suspect(model)
        torch.testing.assert_close(onnx_model(x), want, atol=1e-4, rtol=1e-4)
    fp = _fingerprint(tmp_path / "fp.safetensors")
    assert _verify(model, fp) in (0, 1)


# --- a Loop of 2^40 iterations: the time limit -------------------------------------------------

def _child(code: str, limit: float = 180.0) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter, killed after ``limit`` seconds (bounded even when the
    time limit under test does not work)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=limit, cwd=os.getcwd())


def test_loop_forever_stops_at_the_timeout_in_python(tmp_path):
    model = _save(loop(), tmp_path / "loop.onnx")
    code = f"""
import sys, time, torch
from fastfp import suspects
m = suspects.load_suspect({str(model)!r}, timeout=1.5)
t = time.monotonic()
try:
    m(torch.zeros(2, *{SHAPE!r}))
except suspects.InferenceTimeout as exc:
    print(round(time.monotonic() - t, 2), isinstance(exc, ValueError), exc)
    sys.exit(0)
sys.exit(1)
"""
    done = _child(code)
    assert done.returncode == 0, done.stderr
    took, is_value_error, message = done.stdout.strip().split(" ", 2)
    assert 1.5 <= float(took) < 1.5 + 5
    assert is_value_error == "True"
    assert message == f"{model}: inference took longer than 1.5 s (--suspect-timeout)"
    assert done.stderr.strip() == ""  # onnxruntime's own log stays quiet


def test_loop_forever_ends_at_suspect_timeout_in_every_command(tmp_path, inputs):
    """verify, fbi build and fbi identify (an ONNX black box) on a Loop of 2^40 iterations:
    exit 2 within the timeout + a few seconds, one line on stderr. One fresh interpreter runs
    them (killed if the limit does not work), stderr read per command at the descriptor, where
    onnxruntime's own log would go."""
    model = _save(loop(), tmp_path / "loop.onnx")
    fp = _fingerprint(tmp_path / "fp.safetensors")
    _save(linear(), tmp_path / "good.onnx")
    spec = _spec(tmp_path, {"good0": "good.onnx", "loop1": "loop.onnx"}, inputs)
    x = torch.from_numpy(np.load(inputs))
    models = {f"{fam}{j}": suspects.OnnxClassifier(
        _save(linear(np.random.default_rng(10 * i + j).standard_normal((64, CLASSES))
                     .astype(np.float32)), tmp_path / f"{fam}{j}.onnx"))
        for i, fam in enumerate(("a", "b")) for j in range(2)}
    db = tmp_path / "db.safetensors"
    fbi.Database.build(models, x, k=2, families={n: n[0] for n in models}, path=db,
                       progress=False, store_inputs=True)
    commands = {
        "verify": ["verify", str(model), str(fp), "--device", "cpu", "--threshold", "0.5",
                   "--suspect-timeout", "1"],
        "build": ["fbi", "build", "--spec", str(spec), "--out", str(tmp_path / "new.safetensors"),
                  "--suspect-timeout", "1"],
        "identify": ["fbi", "identify", "--db", str(db), "--blackbox", str(model), "--L", "20",
                     "--trials", "3", "--suspect-timeout", "1", "--no-cache"],
    }
    code = f"""
import json, os, sys, tempfile, time
import torch, onnxruntime, fastfp.suspects
from fastfp.cli.main import main
report = {{}}
for name, argv in {commands!r}.items():
    with tempfile.TemporaryFile() as err:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(err.fileno(), 2)
        t = time.monotonic()
        try:
            rc = main(argv)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        took = time.monotonic() - t
        err.seek(0)
        report[name] = [rc, took, err.read().decode()]
print(json.dumps(report))
"""
    done = _child(code, limit=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    for name, (rc, took, err) in report.items():
        lines = [line for line in err.replace("\r", "\n").splitlines()
                 if line.startswith("fastfp") or "Traceback" in line or "onnxruntime" in line]
        assert rc == 2 and took < 1 + 10, (name, rc, took, err)
        assert lines == [f"fastfp {name if name == 'verify' else 'fbi'}: error: {model}: "
                         "inference took longer than 1 s (--suspect-timeout)"], (name, err)


def test_timeout_argument_is_checked(tmp_path, capsys):
    model = _save(linear(), tmp_path / "m.onnx")
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="timeout"):
            suspects.OnnxClassifier(model, timeout=bad)
    with pytest.raises(TypeError, match="timeout"):
        suspects.load_suspect(model, timeout="60")
    assert suspects.OnnxClassifier(model, timeout=None).timeout is None  # no limit, if asked
    assert suspects.OnnxClassifier(model).timeout == suspects.SUSPECT_TIMEOUT_S
    fp = _fingerprint(tmp_path / "fp.safetensors")
    for bad in ("-1", "nan", "inf", "soon"):
        with pytest.raises(SystemExit) as exit_:
            _verify(model, fp, "--suspect-timeout", bad)
        assert exit_.value.code == 2
        _one_line(capsys, "--suspect-timeout")


@pytest.mark.parametrize("command", [["verify"], ["evaluate"], ["fbi", "build"],
                                     ["fbi", "detect"], ["fbi", "identify"]])
def test_every_command_running_a_suspect_takes_suspect_timeout(command, capsys):
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--suspect-timeout SECONDS" in out and "default 60" in out
    assert suspects.SUSPECT_TIMEOUT_S == 60  # what the help says


# --- NaN / inf, 1-D outputs, runtime failures --------------------------------------------------

@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_outputs_are_refused_everywhere(value, tmp_path, inputs, capsys):
    model = _save(linear(np.full_like(W, value)), tmp_path / "bad.onnx")
    x = torch.rand(4, *SHAPE)
    with pytest.raises(ValueError, match="non-finite outputs") as err:
        suspects.load_suspect(model)(x)
    assert str(model) in str(err.value)

    def torch_model(batch: torch.Tensor) -> torch.Tensor:
        return torch.full((len(batch), CLASSES), float(value))

    with pytest.raises(ValueError, match="model 'bad': non-finite outputs"):
        fbi.query_topk(torch_model, x, 2, desc="bad")
    with pytest.raises(ValueError, match="non-finite outputs"):
        fbi.database.probe_classes(torch_model, x, None)
    with pytest.raises(ValueError, match="model 'bad': non-finite outputs"):
        fbi.Database.build({"bad": torch_model}, x, k=2, families={"bad": "B"}, progress=False)
    fp = _fingerprint(tmp_path / "fp.safetensors")
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, CLASSES))
    with torch.no_grad():
        net[1].bias.fill_(float(value))
    with pytest.raises(ValueError, match="non-finite outputs"):
        cexamples.verify(net, Fingerprint.load(fp))

    assert _verify(model, fp) == 2
    _one_line(capsys, "non-finite outputs", "bad.onnx")
    _save(linear(), tmp_path / "good.onnx")
    spec = _spec(tmp_path, {"good0": "good.onnx", "bad1": "bad.onnx"}, inputs)
    out = tmp_path / "db.safetensors"
    assert main(["fbi", "build", "--spec", str(spec), "--out", str(out)]) == 2
    _one_line(capsys, "non-finite outputs", "bad.onnx")
    assert not out.exists() or "bad1" not in fbi.Database.load(out).names


@pytest.mark.parametrize("make, needle", [(one_dim, "expected (batch, classes)"),
                                          (failing, "onnxruntime failed")])
def test_bad_outputs_and_runtime_failures_are_one_line(make, needle, tmp_path, inputs, capsys):
    model = _save(make(), tmp_path / "bad.onnx")
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")) as err:
        suspects.load_suspect(model)(torch.rand(3, *SHAPE))
    assert str(model) in str(err.value)
    fp = _fingerprint(tmp_path / "fp.safetensors")
    assert _verify(model, fp) == 2
    _one_line(capsys, needle, "bad.onnx")
    for first in (True, False):  # probed for its classes, or queried after a good model
        models = {"bad0": "bad.onnx"} if first else {"good0": "good.onnx", "bad1": "bad.onnx"}
        _save(linear(), tmp_path / "good.onnx")
        spec = _spec(tmp_path, models, inputs)
        out = tmp_path / f"db{first}.safetensors"
        assert main(["fbi", "build", "--spec", str(spec), "--out", str(out)]) == 2
        _one_line(capsys, needle, "bad.onnx")
