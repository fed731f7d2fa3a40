"""The CUDA-graph path: its noise and its step bookkeeping checked on CPU (no capture), and the
captured path itself on a GPU."""

import pytest
import torch

import fastfp
from fastfp.cexamples import engine, graphs, settings_for
from test_cexamples import METHODS, digits_cnn, tiny_cnn


def flat_noise_reference(model, delta, seed, offset):
    params = [p.detach() for p in model.parameters()]
    return torch.cat([p.reshape(-1) for p in fastfp.noise.perturb(params, delta, seed, offset)])


@pytest.mark.parametrize("step, q, copy, seed", [(0, 1, 0, 0), (7, 3, 2, 5), (2 ** 33 + 1, 10, 9,
                                                                              2 ** 40 + 3)])
def test_in_graph_noise_matches_the_stream_bit_for_bit(step, q, copy, seed):
    model = tiny_cnn()
    names, master, _ = graphs._flat_parameters(model)
    out = torch.empty_like(master)
    graphs.fill_noise(master, out, torch.tensor([step]), q, copy, seed, 0.03, use_triton=False)
    assert torch.equal(out, flat_noise_reference(model, 0.03, seed, step * q + copy))


def test_triton_noise_kernel_matches_under_the_interpreter():
    """The Triton kernel, run by Triton's CPU interpreter (set before triton is imported, hence a
    fresh process), draws the same bits as the stream, including 64-bit steps and seeds."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("triton")
    code = (
        "import torch\n"
        "from fastfp.cexamples import graphs\n"
        "from test_cexamples_graphs import flat_noise_reference, tiny_cnn\n"
        "m = tiny_cnn(); _, master, _ = graphs._flat_parameters(m); out = torch.empty_like(master)\n"
        "for step, q, c, seed in [(3, 4, 1, 11), (2**33 + 1, 10, 9, 2**40 + 3)]:\n"
        "    graphs.fill_noise(master, out, torch.tensor([step]), q, c, seed, 0.05, use_triton=True)\n"
        "    assert torch.equal(out, flat_noise_reference(m, 0.05, seed, step * q + c))\n"
        "print('bit-exact')\n")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "bit-exact" in done.stdout, done.stderr[-2000:]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("eta", [0.0, 0.05])
@pytest.mark.parametrize("check_every", [1, None])
def test_graph_step_bookkeeping_equals_the_eager_engine(method, eta, check_every, monkeypatch):
    """The body the graph captures, run eagerly: same x, steps_used and final loss as eager,
    including masked freezing, host checks every CHECK_EVERY steps and compaction (these
    examples finish within a few steps: a check after every step makes compaction happen)."""
    if check_every is not None:
        monkeypatch.setattr(graphs, "CHECK_EVERY", check_every)
    model, _ = digits_cnn()
    s = settings_for(method, (1, 32, 32), steps=20, q=2, eta=eta)
    x0, labels = engine.start(6, (1, 32, 32), 10, 0)
    expect = engine.run_batch(model, x0, labels, s)
    got = graphs.run_batch(model, x0, labels, s, capture=False)
    torch.testing.assert_close(got[0], expect[0], atol=1e-5, rtol=0)
    assert got[1].tolist() == expect[1].tolist()
    torch.testing.assert_close(got[2], expect[2], rtol=1e-4, atol=1e-6)
    if eta > 0:
        assert min(expect[1].tolist()) < 20


def test_a_smaller_graph_that_cannot_be_set_up_keeps_the_current_one(monkeypatch):
    """Compaction failing part-way continues in the graph at hand: same result as the eager
    engine, and every example is reported finished exactly once (no restart from scratch)."""
    model, _ = digits_cnn()
    s = settings_for("rcgm", (1, 32, 32), steps=20, q=2, eta=0.01)
    x0, labels = engine.start(6, (1, 32, 32), 10, 0)
    expect = engine.run_batch(model, x0, labels, s)
    monkeypatch.setattr(graphs, "CHECK_EVERY", 1)  # these examples finish within 4 steps
    real_init, made = graphs._Step.__init__, []

    def second_fails(self, *args, **kwargs):
        made.append(1)
        if len(made) > 1:
            raise RuntimeError("simulated capture failure")
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(graphs._Step, "__init__", second_fails)
    finished = []
    got = graphs.run_batch(model, x0, labels, s, finished.append, capture=False)
    assert got is not None and len(made) >= 2
    torch.testing.assert_close(got[0], expect[0], atol=1e-5, rtol=0)
    assert got[1].tolist() == expect[1].tolist()
    torch.testing.assert_close(got[2], expect[2], rtol=1e-4, atol=1e-6)
    assert sum(finished) == 6


def test_graphs_are_never_taken_on_cpu():
    model = tiny_cnn()
    cpu = torch.device("cpu")
    assert not graphs.wanted(None, model, (1, 8, 8), cpu)
    with pytest.raises(ValueError, match="graphs"):
        graphs.wanted(True, model, (1, 8, 8), cpu)
    with pytest.raises(ValueError, match="graphs"):
        fastfp.cexamples.generate(model, 2, (1, 8, 8), 5, steps=2, graphs=True, progress=False)


def test_mixed_dtype_models_decline_the_graph_path():
    model = tiny_cnn()
    model[0].bias.data = model[0].bias.data.double()
    assert graphs._flat_parameters(model) is None


@pytest.mark.gpu
@pytest.mark.parametrize("method", METHODS)
def test_captured_graph_equals_eager_on_cuda(method):
    model = tiny_cnn().cuda().eval()
    s = settings_for(method, (1, 8, 8), steps=12, q=3, eta=0.0)
    x0, labels = engine.start(5, (1, 8, 8), 5, 0)
    x0, labels = x0.cuda(), labels.cuda()
    expect = engine.run_batch(model, x0, labels, s)
    got = graphs.run_batch(model, x0, labels, s)
    assert got is not None, "capture failed on a plain CNN"
    close = ((got[0] - expect[0]).abs() < 1e-4).float().mean()
    assert close > 0.99
    assert got[1].tolist() == expect[1].tolist()


@pytest.mark.gpu
def test_triton_noise_on_cuda_matches_the_stream():
    pytest.importorskip("triton")
    model = tiny_cnn().cuda()
    _, master, _ = graphs._flat_parameters(model)
    out = torch.empty_like(master)
    step = torch.tensor([5], device="cuda")
    graphs.fill_noise(master, out, step, 10, 3, 1, 0.03, use_triton=True)
    assert torch.equal(out.cpu(), flat_noise_reference(tiny_cnn(), 0.03, 1, 53))


@pytest.mark.parametrize("h, w, k", [(32, 32, 2), (9, 7, 3), (8, 8, 1), (5, 6, 9)])
def test_graph_high_pass_equals_the_reference(h, w, k):
    from fastfp.reference import dct

    x = torch.rand(2, 3, h, w, dtype=torch.float32)
    band = graphs._band(h, w, k, torch.device("cpu"))
    torch.testing.assert_close(graphs._subtract_band(x, *band), dct.highpass(x.double(), k).float(),
                               atol=2e-6, rtol=0)
