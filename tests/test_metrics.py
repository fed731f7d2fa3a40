"""Metrics of the C-examples paper (robustness, transferability, uniqueness) on hand-made models,
and the model checks and eval-mode guard they rely on."""

import pytest
import torch
import torch.nn as nn
from helpers import TupleModel

from fastfp import metrics as M


def test_decision_statistics_are_fastfp_stats_reexported():
    # the definitions and their tests live in fastfp.stats / tests/test_stats.py
    from fastfp import stats

    for name in ("roc_curve", "roc_auc", "threshold_at_fpr", "tpr_at_fpr", "f1",
                 "identification_counts"):
        assert getattr(M, name) is getattr(stats, name)


class _Fixed(nn.Module):
    """Predicts a fixed label per input index (inputs carry their index in pixel 0)."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.as_tensor(table)
        self.dummy = nn.Linear(1, 1)

    def forward(self, x):
        idx = x[:, 0, 0, 0].round().long()
        return torch.nn.functional.one_hot(self.table[idx], 10).float()


def test_transferability_and_accuracy_by_hand():
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 2, 2).contiguous()
    fp = (x, torch.tensor([1, 2, 3, 4]))
    a = _Fixed([1, 2, 3, 4])  # 4/4
    b = _Fixed([1, 2, 0, 0])  # 2/4
    c = _Fixed([0, 0, 0, 0])  # 0/4
    assert M.fp_accuracy(fp, a) == 1.0 and M.fp_accuracy(fp, b) == 0.5
    assert M.transferability(fp, [b, c]) == 0.25
    assert M.transferability(fp, {"b": b}) == 0.5
    with pytest.raises(ValueError, match="other_models: "):
        M.transferability(fp, [])
    with pytest.raises(ValueError, match="fp: inputs and labels must have the same"):
        M.fp_accuracy((x, torch.tensor([1, 2])), a)
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        M.fp_accuracy(fp, "a")


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


def test_robustness_on_pruned_copies():
    m = _mlp()
    x = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(7)) * 5
    with torch.no_grad():
        fp = (x, m(x).argmax(1))
    assert len(fp[1].unique()) > 2  # a varied fingerprint: a constant model cannot get it all
    # pruning nothing keeps every prediction; pruning everything leaves a constant model
    assert M.robustness_per_rate(fp, m, rates=(0.0,)) == {0.0: 1.0}
    per = M.robustness_per_rate(fp, m, rates=(0.0, 0.5, 1.0))
    assert per[0.0] == 1.0 and per[1.0] < 1.0
    assert M.robustness(fp, m, rates=(0.0, 1.0)) == pytest.approx((1.0 + per[1.0]) / 2)
    copies = M.pruned_copies(m, rates=(0.5,), repeats=5)
    assert len(copies[0.5]) == 1  # no data: magnitude pruning is deterministic, one copy
    w = torch.cat([layer.weight.flatten() for layer in copies[0.5][0]
                   if isinstance(layer, nn.Linear)])
    assert int((w == 0).sum()) == round(0.5 * w.numel())
    other = _mlp(1)
    u = M.uniqueness(fp, m, [other], rates=(0.0,))
    assert u == pytest.approx(1.0 - M.fp_accuracy(fp, other))


def test_pruned_copies_with_retraining_keep_the_mask_and_differ_per_repeat():
    m = _mlp()
    data = (torch.rand(96, 1, 4, 4), torch.randint(0, 10, (96,)))
    copies = M.pruned_copies(m, rates=(0.6,), repeats=3, data=data, epochs=1, lr=0.05)
    ref = M.pruned_copies(m, rates=(0.6,))[0.6][0]
    zero_ref = [layer.weight == 0 for layer in ref if isinstance(layer, nn.Linear)]
    ws = []
    for c in copies[0.6]:
        layers = [layer for layer in c if isinstance(layer, nn.Linear)]
        for z, layer in zip(zero_ref, layers, strict=True):
            assert torch.all(layer.weight[z] == 0)  # pruned weights stay pruned through retraining
        ws.append(torch.cat([layer.weight.flatten() for layer in layers]))
    assert not torch.equal(ws[0], ws[1]) and not torch.equal(ws[1], ws[2])
    again = M.pruned_copies(m, rates=(0.6,), repeats=3, data=data, epochs=1, lr=0.05)
    assert all(torch.equal(list(a.parameters())[1], list(b.parameters())[1])
               for a, b in zip(copies[0.6], again[0.6], strict=True))
    with pytest.raises(ValueError, match="rates: "):
        M.pruned_copies(m, rates=())
    with pytest.raises(ValueError, match="repeats: "):
        M.pruned_copies(m, repeats=0)


def test_fp_accuracy_runs_in_eval_mode_and_gives_the_mode_back():
    """A model in training mode (e.g. a fresh torchvision model) must answer with its running
    statistics, and measuring it must not change them."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                      nn.Linear(4 * 6 * 6, 5))
    with torch.no_grad():
        m[1].running_mean.uniform_(-1, 1)
        m[1].running_var.uniform_(0.5, 2)
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        fp = (x, m.eval()(x).argmax(1))
    stats = [b.clone() for b in m.buffers()]
    m.train()
    assert M.fp_accuracy(fp, m, batch_size=3) == 1.0
    assert M.transferability(fp, [m]) == 1.0
    assert m.training
    assert all(torch.equal(a, b) for a, b in zip(stats, m.buffers(), strict=True))


def test_fp_accuracy_float64_models_and_bad_input():
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    m = _mlp()
    with torch.no_grad():
        fp = (x, m(x).argmax(1))
    d = _mlp().double()  # same weights, float64: the float32 inputs are cast to it
    assert M.fp_accuracy(fp, d) == 1.0 and M.transferability(fp, [d]) == 1.0
    with pytest.raises(ValueError, match="batch_size: "):
        M.fp_accuracy(fp, m, batch_size=0)
    with pytest.raises(ValueError, match="fp: labels"):
        M.fp_accuracy((x, torch.tensor([0, 1, 2, 3, 4, 12])), m)
    with pytest.raises(ValueError, match="model: expected 2-D"):
        M.fp_accuracy(fp, nn.Sequential(nn.Identity()))
    with pytest.raises(ValueError, match="model: has no Conv2d or Linear"):
        M.robustness(fp, nn.Sequential(nn.Flatten(), nn.Identity()))
    with pytest.raises(TypeError, match="model: "):
        M.pruned_copies("model")


def test_paper_pruning_schedule_is_global_magnitude():
    """40..80 % in steps of 10, 5 repeats by default (the paper's Table 1), and the mask is
    global: every pruned weight is no larger in magnitude than every kept one, across layers
    (per-layer pruning at the same rate would break this on layers of different scale)."""
    import inspect

    assert M.PRUNE_RATES == (0.4, 0.5, 0.6, 0.7, 0.8)
    assert inspect.signature(M.robustness).parameters["repeats"].default == 5
    assert inspect.signature(M.pruned_copies).parameters["repeats"].default == 5
    m = _mlp()
    with torch.no_grad():
        m[3].weight.mul_(10.0)  # the last layer's weights much larger than the first's
    orig = torch.cat([layer.weight.detach().flatten() for layer in m
                      if isinstance(layer, nn.Linear)]).abs()
    copies = M.pruned_copies(m)
    assert sorted(copies) == list(M.PRUNE_RATES)
    for rate, (c,) in copies.items():
        w = torch.cat([layer.weight.flatten() for layer in c if isinstance(layer, nn.Linear)])
        pruned = w == 0
        assert int(pruned.sum()) == round(rate * w.numel())
        assert orig[pruned].max() <= orig[~pruned].min()
    data = (torch.rand(32, 1, 4, 4), torch.randint(0, 10, (32,)))
    assert all(len(v) == 5 for v in M.pruned_copies(m, rates=(0.4,), data=data).values())


def test_fp_accuracy_takes_fingerprints_and_objects_and_rejects_odd_models():
    from types import SimpleNamespace

    from fastfp import Fingerprint

    m = _mlp()
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = m(x).argmax(1)
    wrong = (y + 1) % 10
    assert M.fp_accuracy(Fingerprint(x, y), m) == 1.0
    assert M.fp_accuracy(SimpleNamespace(inputs=x, labels=wrong), m) == 0.0
    with pytest.raises(TypeError, match="model: expected a classifier returning a logits"):
        M.fp_accuracy((x, y), TupleModel())
    with pytest.raises(ValueError, match="meta device"):
        M.fp_accuracy((x, y), _mlp().to("meta"))
    with pytest.raises(TypeError, match="fp.inputs: expected float"):
        M.fp_accuracy(((x * 255).to(torch.uint8), y), m)
    with pytest.raises(TypeError, match="fp.labels: expected integer"):
        M.fp_accuracy((x, y.float()), m)
    with pytest.raises(ValueError, match="fp.inputs: expected images"):
        M.fp_accuracy((x.flatten(1), y), m)


def test_pruned_copies_validate_seed_data_and_models():
    m = _mlp()
    data = (torch.rand(8, 1, 4, 4), torch.randint(0, 10, (8,)))
    with pytest.raises(ValueError, match="seed: expected an int"):
        M.pruned_copies(m, rates=(0.5,), data=data, seed=-1)
    with pytest.raises(TypeError, match="seed: expected an int"):
        M.pruned_copies(m, rates=(0.5,), data=data, seed=0.5)
    with pytest.raises(TypeError, match="data\\[1\\]: expected integer"):
        M.pruned_copies(m, rates=(0.5,), data=(data[0], data[1].float()))
    with pytest.raises(TypeError, match="data: expected a pair"):
        M.pruned_copies(m, rates=(0.5,), data=data[0])
    with pytest.raises(ValueError, match="meta device"):
        M.pruned_copies(_mlp().to("meta"), rates=(0.5,))
    with pytest.raises(TypeError, match="model: expected a classifier"):
        M.pruned_copies(TupleModel(), rates=(0.5,), data=data)
    with pytest.raises(ValueError, match="y: labels go up to 12"):
        M.pruned_copies(m, rates=(0.5,), data=(data[0], torch.full((8,), 12)))


# --- the one model / label check and the eval-mode guard (fastfp._models) ----------------------

def test_eval_mode_restores_every_submodule_also_on_error():
    from fastfp._models import eval_mode

    m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout())
    m.train()
    m[1].eval()  # a frozen BatchNorm inside a training model comes back frozen
    with eval_mode(m) as same:
        assert same is m and not any(x.training for x in m.modules())
    assert [x.training for x in m.modules()] == [True, True, False, True]
    with pytest.raises(RuntimeError, match="boom"), eval_mode(m):
        raise RuntimeError("boom")
    assert [x.training for x in m.modules()] == [True, True, False, True]

    def blackbox(x):  # a plain callable has no mode: passed through untouched
        return x

    with eval_mode(blackbox) as f:
        assert f is blackbox


def test_model_and_label_checks_name_the_argument():
    from fastfp._models import check_labels, check_model

    with pytest.raises(TypeError, match="suspect: expected a torch.nn.Module"):
        check_model(lambda x: x, "suspect")
    with pytest.raises(ValueError, match="model: has tensors on the meta device"):
        check_model(nn.Linear(2, 2, device="meta"))
    y = torch.tensor([0, 3, 9])
    assert check_labels(y, n=3, num_classes=10) is y
    with pytest.raises(ValueError, match=r"y: expected class indices in \[0, 8\]"):
        check_labels(y, "y", num_classes=9)
    with pytest.raises(ValueError, match="y: expected non-negative"):
        check_labels(torch.tensor([-1]), "y")
    with pytest.raises(ValueError, match=r"y: expected shape \(2,\)"):
        check_labels(y, "y", n=2)
    with pytest.raises(TypeError, match="y: expected integer class indices"):
        check_labels(y.float(), "y")
