"""Characteristic-examples engine: paper-literal equivalence, success on a real model, bad input."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import METHODS, DigitsCNN, digits_cnn, tiny_cnn  # noqa: F401

import fastfp
from fastfp import backend, cexamples
from fastfp.cexamples import batching, defaults, settings_for
from fastfp.reference import cexamples as ref

# ------------------------------------------------------------------------- reference equivalence

@pytest.mark.parametrize("method", METHODS)
def test_engine_matches_reference_trajectory(method):
    model = tiny_cnn(in_ch=2, num_classes=5)
    shape = (2, 9, 7)  # non-square, odd
    s = settings_for(method, shape, steps=6, q=3, k=3 if method == "ltrc" else None)
    x_ref, labels_ref, used_ref, loss_ref = ref.generate(model, 3, shape, 5, s)
    fp = cexamples.generate(model, 3, shape, 5, method=method, steps=6, q=3,
                            k=3 if method == "ltrc" else None, progress=False)
    assert torch.equal(fp.labels, labels_ref)
    torch.testing.assert_close(fp.inputs, x_ref, atol=1e-5, rtol=0)
    assert fp.meta["steps_used"] == used_ref.tolist()
    torch.testing.assert_close(torch.tensor(fp.meta["final_loss"], dtype=torch.float64), loss_ref,
                               rtol=1e-4, atol=1e-6)
    # The trajectory really moved, and the start really is the shared uniform draw.
    x0, _ = ref.start(3, shape, 5, 0)
    assert (fp.inputs - x0).abs().max() > s.alpha / 2


def test_early_stop_matches_reference_and_compacts():
    model, _ = digits_cnn()
    eta = 0.05  # loose, so examples finish at different steps
    s = settings_for("rcgm", (1, 32, 32), steps=12, q=2, eta=eta)
    x_ref, _, used_ref, loss_ref = ref.generate(model, 6, (1, 32, 32), 10, s)
    seen = []
    handle = model.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].shape[0]))
    try:
        fp = cexamples.generate(model, 6, (1, 32, 32), 10, method="rcgm", steps=12, q=2, eta=eta,
                                progress=False, batch_size=6)
    finally:
        handle.remove()
    assert fp.meta["steps_used"] == used_ref.tolist()
    torch.testing.assert_close(fp.inputs, x_ref, atol=1e-5, rtol=0)
    finished = [i for i, n in enumerate(fp.meta["steps_used"]) if n < 12]
    assert finished, "eta=0.05 should stop some examples early"
    assert all(fp.meta["final_loss"][i] < eta for i in finished)
    assert len(set(seen)) > 1 and min(seen[1:]) < 6, "finished examples must leave the batch"


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_result_does_not_depend_on_batch_size(batch_size):
    model = tiny_cnn()
    kw = dict(method="ltrc", steps=5, q=2, progress=False)
    full = cexamples.generate(model, 5, (1, 8, 8), 5, **kw)
    part = cexamples.generate(model, 5, (1, 8, 8), 5, batch_size=batch_size, **kw)
    torch.testing.assert_close(part.inputs, full.inputs, atol=1e-5, rtol=0)


def test_forced_reference_backend_serves_generate(monkeypatch):
    model = tiny_cnn()
    fast = cexamples.generate(model, 2, (1, 6, 6), 5, method="rc", steps=4, progress=False)
    assert backend.last_used("cexamples.generate") == "torch"
    monkeypatch.setenv("FASTFP_BACKEND", "reference")
    slow = cexamples.generate(model, 2, (1, 6, 6), 5, method="rc", steps=4, progress=False)
    assert backend.last_used("cexamples.generate") == "reference"
    torch.testing.assert_close(slow.inputs, fast.inputs, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- on a real model

@pytest.mark.parametrize("method", METHODS)
def test_methods_fingerprint_a_real_model(method):
    model, acc = digits_cnn()
    assert acc > 0.9, f"the digits CNN should learn (held-out accuracy {acc:.2f})"
    before = [p.detach().clone() for p in model.parameters()]
    fp = cexamples.generate(model, 24, (1, 32, 32), 10, method=method, steps=40, q=4,
                            seed=3, progress=False, model_name="digits-cnn")
    assert cexamples.verify(model, fp) >= 0.99
    assert fp.inputs.shape == (24, 1, 32, 32) and fp.inputs.dtype == torch.float32
    assert fp.labels.unique().numel() > 3, "targets are drawn uniformly"
    # Parameters untouched, no gradient accumulated, eval/train mode restored.
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())
    m = fp.meta
    assert m["method"] == method and m["model"] == "digits-cnn" and m["input_shape"] == [1, 32, 32]
    assert m["fastfp_version"] == fastfp.__version__ and m["steps"] == 40 and m["seed"] == 3
    assert m["k"] == (2 if method == "ltrc" else 0)
    assert m["delta"] == (0.0 if method == "vanilla" else 0.03)
    assert m["q"] == (4 if method in ("rcgm", "ltrc") else 1)
    assert len(m["steps_used"]) == 24 and all(0 <= n <= 40 for n in m["steps_used"])
    assert len(m["final_loss"]) == 24
    if method != "ltrc":  # the high-pass may step slightly outside the box (eq. 3)
        assert fp.inputs.min() >= 0 and fp.inputs.max() <= 1


def test_verify_tells_models_apart():
    model, _ = digits_cnn()
    fp = cexamples.generate(model, 16, (1, 32, 32), 10, method="vanilla", steps=30,
                            progress=False)
    assert cexamples.verify(model, fp) == 1.0
    other = DigitsCNN()  # untrained: no reason to agree with the targets
    assert cexamples.verify(other, fp) < 0.7
    flipped = fastfp.Fingerprint(fp.inputs, (fp.labels + 1) % 10, fp.meta)
    assert cexamples.verify(model, flipped) == 0.0


def test_bf16_autocast_and_user_labels():
    model, _ = digits_cnn()
    labels = torch.tensor([0, 3, 7, 9])
    fp = cexamples.generate(model, 4, (1, 32, 32), 10, method="ltrc", steps=25, q=2,
                            labels=labels, precision="bf16", progress=False)
    assert torch.equal(fp.labels, labels) and fp.meta["precision"] == "bf16"
    assert cexamples.verify(model, fp) >= 0.75


def test_progress_bar_and_default_alpha(capsys):
    model = tiny_cnn()
    fp = cexamples.generate(model, 3, (1, 8, 8), 5, method="vanilla", steps=10, progress=True)
    err = capsys.readouterr().err
    # the bar counts example-steps (3 x 10) and says how many examples are done
    assert "vanilla" in err and "30/30" in err and "3/3 examples" in err
    assert fp.meta["alpha"] == pytest.approx(0.25)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", ["rc", "rcgm", "ltrc"])
def test_half_precision_models_take_weight_noise(dtype, method):
    """Weight noise is allowed on bf16 / fp16 weights: the noisy copies must get inputs of their
    dtype (the float32 work copy used to fail inside noise.grad_mean after the first step)."""
    model = tiny_cnn().to(dtype)
    before = [p.detach().clone() for p in model.parameters()]
    fp = cexamples.generate(model, 3, (1, 8, 8), 5, method=method, steps=4, q=2, eta=0.0,
                            progress=False)
    assert fp.inputs.dtype == torch.float32 and torch.isfinite(fp.inputs).all()
    assert fp.meta["steps_used"] == [4, 4, 4]
    x0, _ = ref.start(3, (1, 8, 8), 5, 0)
    assert (fp.inputs - x0).abs().max() > 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("method", METHODS)
def test_generate_under_no_grad(method):
    """Callers' evaluation code often runs under torch.no_grad(): the input gradients still work
    (same result), and grad mode is the caller's again afterwards."""
    model = tiny_cnn()
    kw = dict(method=method, steps=3, q=2, progress=False)
    expect = cexamples.generate(model, 2, (1, 8, 8), 5, **kw)
    with torch.no_grad():
        got = cexamples.generate(model, 2, (1, 8, 8), 5, **kw)
        x = fastfp.attacks.ATTACKS[method](model, input_shape=(1, 8, 8), steps=3, q=2)(
            None, got.labels)
        assert not torch.is_grad_enabled()
    torch.testing.assert_close(got.inputs, expect.inputs, atol=0, rtol=0)
    torch.testing.assert_close(x, expect.inputs, atol=0, rtol=0)


@pytest.mark.parametrize("method", ["vanilla", "ltrc"])
def test_generate_under_inference_mode(method):
    """Serving code runs under torch.inference_mode(): generation still gets its input gradients."""
    model = tiny_cnn()
    kw = dict(method=method, steps=3, q=2, progress=False)
    expect = cexamples.generate(model, 2, (1, 8, 8), 5, **kw)
    with torch.inference_mode():
        got = cexamples.generate(model, 2, (1, 8, 8), 5, **kw)
        assert torch.is_inference_mode_enabled()
    torch.testing.assert_close(got.inputs, expect.inputs, atol=0, rtol=0)


@pytest.mark.parametrize("method", ["vanilla", "rcgm"])
def test_fp32_ignores_a_callers_autocast(method):
    """precision='fp32' (what meta records) must not silently run in a caller's bf16 autocast."""
    model = tiny_cnn()
    kw = dict(method=method, steps=10, q=2, progress=False)
    expect = cexamples.generate(model, 3, (1, 8, 8), 5, **kw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = cexamples.generate(model, 3, (1, 8, 8), 5, **kw)
    torch.testing.assert_close(got.inputs, expect.inputs, atol=0, rtol=0)
    assert got.meta["final_loss"] == expect.meta["final_loss"]


def test_batch_size_none_follows_free_memory(monkeypatch):
    """batch_size=None sizes batches from the device's free memory (here: faked)."""
    model = tiny_cnn()
    seen = []
    handle = model.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].shape[0]))
    kw = dict(method="vanilla", steps=2, eta=0.0, progress=False)
    try:
        monkeypatch.setattr(batching, "free_bytes", lambda device: 0)  # room for one example
        tight = cexamples.generate(model, 3, (1, 8, 8), 5, **kw)
        assert seen and set(seen) == {1}
        seen.clear()
        monkeypatch.setattr(batching, "free_bytes", lambda device: 1 << 40)
        roomy = cexamples.generate(model, 3, (1, 8, 8), 5, **kw)
        assert max(seen) == 3  # all three examples in one batch
    finally:
        handle.remove()
    torch.testing.assert_close(tight.inputs, roomy.inputs, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- defaults

def test_paper_defaults():
    assert defaults.k_for((3, 224, 224)) == 20 and defaults.k_for((3, 32, 32)) == 2
    assert defaults.k_for((3, 64, 64)) == 5 and defaults.k_for((1, 8, 8)) == 1
    assert defaults.k_for((1, 1, 2)) == 1 and defaults.k_for((1, 1, 1)) == 0
    assert defaults.delta_for((3, 224, 224)) == 0.001 and defaults.delta_for((3, 32, 32)) == 0.03
    d = defaults.delta_for((3, 96, 96))
    assert 0.001 < d < 0.03
    assert defaults.delta_for((3, 16, 64)) == defaults.delta_for((3, 32, 32))  # same pixel count
    assert defaults.alpha_for(500) == pytest.approx(0.005)
    # the paper's bands keep the plain rule; a band 4x wider than the paper's takes 4x the step
    assert defaults.alpha_for(500, k=20, input_shape=(3, 224, 224)) == pytest.approx(0.005)
    assert defaults.alpha_for(200, k=2, input_shape=(1, 32, 32)) == pytest.approx(0.0125)
    assert defaults.alpha_for(200, k=8, input_shape=(1, 32, 32)) == pytest.approx(0.05)
    assert settings_for("ltrc", (1, 32, 32), k=8, steps=200).alpha == pytest.approx(0.05)
    assert settings_for("rcgm", (1, 32, 32), steps=200).alpha == pytest.approx(0.0125)
    s = settings_for("ltrc", (3, 224, 224))
    assert (s.k, s.delta, s.q, s.alpha, s.steps, s.eta) == (20, 0.001, 10, 0.005, 500, 1e-6)
    assert settings_for("rc", (3, 32, 32)).q == 1 and settings_for("vanilla", (3, 32, 32)).k == 0


# ----------------------------------------------------------------------------- bad input

class NotAClassifier(nn.Module):
    def __init__(self, out):
        super().__init__()
        self.lin = nn.Linear(1, 1)
        self.out = out

    def forward(self, x):
        n = x.shape[0]
        return {"tuple": (x, x), "4d": x, "1d": x.flatten()[:n]}[self.out]


class NaNModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 5)

    def forward(self, x):
        return self.lin(x.flatten(1)) * float("nan")


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(method="fgsm"), ValueError, "method"),
    (dict(q=0), ValueError, "q"),
    (dict(delta=-0.1), ValueError, "delta"),
    (dict(delta=1e39), ValueError, "delta"),
    (dict(steps=0), ValueError, "steps"),
    (dict(steps=2.5), TypeError, "steps"),
    (dict(num=0), ValueError, "num"),
    (dict(num_classes=7), ValueError, "num_classes"),
    (dict(input_shape=(8, 8)), ValueError, "input_shape"),
    (dict(input_shape=(1, 1, 8, 8)), ValueError, "input_shape"),
    (dict(input_shape="1x8x8"), TypeError, "input_shape"),
    (dict(k=50), ValueError, "k"),
    (dict(method="rc", k=2), ValueError, "k"),
    (dict(method="vanilla", delta=0.1), ValueError, "delta"),
    (dict(alpha=0.0), ValueError, "alpha"),
    (dict(alpha=-1.0), ValueError, "alpha"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(precision="fp16"), ValueError, "precision"),
    (dict(labels=torch.tensor([0, 5])), ValueError, "labels"),
    (dict(labels=torch.tensor([0, -1])), ValueError, "labels"),
    (dict(labels=torch.tensor([0, 1, 2])), ValueError, "labels"),
    (dict(labels=torch.tensor([0.0, 1.0])), TypeError, "labels"),
    (dict(device="meta"), ValueError, "device"),
    (dict(progress="yes"), TypeError, "progress"),
    (dict(model="resnet"), TypeError, "model"),
    (dict(model=NotAClassifier("tuple")), TypeError, "model"),
    (dict(model=NotAClassifier("4d")), ValueError, "model"),
    (dict(model=NotAClassifier("1d")), ValueError, "model"),
    (dict(input_shape=(3, 8, 8)), ValueError, "input_shape"),
    (dict(model=tiny_cnn().double(), method="rcgm"), TypeError, "model"),
    (dict(model=nn.Sequential(nn.Flatten(), nn.Softmax(dim=1)), input_shape=(1, 1, 5),
          method="rc"), ValueError, "model"),
    (dict(model_name=5), TypeError, "model_name"),
    (dict(model=NaNModel()), ValueError, "model"),
    (dict(model=tiny_cnn().to("meta")), ValueError, "model"),
    (dict(device="cuda:x"), ValueError, "device"),
    (dict(x0=(torch.rand(2, 1, 8, 8) * 255).to(torch.uint8)), TypeError, "x0"),
    (dict(x0=torch.full((2, 1, 8, 8), float("nan"))), ValueError, "x0"),
    (dict(x0=torch.rand(2, 1, 8, 8) + 1), ValueError, "x0"),
    (dict(x0=torch.rand(3, 1, 8, 8)), ValueError, "x0"),
    (dict(x0=torch.rand(2, 1, 8, 9)), ValueError, "x0"),
    (dict(x0=[[0.5]]), TypeError, "x0"),
])
def test_bad_input_is_rejected_before_work(kwargs, exc, name, monkeypatch):
    from fastfp.cexamples import engine

    calls = []
    monkeypatch.setattr(engine, "run_batch", lambda *a, **k: calls.append(1))
    args = dict(model=tiny_cnn(), num=2, input_shape=(1, 8, 8), num_classes=5, progress=False)
    args.update(kwargs)
    with pytest.raises(exc, match=rf"^{name}(\[\d\])?: "):
        cexamples.generate(**args)
    assert not calls


def test_verify_gives_the_mode_back_and_keeps_running_statistics():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 5)).train()
    stats = [b.clone() for b in model.buffers()]
    fp = fastfp.Fingerprint(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
    cexamples.verify(model, fp, batch_size=3)
    assert model.training
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers(), strict=True))


def test_verify_bad_input():
    model = tiny_cnn()
    fp = fastfp.Fingerprint(torch.rand(2, 1, 8, 8), torch.tensor([0, 9]))
    with pytest.raises(ValueError, match="fp"):
        cexamples.verify(model, fp)
    with pytest.raises(TypeError, match="fp"):
        cexamples.verify(model, torch.rand(2, 1, 8, 8))
    with pytest.raises(TypeError, match="model"):
        cexamples.verify("model", fp)
    # A fingerprint made for another input shape: a ValueError naming fp, not the conv's error.
    with pytest.raises(ValueError, match="fp: .*shape \\(1, 8, 8\\)"):
        cexamples.verify(tiny_cnn(in_ch=3), fastfp.Fingerprint(torch.rand(2, 1, 8, 8),
                                                               torch.tensor([0, 1])))


# ----------------------------------------------------------------------------- CUDA

@pytest.mark.gpu
@pytest.mark.parametrize("method", METHODS)
def test_cuda_matches_cpu_and_graph_path(method):
    model, _ = digits_cnn()
    cpu = cexamples.generate(model, 8, (1, 32, 32), 10, method=method, steps=20, q=3,
                             progress=False)
    gpu_model = DigitsCNN().cuda()
    gpu_model.load_state_dict(model.state_dict())
    kw = dict(method=method, steps=20, q=3, progress=False)
    eager = cexamples.generate(gpu_model, 8, (1, 32, 32), 10, graphs=False, **kw)
    assert backend.last_used("cexamples.generate") == "torch"
    graph = cexamples.generate(gpu_model, 8, (1, 32, 32), 10, graphs=True, **kw)
    assert backend.last_used("cexamples.generate") == "cuda-graph"
    for fp in (eager, graph):
        assert cexamples.verify(model, fp) >= 0.99
        # sign() may flip on a rounding-level gradient component: compare in bulk
        close = ((fp.inputs - cpu.inputs).abs() < 1e-4).float().mean()
        assert close > 0.97
    close = ((graph.inputs - eager.inputs).abs() < 1e-4).float().mean()
    assert close > 0.97


@pytest.mark.gpu
def test_cuda_graph_with_early_stop_and_bf16():
    model, _ = digits_cnn()
    gpu_model = DigitsCNN().cuda()
    gpu_model.load_state_dict(model.state_dict())
    fp = cexamples.generate(gpu_model, 40, (1, 32, 32), 10, method="ltrc", steps=60, q=4,
                            eta=0.01, graphs=True, precision="bf16", progress=False)
    assert backend.last_used("cexamples.generate") == "cuda-graph"
    assert cexamples.verify(model, fp) >= 0.97
    used = fp.meta["steps_used"]
    assert min(used) < 60
    assert all(fp.meta["final_loss"][i] < 0.01 for i, n in enumerate(used) if n < 60)


def test_torchvision_classifier_non_square_and_mode_restored():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = tv.models.resnet18(num_classes=7)
    model.train()  # BatchNorm in training mode: generate must use eval and give the mode back
    running = model.bn1.running_mean.clone()
    fp = cexamples.generate(model, 2, (3, 48, 40), 7, method="ltrc", steps=2, q=2,
                            progress=False)
    assert model.training and torch.equal(model.bn1.running_mean, running)
    assert fp.inputs.shape == (2, 3, 48, 40) and torch.isfinite(fp.inputs).all()
    assert fp.meta["k"] == defaults.k_for((3, 48, 40))
    x0, _ = ref.start(2, (3, 48, 40), 7, 0)
    assert (fp.inputs - x0).abs().max() > 0


# ----------------------------------------------------------------------------- pixel space

@pytest.mark.parametrize("method", ["vanilla", "ltrc"])
def test_normalised_model_round_trip(method):
    """A fingerprint made through normalize= is stored in pixel space and recorded; verify
    applies the recorded normalisation, so the bare network scores what the wrapper scored."""
    model, _ = digits_cnn()
    mean, std = (0.7,), (0.2,)
    fp = cexamples.generate(model, 12, (1, 32, 32), 10, method=method, steps=40, q=2,
                            normalize=(mean, std), progress=False)
    assert fp.meta["normalize"] == [list(mean), list(std)]
    assert float(fp.inputs.min()) >= 0 and float(fp.inputs.max()) <= 1
    wrapped = cexamples.checks.Normalized(model, mean, std)
    bare = fastfp.Fingerprint(fp.inputs, fp.labels)  # the same examples, no normalisation
    assert cexamples.verify(model, fp) == cexamples.verify(wrapped, bare) == 1.0
    assert cexamples.verify(model, bare) < 0.9  # fed raw pixels, the network does not match
    imagenet = cexamples.generate(tiny_cnn(in_ch=3), 1, (3, 8, 8), 5, steps=1,
                                  normalize="imagenet", progress=False)
    assert imagenet.meta["normalize"] == [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]


@pytest.mark.parametrize("normalize, exc, phrase", [
    (((0.5, 0.5), (0.2, 0.2)), ValueError, "normalize: mean has 2 values for 3 channels"),
    (((0.5,), (0.0,)), ValueError, "normalize: std must be > 0"),
    ("cifar", TypeError, "normalize: expected None, 'imagenet'"),
    (((0.5,), ("a",)), TypeError, "normalize std: expected a number"),
])
def test_bad_normalize(normalize, exc, phrase):
    with pytest.raises(exc, match=phrase):
        cexamples.generate(tiny_cnn(in_ch=3), 2, (3, 8, 8), 5, steps=1, normalize=normalize,
                           progress=False)


@pytest.mark.parametrize("quantize, levels", [(None, None), (8, 255), (16, 65535)])
def test_ltrc_examples_are_valid_images(quantize, levels):
    """The high-pass leaves [0, 1]; the stored example is its projection (and rounding), and the
    early stop and the final loss are those of exactly what is stored."""
    model, _ = digits_cnn()
    fp = cexamples.generate(model, 8, (1, 32, 32), 10, method="ltrc", steps=60, q=3, k=4,
                            eta=0.05, quantize=quantize, progress=False)
    x = fp.inputs
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    if levels:
        assert torch.equal(x, torch.round(x * levels) / levels)
    assert fp.meta["quantize"] == quantize
    with torch.no_grad():
        loss = F.cross_entropy(model(x), fp.labels, reduction="none").double()
    torch.testing.assert_close(loss, torch.tensor(fp.meta["final_loss"], dtype=torch.float64),
                               rtol=1e-4, atol=1e-6)
    used = torch.tensor(fp.meta["steps_used"])
    assert bool((loss[used < 60] < 0.05).all()) and int((used < 60).sum()) > 0
    with pytest.raises(ValueError, match="quantize: expected None, 8 or 16"):
        cexamples.generate(model, 1, (1, 32, 32), 10, quantize=4, progress=False)


def test_stored_examples_follow_the_literal_twin_with_quantize():
    model = tiny_cnn()
    s = settings_for("ltrc", (1, 8, 8), steps=8, q=2, k=3, eta=0.5, quantize=8)
    x_ref, labels_ref, used_ref, loss_ref = ref.generate(model, 4, (1, 8, 8), 5, s)
    fp = cexamples.generate(model, 4, (1, 8, 8), 5, method="ltrc", steps=8, q=2, k=3, eta=0.5,
                            quantize=8, progress=False)
    torch.testing.assert_close(fp.inputs, x_ref, atol=1e-6, rtol=0)
    assert fp.meta["steps_used"] == used_ref.tolist()


# ----------------------------------------------------------------------------- verdict

def test_verdict_tells_a_copy_from_an_unrelated_model():
    model, _ = digits_cnn()
    fp = cexamples.generate(model, 30, (1, 32, 32), 10, method="rcgm", steps=40, q=3,
                            progress=False)
    others = [tiny_cnn(num_classes=10, seed=s) for s in (1, 2)]
    copy = cexamples.verdict(model, fp, negatives=others)
    assert copy.is_copy and copy.match_rate == 1.0 and copy.p_value < 1e-6
    assert 0 < copy.null_rate < 0.5 and 0 < copy.threshold <= 1
    other = cexamples.verdict(tiny_cnn(num_classes=10, seed=3), fp, negatives=others)
    assert not other.is_copy and other.p_value > 0.01
    fixed = cexamples.verdict(model, fp, negatives=others, threshold=0.9)
    assert fixed.is_copy and fixed.threshold == 0.9
    assert copy.null == "negatives" and copy.null_models == 2
    # no measured null: no decision, unless chance level is asked for explicitly
    with pytest.raises(ValueError, match="null: no null rate measured on unrelated models"):
        cexamples.verdict(model, fp)
    chance = cexamples.verdict(model, fp, null="chance")
    assert chance.null_rate == pytest.approx(0.1) and chance.is_copy and chance.null == "chance"


def test_verdict_p_value_is_the_binomial_tail():
    from scipy import stats

    model = tiny_cnn()
    fp = fastfp.Fingerprint(torch.rand(20, 1, 8, 8), torch.randint(0, 5, (20,)))
    fp.meta["num_classes"], fp.meta["null_rate"] = 5, 0.2
    v = cexamples.verdict(model, fp)
    k = round(v.match_rate * 20)
    assert v.p_value == pytest.approx(stats.binomtest(k, 20, 0.2, alternative="greater").pvalue)
    assert v.is_copy == (v.p_value < 0.01)


@pytest.mark.parametrize("kwargs, exc, phrase", [
    (dict(alpha=0.0), ValueError, "alpha: expected a significance level"),
    (dict(alpha=1.5), ValueError, "alpha: expected a significance level"),
    (dict(threshold=2.0), ValueError, "threshold: expected a number in"),
    (dict(negatives=["m"]), TypeError, r"negatives\[0\]: expected a torch.nn.Module"),
    (dict(negatives=[None]), TypeError, r"negatives\[0\]: expected"),
])
def test_verdict_bad_input(kwargs, exc, phrase):
    fp = fastfp.Fingerprint(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
    fp.meta["num_classes"] = 5
    with pytest.raises(exc, match=phrase):
        cexamples.verdict(tiny_cnn(), fp, **kwargs)
    with pytest.raises(ValueError, match=r"negatives\[0\]: not a classifier of the"):
        cexamples.verdict(tiny_cnn(), fp, negatives=[tiny_cnn(num_classes=7)])


def test_normalised_torchscript_model():
    """A scripted model behind the normalisation wrapper takes its weight noise in place."""
    model = torch.jit.script(tiny_cnn(in_ch=3))
    before = [p.detach().clone() for p in model.parameters()]
    fp = cexamples.generate(model, 2, (3, 8, 8), 5, method="rcgm", steps=3, q=2,
                            normalize="imagenet", progress=False)
    plain = cexamples.generate(tiny_cnn(in_ch=3), 2, (3, 8, 8), 5, method="rcgm", steps=3, q=2,
                               normalize="imagenet", progress=False)
    torch.testing.assert_close(fp.inputs, plain.inputs, atol=1e-6, rtol=0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.slow
def test_ltrc_with_a_wide_band_fits_every_example():
    """A band 4x the paper's (k = 8 at 32x32) with the default step: the model classifies every
    stored example as its target (the plain PGD step left 12 % unfitted: defaults.alpha_for)."""
    model, _ = digits_cnn()
    fp = cexamples.generate(model, 16, (1, 32, 32), 10, method="ltrc", k=8, q=3, steps=200,
                            progress=False)
    assert cexamples.verify(model, fp) == 1.0


def test_verify_names_a_class_count_mismatch():
    fp = cexamples.generate(tiny_cnn(), 2, (1, 8, 8), 5, steps=1, progress=False)
    with pytest.raises(ValueError, match="model: outputs 7 classes, but the fingerprint was made"):
        cexamples.verify(tiny_cnn(num_classes=7), fp)


def test_null_rate_recorded_at_generation_is_the_verdicts_null():
    model, others = tiny_cnn(), [tiny_cnn(seed=s) for s in (1, 2)]
    fp = cexamples.generate(model, 6, (1, 8, 8), 5, method="vanilla", steps=20,
                            negatives=others, progress=False)
    matches = sum(round(cexamples.verify(m, fp) * 6) for m in others)
    assert fp.meta["null_rate"] == pytest.approx((matches + 1) / (2 * 6 + 2))
    assert fp.meta["null_models"] == 2
    v = cexamples.verdict(model, fp)  # no warning: the recorded null is used
    assert v.null_rate == fp.meta["null_rate"]


def test_verdict_needs_a_measured_null_before_any_work():
    calls = []
    model = tiny_cnn()
    model.register_forward_hook(lambda *a: calls.append(1))
    fp = fastfp.Fingerprint(torch.rand(6, 1, 8, 8), torch.randint(0, 5, (6,)),
                            {"num_classes": 5})
    with pytest.raises(ValueError, match="null: no null rate.*negatives.*null='chance'"):
        cexamples.verdict(model, fp)
    assert not calls
    v = cexamples.verdict(model, fp, threshold=0.5)
    assert v.null == "threshold" and v.null_rate == pytest.approx(0.2) and v.null_models == 0
    with pytest.raises(ValueError, match="null: expected None or 'chance'"):
        cexamples.verdict(model, fp, null="uniform")


def test_verdict_on_black_boxes_is_the_models_verdict():
    from fastfp import blackbox as B

    model, others = tiny_cnn(), [tiny_cnn(seed=s) for s in (1, 2)]
    fp = cexamples.generate(model, 10, (1, 8, 8), 5, method="vanilla", steps=30, quantize=8,
                            negatives=others, progress=False)
    want = cexamples.verdict(model, fp)
    assert want.null == "recorded" and want.null_models == 2 and not want.rounded
    box = B.FunctionBlackBox(model, torch.zeros(1, 1, 8, 8), 2)  # its own x is not asked
    got = cexamples.verdict(box, fp)
    assert got == want and box.images == 10
    with torch.no_grad():
        labels = model(fp.inputs).argmax(1).numpy()[:, None]
    assert cexamples.verdict(B.Recorded(labels, 1), fp) == want
    assert cexamples.verify(box, fp) == want.match_rate and box.images == 10  # memory: no resend
    # a black box as a negative counts like a model
    neg = [B.FunctionBlackBox(m, fp.inputs, 1) for m in others]
    assert cexamples.verdict(model, fp, negatives=neg) == \
        cexamples.verdict(model, fp, negatives=others)


def test_black_box_budget_is_checked_before_sending():
    from fastfp import blackbox as B

    model = tiny_cnn()
    pixels = (torch.rand(8, 1, 8, 8) * 255).round() / 255  # 8-bit: sent exactly
    fp = fastfp.Fingerprint(pixels, torch.randint(0, 5, (8,)),
                            {"num_classes": 5, "null_rate": 0.2})
    box = B.FunctionBlackBox(model, fp.inputs, 1, batch_size=4, max_queries=7)
    with pytest.raises(B.BudgetExceeded, match="budget of 7 images"):
        cexamples.verdict(box, fp)
    assert box.images == 0  # not even the first batch of 4
    with pytest.raises(ValueError, match="answers: 7 rows, the fingerprint has 8"):
        cexamples.verdict(B.Recorded(np.zeros((7, 1), dtype=np.int64), 1), fp)


def test_black_box_gets_the_examples_rounded_to_8_bits():
    from fastfp import blackbox as B

    seen = []

    def fn(x):
        seen.append(x.clone())
        return tiny_cnn()(x)

    fp = fastfp.Fingerprint(torch.rand(4, 1, 8, 8), torch.randint(0, 5, (4,)),
                            {"num_classes": 5, "null_rate": 0.2})
    with pytest.warns(UserWarning, match="rounded to 8 bits"):
        v = cexamples.verdict(B.FunctionBlackBox(fn, fp.inputs, 1), fp)
    assert v.rounded and torch.equal(seen[0], (fp.inputs * 255).round() / 255)
