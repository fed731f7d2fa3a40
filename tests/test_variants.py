"""Variants: each procedure against an outside oracle or a literal twin; the source stays intact."""

import io

import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import TupleModel

from fastfp import variants as V
from fastfp import zoo
from fastfp._training import prunable


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FASTFP_CACHE", str(tmp_path_factory.getbasetemp() / "fastfp-cache"))


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10)).eval()


def _snapshot(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def _images(n=5, c=1, h=13, w=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g) ** 2


@pytest.mark.slow
def test_every_variant_is_a_model_and_leaves_the_source_alone():
    m = _net()
    before = _snapshot(m)
    x = _images(4, h=16, w=16)
    data = (torch.rand(20, 1, 16, 16), torch.randint(0, 10, (20,)))
    specs = V.catalog(quick=True, smoothing_n=4)
    assert {s.kind for s in specs} == set(V.KINDS)
    vs = V.make_variants(m, specs, data)
    assert len(vs) == len(specs)
    for name, v in vs.items():
        assert isinstance(v, nn.Module), name
        out = v(x)
        assert out.shape == (4, 10) and out.dtype == torch.float32, name
    after = _snapshot(m)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not m.training


def test_full_catalog_has_the_papers_parameters():
    names = [s.name for s in V.catalog()]
    assert len(names) == len(set(names))
    assert [s.param for s in V.catalog() if s.kind == "jpeg"] == [30, 40, 50, 60, 70, 80, 90]
    assert [s.param for s in V.catalog() if s.kind == "posterize"] == [3, 4, 5, 6, 7]
    assert [s.param for s in V.catalog() if s.kind == "prune_all"] == [0.01, 0.02, 0.03, 0.04]
    assert [s.param for s in V.catalog() if s.kind == "prune_filters"] == [0.1, 0.2, 0.3]
    assert [s.param for s in V.catalog() if s.kind == "prune_last"] == [0.7, 0.8, 0.9, 0.95]
    assert [s.param for s in V.catalog() if s.kind == "prune_global"] == [0.4, 0.5, 0.6, 0.7, 0.8]
    assert len(V.catalog(with_global=False)) == 2 + 7 + 1 + 5 + 6 + 4 + 4 + 3 + 4
    two = V.catalog(per_range=2)
    assert [s.param for s in two if s.kind == "jpeg"] == [30, 90]
    assert [s.param for s in two if s.kind == "prune_filters"] == [0.1, 0.3]
    assert [s.param for s in V.catalog(quick=True) if s.kind == "posterize"] == [3, 5, 7]
    with pytest.raises(ValueError, match="per_range: "):
        V.catalog(per_range=4)


def test_posterize_and_equalize_match_torchvision():
    TF = pytest.importorskip("torchvision.transforms.functional")
    for c, h, w in ((1, 1, 1), (1, 7, 9), (3, 13, 11)):
        x = _images(3, c, h, w, seed=h)
        u = (x * 255).round().to(torch.uint8)
        for bits in (1, 3, 5, 7, 8):
            assert torch.equal(V.posterize(x, bits), TF.posterize(u, bits).float() / 255)
        if h > 1:
            assert torch.equal(V.equalize(x), TF.equalize(u).float() / 255)


def test_jpeg_matches_a_direct_pil_round_trip_and_quality_matters():
    from PIL import Image

    x = _images(3, 1, 24, 20)
    for q in (30, 90):
        out = V.jpeg(x, q)
        for i in range(3):
            a = (x[i, 0] * 255).round().to(torch.uint8).numpy()
            buf = io.BytesIO()
            Image.fromarray(a, mode="L").save(buf, format="JPEG", quality=q)
            ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / 255
            assert np.array_equal(out[i, 0].numpy(), ref)
    err30 = (V.jpeg(x, 30) - x).abs().mean()
    err90 = (V.jpeg(x, 90) - x).abs().mean()
    assert 0 < err90 < err30
    rgb = V.jpeg(_images(2, 3, 16, 16), 50)
    assert rgb.shape == (2, 3, 16, 16) and 0 <= rgb.min() and rgb.max() <= 1


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="quality: "):
        V.jpeg(_images(), 0)
    with pytest.raises(ValueError, match="bits: "):
        V.posterize(_images(), 9)
    with pytest.raises(ValueError, match="x: expected images"):
        V.equalize(torch.rand(2, 2, 8, 8))
    with pytest.raises(TypeError, match="x: expected float"):
        V.jpeg(torch.zeros(2, 1, 8, 8, dtype=torch.int64), 50)
    with pytest.raises(ValueError, match="data: "):
        V.make_variants(_net(), [V.Spec("finetune_all", 1)])
    with pytest.raises(ValueError, match="specs: unknown variant kind"):
        V.make_variants(_net(), [V.Spec("blur", 1)])
    with pytest.raises(TypeError, match="model: "):
        V.make_variants("model")
    with pytest.raises(ValueError, match="rate: "):
        V.prune_global(_net(), 1.5)
    with pytest.raises(ValueError, match="sigma: "):
        V.RandomizedSmoothing(_net(), -1.0)


def _weights(m):
    return [layer.weight.detach() for layer in prunable(m)]


def test_global_pruning_is_literal_magnitude_pruning():
    m = _net()
    for rate in (0.0, 0.4, 0.73, 1.0):
        p = V.prune_global(m, rate)
        flat = torch.cat([w.abs().flatten() for w in _weights(m)])
        k = round(rate * flat.numel())
        # literal twin: the k smallest |w| over all layers are zero, the rest unchanged
        order = torch.argsort(flat, stable=True)
        keep = torch.ones_like(flat, dtype=torch.bool)
        keep[order[:k]] = False
        pruned = torch.cat([w.flatten() for w in _weights(p)])
        orig = torch.cat([w.flatten() for w in _weights(m)])
        assert int((pruned == 0).sum()) == k
        assert torch.equal(pruned[keep], orig[keep])


def test_layerwise_filter_and_last_layer_pruning():
    m = _net()
    for amount in (0.02, 0.5):
        p = V.prune_all(m, amount)
        for w0, w in zip(_weights(m), _weights(p), strict=True):
            k = round(amount * w0.numel())
            assert int((w == 0).sum()) == k
            if k:
                a, zero = w0.abs().flatten(), w.flatten() == 0
                assert a[zero].max() <= a[~zero].min()
    p = V.prune_filters(m, 0.5)
    for layer0, layer in zip(m.modules(), p.modules(), strict=True):
        if isinstance(layer, nn.Conv2d):
            norms = layer0.weight.abs().sum(dim=(1, 2, 3))
            zero = (layer.weight == 0).flatten(1).all(1)
            assert int(zero.sum()) == round(0.5 * layer.out_channels)
            assert norms[zero].max() <= norms[~zero].min()
    p = V.prune_last(m, 0.9)
    ws0, ws = _weights(m), _weights(p)
    assert all(torch.equal(a, b) for a, b in zip(ws0[:-1], ws[:-1], strict=True))
    assert int((ws[-1] == 0).sum()) == round(0.9 * ws0[-1].numel())


def test_half_and_smoothing():
    m = _net()
    x = _images(6, h=16, w=16)
    half = V.HalfPrecision(m)
    with torch.no_grad():
        ref = m(x)
        h = half(x)
    assert h.dtype == torch.float32 and next(half.model.parameters()).dtype == torch.float16
    # It really ran in float16: the outputs are float16 values and differ from float32's ...
    assert torch.equal(h, h.half().float()) and not torch.equal(h, ref)
    # ... by a few float16 rounding steps (unit roundoff 2**-11) at the logits' scale, no more.
    assert (h - ref).abs().max() <= 8 * 2.0**-11 * ref.abs().max()
    assert next(m.parameters()).dtype == torch.float32
    s0 = V.RandomizedSmoothing(m, 0.0, n=3)(x)  # no noise: every vote agrees with the base model
    assert torch.equal(s0.argmax(1), ref.argmax(1)) and torch.all(s0.max(1).values == 1)
    torch.manual_seed(5)  # not 0: _images draws from seed 0, the weights would copy the inputs
    lin = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))  # noise moves its decisions around
    s = V.RandomizedSmoothing(lin, 0.5, n=50, seed=1, chunk=64)
    a, b = s(x), s(x)
    assert torch.equal(a, b) and torch.allclose(a.sum(1), torch.ones(6))
    assert (a.max(1).values < 1).any()  # votes split
    assert not torch.equal(a, V.RandomizedSmoothing(lin, 0.5, n=50, seed=2)(x))
    # chunking: still n votes per input
    assert torch.allclose((V.RandomizedSmoothing(lin, 0.5, n=50, seed=1, chunk=7)(x) * 50).sum(1),
                          torch.full((6,), 50.0))


def test_finetuning_last_layer_only_and_deterministic():
    m = _net()
    data = (torch.rand(40, 1, 12, 12), torch.randint(0, 10, (40,)))
    before = _snapshot(m)
    last = V.finetune(m, data, layers="last", epochs=2, lr=0.1, seed=0)
    w0, w = _weights(m), _weights(last)
    assert all(torch.equal(a, b) for a, b in zip(w0[:-1], w[:-1], strict=True))
    assert not torch.equal(w0[-1], w[-1])
    sd = last.state_dict()
    assert torch.equal(sd["1.running_mean"], before["1.running_mean"])  # frozen BN stays frozen
    a1 = V.finetune(m, data, layers="all", epochs=1, seed=3)
    a2 = V.finetune(m, data, layers="all", epochs=1, seed=3)
    assert all(torch.equal(x, y) for x, y in
               zip(a1.state_dict().values(), a2.state_dict().values(), strict=True))
    assert not torch.equal(_weights(a1)[0], w0[0])
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert all(p.requires_grad for p in last.parameters())


@pytest.mark.slow  # trains zoo models on CPU
def test_accuracy_filter_on_a_zoo_model():
    m = zoo.load("mlp-s0")
    d = zoo.digits()
    vs = V.make_variants(m, [V.Spec("identity"), V.Spec("posterize", 5), V.Spec("prune_last", 1.0)])
    with pytest.warns(DeprecationWarning, match="fastfp.fbi.protocol.accuracy_filter"):
        kept, accs = V.accuracy_filter(m, vs, d.x_test, d.y_test)
    assert set(kept) == {"identity", "posterize:5"}
    assert accs["identity"] == accs[None] > 0.85
    assert accs["prune_last:1.0"] < accs[None] - 0.15
    with pytest.raises(ValueError, match="max_drop: "), pytest.warns(DeprecationWarning):
        V.accuracy_filter(m, vs, d.x_test, d.y_test, max_drop=2)


class _Constant(nn.Module):
    """Right on the first ``right`` of 100 inputs (labels 0), wrong (class 1) on the others."""

    def __init__(self, right: int) -> None:
        super().__init__()
        self.right = right
        self.dummy = nn.Linear(1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = torch.arange(x.shape[0]) + int(x[0, 0, 0, 0].round())
        return torch.nn.functional.one_hot((idx >= self.right).long(), 2).float()


def test_deprecated_accuracy_filter_applies_the_relative_rule_of_eq_1():
    # base 50 % right: 40 % is within 15 points but a 20 % relative loss -> dropped (eq. 1)
    x = torch.zeros(100, 1, 2, 2)
    y = torch.zeros(100, dtype=torch.long)
    vs = {"v40": _Constant(40), "v45": _Constant(45)}
    with pytest.warns(DeprecationWarning):
        kept, accs = V.accuracy_filter(_Constant(50), vs, x, y)
    assert accs == {None: 0.5, "v40": 0.4, "v45": 0.45}
    assert set(kept) == {"v45"}


def test_errors_from_inside_torch_name_the_argument():
    data = (torch.rand(8, 1, 4, 4), torch.randint(0, 10, (8,)))
    with pytest.raises(ValueError, match="model: has tensors on the meta device"):
        V.make_variants(_net().to("meta"), [V.Spec("identity")])
    with pytest.raises(ValueError, match="model: has tensors on the meta device"):
        V.prune_global(_net().to("meta"), 0.5)
    with pytest.raises(TypeError, match="model: expected a classifier returning 2-D"):
        V.finetune(TupleModel(), data)
    with pytest.raises(TypeError, match="model: expected a classifier returning 2-D"):
        V.RandomizedSmoothing(TupleModel(), 0.1, n=2)(data[0])
    with pytest.raises(TypeError, match="x: expected float"):
        V.RandomizedSmoothing(_net(), 0.1, n=2)(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(TypeError, match="data\\[1\\]: expected integer"):
        V.finetune(_net(), (data[0], data[1].float()))
    with pytest.raises(ValueError, match="y: labels go up to 10"):
        V.finetune(_net(), (torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 10])))
    with pytest.raises(ValueError, match="seed: expected an int"):
        V.finetune(_net(), data, seed=-2)
    with pytest.raises(TypeError, match="seed: expected an int"):
        V.RandomizedSmoothing(_net(), 0.1, seed="0")
    with pytest.raises(ValueError, match="model: has no Conv2d or Linear"):
        V.finetune(nn.Sequential(nn.Flatten()), data, layers="last")
