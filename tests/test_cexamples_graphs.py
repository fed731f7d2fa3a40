"""CUDA-graph capture of the engine's step: its replay schedule checked on CPU (the same step run
eagerly on the graph path's schedule), and the captured step itself on a GPU."""

import logging

import pytest
import torch
from helpers import METHODS, digits_cnn, tiny_cnn

import fastfp
from fastfp.cexamples import engine, settings_for
from fastfp.reference.cexamples import start


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("eta", [0.0, 0.05])
@pytest.mark.parametrize("check_every", [1, 8])
def test_replay_schedule_equals_the_eager_schedule(method, eta, check_every, monkeypatch):
    """Masked freezing, host checks every CHECK_EVERY steps and compaction at half: the same x,
    steps_used and final loss as checking and compacting after every step."""
    monkeypatch.setattr(engine, "CHECK_EVERY", check_every)
    model, _ = digits_cnn()
    s = settings_for(method, (1, 32, 32), steps=20, q=2, eta=eta)
    x0, labels = start(6, (1, 32, 32), 10, 0)
    expect = engine.run_batch(model, x0, labels, s)
    steps, finished = [], []

    def on_progress(n_steps, n_done):
        steps.append(n_steps)
        finished.append(n_done)

    got = engine.run_batch(model, x0, labels, s, on_progress=on_progress, graphs=True,
                           capture_graph=False)
    torch.testing.assert_close(got[0], expect[0], atol=1e-5, rtol=0)
    assert got[1].tolist() == expect[1].tolist()
    torch.testing.assert_close(got[2], expect[2], rtol=1e-4, atol=1e-6)
    assert sum(finished) == 6 and sum(steps) == 6 * 20 and steps[0] > 0 and min(steps) >= 0
    if eta > 0:  # the schedule really stopped and compacted examples early
        assert min(expect[1].tolist()) < 20


def test_a_smaller_graph_that_cannot_be_captured_keeps_the_current_one(monkeypatch, caplog):
    """Compaction failing part-way continues with the batch at hand: same result as the eager
    schedule, every example reported finished exactly once, and one warning in the log."""
    model, _ = digits_cnn()
    s = settings_for("rcgm", (1, 32, 32), steps=20, q=2, eta=0.01)
    x0, labels = start(6, (1, 32, 32), 10, 0)
    expect = engine.run_batch(model, x0, labels, s)
    monkeypatch.setattr(engine, "CHECK_EVERY", 1)  # these examples finish within 4 steps
    made = []

    def second_fails(*args):
        made.append(1)
        if len(made) > 1:
            raise RuntimeError("simulated capture failure")
        return lambda: engine.step(*args)

    monkeypatch.setattr(engine, "capture", second_fails)
    finished = []
    with caplog.at_level(logging.WARNING, logger="fastfp"):
        got = engine.run_batch(model, x0, labels, s, graphs=True,
                               on_progress=lambda _steps, done: finished.append(done))
    assert len(made) == 2
    torch.testing.assert_close(got[0], expect[0], atol=1e-5, rtol=0)
    assert got[1].tolist() == expect[1].tolist()
    torch.testing.assert_close(got[2], expect[2], rtol=1e-4, atol=1e-6)
    assert sum(finished) == 6
    assert sum("could not be captured" in r.getMessage() for r in caplog.records) == 1


def test_graphs_are_opt_in_and_cuda_only():
    model = tiny_cnn()
    with pytest.raises(ValueError, match="graphs: CUDA graphs need"):
        fastfp.cexamples.generate(model, 2, (1, 8, 8), 5, steps=2, graphs=True, progress=False)
    with pytest.raises(TypeError, match="graphs: expected None, True or False"):
        fastfp.cexamples.generate(model, 2, (1, 8, 8), 5, steps=2, graphs="yes", progress=False)
    fp = fastfp.cexamples.generate(model, 2, (1, 8, 8), 5, steps=2, progress=False)
    assert fp.meta["engine"] == "torch"


def test_step_reads_the_step_index_from_the_device_state():
    """The noise of a step comes from the batch's device counter t (streams t * q + c), not from
    a host-side argument: running step 3 from a state whose t is 3 equals the 4th eager step."""
    model = tiny_cnn()
    s = settings_for("rcgm", (1, 8, 8), steps=4, q=2, eta=0.0)
    x0, labels = start(3, (1, 8, 8), 5, 1)
    b = engine.Batch.start(x0, labels, s)
    for _ in range(3):
        engine.step(model, b, s)
    resumed = engine.Batch.start(b.x, labels, s, t=3)
    engine.step(model, b, s)
    engine.step(model, resumed, s)
    assert torch.equal(b.x, resumed.x)
    other = engine.Batch.start(resumed.x, labels, s, t=7)  # another stream: another result
    engine.step(model, other, s)
    assert not torch.equal(other.x, resumed.x)


@pytest.mark.gpu
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("eta", [0.0, 0.3])
def test_captured_step_equals_eager_on_cuda(method, eta):
    model = tiny_cnn().cuda().eval()
    s = settings_for(method, (1, 8, 8), steps=12, q=3, eta=eta, k=2 if method == "ltrc" else None)
    x0, labels = start(5, (1, 8, 8), 5, 0)
    x0, labels = x0.cuda(), labels.cuda()
    expect = engine.run_batch(model, x0, labels, s)
    got = engine.run_batch(model, x0, labels, s, graphs=True)
    assert float((got[0] - expect[0]).abs().max()) <= 1e-5
    assert got[1].tolist() == expect[1].tolist()
