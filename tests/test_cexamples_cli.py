"""``fastfp generate`` / ``verify`` / ``evaluate`` end to end, and their user errors (exit 2, one
line, no traceback)."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import tiny_cnn

from fastfp import Fingerprint, cexamples, metrics
from fastfp.cli.main import main

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit deprecation notes

REPO = Path(__file__).resolve().parents[1]
GEN = ["--input-shape", "1,8,8", "--q", "2", "--k", "1", "--no-progress", "--device", "cpu"]


@pytest.fixture
def model_files(tmp_path):
    model = tiny_cnn(num_classes=5)
    scripted = tmp_path / "tiny.pt"
    torch.jit.script(model).save(str(scripted))
    pickled = tmp_path / "tiny_module.pth"
    torch.save(model, str(pickled))
    return model, scripted, pickled


def scripted_file(tmp_path, name, **kw):
    path = tmp_path / name
    torch.jit.script(tiny_cnn(**kw)).save(str(path))
    return path


@pytest.mark.parametrize("kind", ["safetensors", "png"])
def test_generate_from_start_images(kind, model_files, tmp_path, capsys):
    from PIL import Image
    from safetensors.torch import save_file

    model, scripted, _ = model_files
    x0 = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    if kind == "safetensors":
        src = tmp_path / "x0.safetensors"  # two tensors: the one named "x" is taken
        save_file({"x": x0.float() / 255, "labels": torch.arange(3)}, str(src))
    else:
        src = tmp_path / "pngs"
        src.mkdir()
        for i, img in enumerate(x0):
            Image.fromarray(img[0].numpy(), mode="L").save(src / f"{i}.png")
    out = tmp_path / "fp.safetensors"
    rc = main(["generate", str(scripted), *GEN, "--steps", "3", "--method", "ltrc",
               "--inputs", str(src), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    fp = Fingerprint.load(out)
    want = cexamples.generate(model, 3, (1, 8, 8), 5, method="ltrc", steps=3, q=2, k=1,
                              x0=x0.float() / 255, labels=fp.labels, progress=False)
    torch.testing.assert_close(fp.inputs, want.inputs, atol=1e-6, rtol=0)  # from those images


@pytest.mark.parametrize("which", ["scripted", "pickled"])
def test_generate_then_verify(which, model_files, tmp_path, capsys):
    model, scripted, pickled = model_files
    path = scripted if which == "scripted" else pickled
    out, report = tmp_path / "fp.safetensors", tmp_path / "gen.json"
    rc = main(["generate", str(path), *GEN, "--num", "4", "--steps", "20", "--method", "ltrc",
               "--seed", "7", "--out", str(out), "--json", str(report)])
    assert rc == 0
    fp = Fingerprint.load(out)
    assert fp.inputs.shape == (4, 1, 8, 8) and fp.meta["seed"] == 7 and fp.meta["k"] == 1
    rep = json.loads(report.read_text())
    assert rep["num"] == 4 and 0.0 <= rep["accuracy"] <= 1.0 and rep["method"] == "ltrc"
    assert rep["accuracy"] == cexamples.verify(model, fp)
    assert not (tmp_path / "fp.safetensors.parts").exists()  # checkpoints removed after merge
    # Same seed from Python gives the same fingerprint.
    same = cexamples.generate(model, 4, (1, 8, 8), 5, method="ltrc", steps=20, q=2, k=1, seed=7,
                              progress=False)
    torch.testing.assert_close(same.inputs, fp.inputs, atol=1e-6, rtol=0)

    vreport = tmp_path / "ver.json"
    rc = main(["verify", str(path), str(out), "--trust-code", "--null", "chance", "--json",
               str(vreport)])
    v = json.loads(vreport.read_text())
    assert v["match_rate"] == rep["accuracy"] and rc == (0 if v["is_copy"] else 1)
    assert set(v) >= {"match_rate", "null_rate", "threshold", "p_value", "is_copy"}
    out_text = capsys.readouterr().out
    assert "match rate" in out_text and "p-value" in out_text


def test_zoo_names_are_accepted(monkeypatch, tmp_path):
    from fastfp import zoo

    monkeypatch.setattr(zoo, "load", lambda name, **kw: tiny_cnn(num_classes=10))
    monkeypatch.setattr(zoo, "INPUT_SHAPE", (1, 8, 8))
    out = tmp_path / "z.safetensors"
    assert main(["generate", "cnn-s0", "--num", "2", "--steps", "3", "--method", "vanilla",
                 "--out", str(out), "--no-progress"]) == 0
    assert Fingerprint.load(out).meta["model"] == "cnn-s0"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A 12-example fingerprint that a trained digits CNN fits (vanilla, 50 steps), with the CNN
    as a TorchScript and a torch.save'd file: (scripted, pickled, fingerprint)."""
    from helpers import digits_cnn

    model, _ = digits_cnn()
    folder = tmp_path_factory.mktemp("fitted")
    fp = cexamples.generate(model, 12, (1, 32, 32), 10, method="vanilla", steps=50,
                            progress=False)
    assert cexamples.verify(model, fp) == 1.0
    scripted, pickled, out = folder / "owner.pt", folder / "owner.pth", folder / "fp.safetensors"
    torch.jit.script(model).save(str(scripted))
    torch.save(model, str(pickled))
    fp.save(out)
    return scripted, pickled, out


def test_verify_exits_0_for_a_copy_and_1_for_another_model(fitted, tmp_path, capsys):
    scripted, _, out = fitted
    report = tmp_path / "v.json"
    assert main(["verify", str(scripted), str(out), "--trust-code", "--null", "chance",
                 "--json", str(report)]) == 0
    text = capsys.readouterr().out
    assert text.strip().endswith("\nCOPY") and "chance level 1/10" in text
    assert "the weakest null" in text
    v = json.loads(report.read_text())
    assert v["match_rate"] == 1.0 and v["null_rate"] == 0.1 and v["is_copy"] is True
    assert v["null"] == "chance" and v["null_models"] == 0
    assert v["p_value"] == pytest.approx(0.1 ** 12)

    other = scripted_file(tmp_path, "other.pt", num_classes=10, seed=3)
    negative = scripted_file(tmp_path, "neg.pt", num_classes=10, seed=4)
    rc = main(["verify", str(other), str(out), "--trust-code", "--negative", str(negative),
               "--json", str(report)])
    text = capsys.readouterr().out
    v = json.loads(report.read_text())
    assert rc == 1 and text.strip().endswith("NOT A COPY") and v["is_copy"] is False
    assert "1 negative model" in text and v["negatives"] == [str(negative)]
    assert v["null"] == "negatives" and v["null_models"] == 1
    expected = cexamples.verdict(torch.jit.load(str(other)), Fingerprint.load(out),
                                 negatives=[torch.jit.load(str(negative))])
    assert v["null_rate"] == expected.null_rate and v["p_value"] == expected.p_value


def test_verify_threshold_and_unreachable_threshold(fitted, tmp_path, capsys):
    scripted, _, out = fitted
    report = tmp_path / "v.json"
    assert main(["verify", str(scripted), str(out), "--trust-code", "--threshold", "0.9",
                 "--json", str(report)]) == 0
    assert json.loads(report.read_text())["threshold"] == 0.9
    # One example against a null of 1/10: no count reaches p < 0.01, so no threshold exists.
    fp = Fingerprint.load(out)
    one = tmp_path / "one.safetensors"
    Fingerprint(fp.inputs[:1], fp.labels[:1], fp.meta).save(one)
    rc = main(["verify", str(scripted), str(one), "--trust-code", "--null", "chance", "--json",
               str(report)])
    v = json.loads(report.read_text())
    assert rc == 1 and v["threshold"] is None and v["is_copy"] is False
    assert "unreachable" in capsys.readouterr().out


def test_generate_normalize_is_recorded_and_applied(model_files, tmp_path):
    model, scripted, _ = model_files
    out = tmp_path / "n.safetensors"
    assert main(["generate", str(scripted), *GEN, "--num", "3", "--steps", "10",
                 "--normalize", "0.5/0.25", "--out", str(out)]) == 0
    fp = Fingerprint.load(out)
    assert fp.meta["normalize"] == [[0.5], [0.25]]
    same = cexamples.generate(model, 3, (1, 8, 8), 5, steps=10, q=2, k=1, progress=False,
                              normalize=([0.5], [0.25]))
    torch.testing.assert_close(same.inputs, fp.inputs, atol=1e-6, rtol=0)


def test_generate_png_is_exactly_the_8bit_example(model_files, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    _, scripted, _ = model_files
    out, png = tmp_path / "p.safetensors", tmp_path / "png"
    assert main(["generate", str(scripted), *GEN, "--num", "3", "--steps", "10", "--png",
                 str(png), "--out", str(out)]) == 0
    fp = Fingerprint.load(out)
    assert fp.meta["quantize"] == 8
    files = sorted(png.glob("*.png"))
    assert [f.name for f in files] == [f"{i:05d}-label{y}.png"
                                       for i, y in enumerate(fp.labels.tolist())]
    for f, x in zip(files, fp.inputs, strict=True):
        pixels = torch.from_numpy(np.asarray(Image.open(f), dtype=np.float32) / 255)
        assert torch.equal(pixels, x[0])
    assert "3 PNG" in capsys.readouterr().out


def test_generate_prints_an_estimate_first(model_files, tmp_path, capsys):
    _, scripted, _ = model_files
    assert main(["generate", str(scripted), *GEN, "--num", "3", "--steps", "10", "--out",
                 str(tmp_path / "e.safetensors"), "--no-checkpoint"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("fastfp generate: ~") and "min for 3 examples" in err


@pytest.mark.slow
def test_killed_generate_resumes_to_the_same_file(model_files, tmp_path):
    _, scripted, _ = model_files
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def command(out):
        return [sys.executable, "-m", "fastfp", "generate", str(scripted), *GEN, "--num", "6",
                "--batch-size", "2", "--steps", "60", "--eta", "0", "--out", str(out)]

    whole = tmp_path / "whole.safetensors"
    subprocess.run(command(whole), env=env, check=True, capture_output=True, timeout=600)
    out = tmp_path / "killed.safetensors"
    parts = tmp_path / "killed.safetensors.parts"
    proc = subprocess.Popen(command(out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(parts.glob("shard-*.safetensors")) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the run finished before it could be killed"
    done = len(list(parts.glob("shard-*.safetensors")))
    assert 1 <= done < 3
    subprocess.run(command(out), env=env, check=True, capture_output=True, timeout=600)
    assert out.read_bytes() == whole.read_bytes() and not parts.exists()


def test_evaluate_scores_match_the_metrics(fitted, tmp_path, capsys):
    _, pickled, out = fitted  # pruning needs the module's layers: not a TorchScript file
    other = scripted_file(tmp_path, "other.pt", num_classes=10, seed=3)
    report = tmp_path / "e.json"
    assert main(["evaluate", str(pickled), str(out), "--pruned-rates", "0.3", "0.9",
                 "--others", str(other), "--trust-code", "--json", str(report)]) == 0
    e = json.loads(report.read_text())
    fp = Fingerprint.load(out)
    assert e["accuracy"] == 1.0 and list(e["robustness_per_rate"]) == ["0.3", "0.9"]
    copies = metrics.pruned_copies(torch.load(str(pickled), weights_only=False), [0.3, 0.9])
    assert e["robustness"] == pytest.approx(metrics.robustness(fp, copies=copies))
    t = metrics.transferability(fp, [torch.jit.load(str(other))])
    assert e["transferability"] == pytest.approx(t)
    assert e["uniqueness"] == pytest.approx(e["robustness"] - t)
    assert "uniqueness" in capsys.readouterr().out


def one_error_line(err):
    """One error line, and every line of stderr is one of fastfp's own (no traceback)."""
    lines = err.strip().splitlines()
    return sum(": error: " in line for line in lines) == 1 and \
        all(line.startswith("fastfp ") or line.startswith("fastfp:") for line in lines)


def malformed_header(path):
    path.write_bytes((10 ** 9).to_bytes(8, "little") + b'{"not": "json')


@pytest.mark.parametrize("argv, message", [
    (["generate", "{scripted}", "--num", "2", "--out", "{out}"], "--input-shape"),
    (["generate", "{scripted}", "--input-shape", "1,8", "--out", "{out}"], "--input-shape"),
    (["generate", "{scripted}", "--input-shape", "1,8,8", "--q", "0", "--out", "{out}"],
     "q: expected an int"),
    (["generate", "{scripted}", "--input-shape", "1,8,8", "--num-classes", "3", "--out", "{out}"],
     "num_classes"),
    (["generate", "no-such-model", "--out", "{out}"], "MODEL"),
    (["generate", "{junk}", "--input-shape", "1,8,8", "--out", "{out}"], "MODEL"),
    (["generate", "{scripted}", "--input-shape", "1,8,8", "--out", ""], "--out: "),
    (["generate", "{scripted}", "--input-shape", "1,8,8", "--out", "/dev/full"], "--out: "),
    (["generate", "{scripted}", "--input-shape", "1,8,8", "--out", "{out}", "--json",
      "/dev/full"], "--json: "),
    (["generate", "{scripted}", "--inputs", "{text}", "--out", "{out}"], "--inputs: "),
    (["generate", "{scripted}", "--inputs", "{junk}", "--out", "{out}"], "--inputs: "),
    (["generate", "{scripted}", "--input-shape", "1,8,8", "--normalize", "0.5", "--out",
      "{out}"], "--normalize: expected imagenet"),
    (["generate", "{scripted}", "--input-shape", "1,8,8", "--normalize", "0.1,0.2/0.3,0.4",
      "--out", "{out}"], "normalize: mean has 2 values"),
    (["generate", "{scripted}", "--input-shape", "1,8,8", "--png", "{pngdir}", "--quantize",
      "16", "--out", "{out}"], "--png: "),
    (["generate", "{scripted}", "--input-shape", "1,8,8", "--method", "fgsm", "--out", "{out}"],
     "method"),
    (["verify", "{scripted}", "{junk}", "--trust-code"], "not a fastfp fingerprint"),
    (["verify", "{scripted}", "{header}", "--trust-code"], "{header}"),
    (["verify", "{scripted}", "{missing}", "--trust-code"], "does not exist"),
    (["verify", "{scripted}", "{fp}", "--trust-code", "--alpha", "1.5"], "--alpha: "),
    (["verify", "{scripted}", "{fp}", "--trust-code", "--threshold", "2"], "--threshold: "),
    (["verify", "{scripted}", "{fp}", "--trust-code", "--negative", "{three}"], "--negative "),
    (["evaluate", "{scripted}", "{fp}", "--pruned-rates", "1.5"], "rates"),
    (["evaluate", "{scripted}", "{header}"], "{header}"),
    (["generate", "{scripted}", "--input-shape", "1,8,8", "--out", "{nodir}"],
     "--out: folder"),
    (["generate", "{scripted}", "--input-shape", "1,8,8", "--device", "cuda:x", "--out", "{out}"],
     "--device: "),
    (["generate", "{folder}", "--input-shape", "1,8,8", "--out", "{out}"], "is a folder"),
    (["verify", "{scripted}", "{folder}", "--trust-code"], "is a folder"),
])
def test_user_errors_exit_2_in_one_line(argv, message, model_files, tmp_path, capsys):
    model, scripted, _ = model_files
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00not a model at all")
    text = tmp_path / "inputs.txt"
    text.write_text("0.1 0.2 0.3\n")
    header = tmp_path / "header.safetensors"
    malformed_header(header)
    fp = tmp_path / "fp.safetensors"
    cexamples.generate(model, 2, (1, 8, 8), 5, steps=2, method="vanilla",
                       progress=False).save(fp)
    (tmp_path / "folder").mkdir()
    names = dict(scripted=scripted, out=tmp_path / "o.safetensors", junk=junk, text=text,
                 header=header, fp=fp, three=scripted_file(tmp_path, "three.pt", num_classes=3),
                 missing=tmp_path / "missing.safetensors", folder=tmp_path / "folder",
                 nodir=tmp_path / "nodir" / "o.safetensors", pngdir=tmp_path / "png")
    argv = [a.format(**names) for a in argv]
    rc = main(argv + (["--no-progress"] if argv[0] == "generate" else []))
    err = capsys.readouterr().err
    assert rc == 2 and message.format(**names) in err and "Traceback" not in err
    assert one_error_line(err), err
    assert not (tmp_path / "o.safetensors").exists() and not (tmp_path / "png").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_one_line(model_files, tmp_path, capsys):
    _, scripted, _ = model_files
    rc = main(["generate", str(scripted), "--input-shape", "1,8,8", "--device", "cuda",
               "--out", str(tmp_path / "o.safetensors"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--device" in err and one_error_line(err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused_before_any_work(model_files, tmp_path, capsys):
    _, scripted, _ = model_files
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    rc = main(["generate", str(scripted), "--input-shape", "1,8,8", "--out",
               str(folder / "o.safetensors"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--out: folder" in err and "not writable" in err


def test_full_disk_while_saving_is_one_line(model_files, tmp_path, capsys, monkeypatch):
    _, scripted, _ = model_files
    out = tmp_path / "o.safetensors"

    def full(self, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(Fingerprint, "save", full)
    rc = main(["generate", str(scripted), *GEN, "--num", "2", "--steps", "3", "--out",
               str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err and str(out) in err
    assert one_error_line(err)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_model_and_output_are_refused_before_any_work(model_files, tmp_path, capsys):
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


# ------------------------------------------------- nulls, exported answers, the lock of generate

def test_verify_without_a_measured_null_is_one_line_before_any_work(fitted, tmp_path, capsys,
                                                                     monkeypatch):
    scripted, _, out = fitted
    loads = []
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: loads.append(a) or 1 / 0)
    report = tmp_path / "v.json"
    rc = main(["verify", str(scripted), str(out), "--trust-code", "--json", str(report)])
    err = capsys.readouterr().err
    assert rc == 2 and one_error_line(err) and "no null rate" in err, err
    assert "--negative" in err and "--null chance" in err and "--threshold" in err
    assert not loads and not report.exists()  # the suspect was never loaded


def test_verify_threshold_states_its_null(fitted, tmp_path, capsys):
    scripted, _, out = fitted
    report = tmp_path / "v.json"
    assert main(["verify", str(scripted), str(out), "--trust-code", "--threshold", "0.5",
                 "--json", str(report)]) == 0
    v = json.loads(report.read_text())
    assert v["null"] == "threshold" and v["null_models"] == 0
    assert "the weakest null" in capsys.readouterr().out


@pytest.fixture
def quantized(tmp_path):
    """An 8-bit fingerprint of the digits CNN with a null recorded on two unrelated models, and
    the CNN as a TorchScript file: (model, scripted, fp path)."""
    from helpers import digits_cnn

    model, _ = digits_cnn()
    fp = cexamples.generate(model, 12, (1, 32, 32), 10, method="vanilla", steps=50,
                            quantize=8, negatives=[tiny_cnn(num_classes=10, seed=s)
                                                   for s in (1, 2)], progress=False)
    scripted, path = tmp_path / "owner.pt", tmp_path / "fp.safetensors"
    torch.jit.script(model).save(str(scripted))
    fp.save(path)
    return model, scripted, path


def answer_exported(model, folder, answers):
    """The remote party: the model's label of each exported PNG, one CSV row each, in order."""
    import numpy as np
    from PIL import Image

    q = json.loads((folder / "queries.json").read_text())
    x = torch.from_numpy(np.stack([np.asarray(Image.open(folder / f), dtype=np.float32) / 255
                                   for f in q["files"]]))[:, None]
    with torch.no_grad():
        labels = model(x).argmax(1).tolist()
    answers.write_text("label\n" + "".join(f"{y}\n" for y in labels))
    return labels


def test_export_then_answers_decide_as_the_model(quantized, tmp_path, capsys):
    model, scripted, path = quantized
    folder = tmp_path / "queries"
    assert main(["export", str(path), "--out", str(folder)]) == 0
    q = json.loads((folder / "queries.json").read_text())
    fp = Fingerprint.load(path)
    assert q["files"] == [f"{i:05d}.png" for i in range(12)] and q["count"] == 12
    assert "labels" not in q and "sha256" in q and q["shape"] == [1, 32, 32]
    assert q["num_classes"] == 10 and q["rounded"] is False
    assert str(fp.labels.tolist()) not in (folder / "queries.json").read_text()
    answers = tmp_path / "answers.csv"
    answer_exported(model, folder, answers)
    rep_a, rep_m = tmp_path / "a.json", tmp_path / "m.json"
    rc_a = main(["verify", str(answers), str(path), "--queries", str(folder / "queries.json"),
                 "--json", str(rep_a)])
    rc_m = main(["verify", str(scripted), str(path), "--trust-code", "--json", str(rep_m)])
    a, m = json.loads(rep_a.read_text()), json.loads(rep_m.read_text())
    assert rc_a == rc_m == 0 and a["null"] == m["null"] == "recorded"
    assert (a["match_rate"], a["p_value"]) == (m["match_rate"], m["p_value"])


def test_answers_must_match_the_exported_queries(quantized, tmp_path, capsys):
    model, _, path = quantized
    folder = tmp_path / "queries"
    assert main(["export", str(path), "--out", str(folder)]) == 0
    answers = tmp_path / "answers.csv"
    labels = answer_exported(model, folder, answers)
    queries = str(folder / "queries.json")
    short = tmp_path / "short.csv"
    short.write_text("".join(f"{y}\n" for y in labels[:-1]))
    other = tmp_path / "other.safetensors"
    fp = Fingerprint.load(path)
    Fingerprint(fp.inputs, fp.labels, {**fp.meta, "seed": 99}).save(other)
    edited = tmp_path / "edited.json"
    edited.write_text((folder / "queries.json").read_text().replace('"count": 12',
                                                                    '"count": 11'))
    for argv, phrase in [
        (["verify", str(short), str(path), "--queries", queries], "11 rows"),
        (["verify", str(answers), str(other), "--queries", queries], "another fingerprint"),
        (["verify", str(answers), str(path)], "queries.json"),
        (["verify", str(answers), str(path), "--queries", str(edited)], "checksum"),
    ]:
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and phrase in err and one_error_line(err), (argv, err)


def test_export_checks_its_folder_first(quantized, tmp_path, capsys):
    _, _, path = quantized
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out, phrase in [(afile, "--out: "), (tmp_path / "no" / "dir", "does not exist")]:
        rc = main(["export", str(path), "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and phrase in err and one_error_line(err), err
    assert afile.read_text() == "x"


def test_a_second_generate_on_the_same_out_is_one_line(model_files, tmp_path, capsys):
    _, scripted, _ = model_files
    out = tmp_path / "o.safetensors"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom fastfp.io import lock\n"
         "with lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n",
         str(out)], stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == b"held"
        rc = main(["generate", str(scripted), *GEN, "--num", "2", "--steps", "3", "--out",
                   str(out)])
    finally:
        holder.kill()
        holder.wait(10)
    err = capsys.readouterr().err
    assert rc == 2 and one_error_line(err) and "another run is writing" in err, err
    assert "locked by pid" in err and not (tmp_path / "o.safetensors.parts").exists()
    assert main(["generate", str(scripted), *GEN, "--num", "2", "--steps", "3", "--out",
                 str(out)]) == 0  # once the other run is gone
