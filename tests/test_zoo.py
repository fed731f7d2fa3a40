"""The embedded zoo: data, determinism, the recipe-keyed cache, and the timm/torchvision loader."""

import pytest
import torch

from fastfp import zoo


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # One cache per test session, shared by the zoo/variants/metrics/demo tests (trained once).
    monkeypatch.setenv("FASTFP_CACHE", str(tmp_path_factory.getbasetemp() / "fastfp-cache"))


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_digits_split_is_fixed_and_in_range():
    d = zoo.digits()
    assert d.x_train.shape[1:] == (1, 32, 32) and d.x_test.shape == (500, 1, 32, 32)
    assert len(d.x_train) + len(d.x_test) == 1797
    assert d.x_train.dtype == torch.float32 and 0 <= d.x_train.min() and d.x_train.max() <= 1
    assert set(d.y_test.tolist()) == set(range(10))
    # disjoint: no test image equals a training image exactly
    tr = {bytes(v.numpy().tobytes()) for v in d.x_train}
    assert not any(bytes(v.numpy().tobytes()) in tr for v in d.x_test[:50])


def test_benign_inputs_deterministic_and_bounded():
    x1, y1 = zoo.benign_inputs(64, seed=3)
    x2, y2 = zoo.benign_inputs(64, seed=3)
    x3, _ = zoo.benign_inputs(64, seed=4)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    assert x1.shape == (64, 1, 32, 32) and 0 <= x1.min() and x1.max() <= 1
    with pytest.raises(ValueError, match="n: expected an int"):
        zoo.benign_inputs(0)
    with pytest.raises(ValueError, match="seed: expected an int"):
        zoo.benign_inputs(4, seed=-1)


def test_names_and_bad_names():
    assert "cnn-s0" in zoo.names() and len(zoo.names()) >= 15
    assert len(set(n.rpartition("-s")[0] for n in zoo.names())) >= 5
    for bad in ("nope-s0", "cnn", "cnn-sx"):
        with pytest.raises(ValueError, match="unknown zoo model"):
            zoo.load(bad)
    with pytest.raises(TypeError):
        zoo.load(3)
    with pytest.raises(ValueError, match="model_names: "):
        zoo.default_zoo([])


def test_accuracy_checks_its_arguments():
    m = zoo.build("mlp")
    x, y = zoo.benign_inputs(8, seed=1)
    assert 0.0 <= zoo.accuracy(m, x, y, batch_size=3) <= 1.0
    with pytest.raises(TypeError, match="x: expected float"):
        zoo.accuracy(m, (x * 255).to(torch.uint8), y)
    with pytest.raises(ValueError, match="y: expected shape"):
        zoo.accuracy(m, x, y[:3])
    with pytest.raises(ValueError, match="has tensors on the meta device"):
        zoo.accuracy(zoo.build("mlp").to("meta"), x, y)
    with pytest.raises(ValueError, match="batch_size: expected an int"):
        zoo.accuracy(m, x, y, batch_size=0)


def test_every_architecture_runs_on_the_input_shape():
    for arch in zoo.ARCHITECTURES:
        out = zoo.build(arch)(torch.rand(2, *zoo.INPUT_SHAPE))
        assert out.shape == (2, zoo.NUM_CLASSES)


@pytest.mark.slow  # trains zoo models on CPU
def test_training_is_deterministic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFP_CACHE", str(tmp_path / "a"))
    m1 = zoo.load("mlp-s1")
    files = list((tmp_path / "a" / "zoo").glob("mlp-s1-*.safetensors"))
    assert len(files) == 1
    monkeypatch.setenv("FASTFP_CACHE", str(tmp_path / "b"))
    m2 = zoo.load("mlp-s1")  # retrained from scratch in another cache
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    d = zoo.digits()
    assert zoo.accuracy(m1, d.x_test, d.y_test) > 0.85  # it did learn the digits
    # a second load reads the cache (no training): same weights, and train=False works
    m3 = zoo.load("mlp-s1", train=False)
    assert _same_weights(m2, m3)


@pytest.mark.slow  # trains zoo models on CPU
def test_corrupt_or_foreign_cache_entry_retrains(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFP_CACHE", str(tmp_path))
    good = zoo.load("mlp-s0")
    path = next((tmp_path / "zoo").glob("mlp-s0-*.safetensors"))
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # a flipped bit in the last weight
    with pytest.raises(FileNotFoundError):
        zoo.load("mlp-s0", train=False)  # the checksum rejects it: never silently other weights
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(FileNotFoundError):
        zoo.load("mlp-s0", train=False)  # unreadable entry is never used
    again = zoo.load("mlp-s0")
    assert _same_weights(good, again)
    # a well-formed file holding another model's weights under this name: rejected too
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in zoo.build("cnn").state_dict().items()}, str(path),
              metadata={"recipe_hash": zoo.recipe_hash("mlp", 0)})
    with pytest.raises(FileNotFoundError):
        zoo.load("mlp-s0", train=False)


def test_changed_recipe_changes_the_key(monkeypatch):
    h = zoo.recipe_hash("cnn", 0)
    assert h != zoo.recipe_hash("cnn", 1) and h != zoo.recipe_hash("widecnn", 0)
    cls, kw, epochs = zoo.ARCHITECTURES["cnn"]
    monkeypatch.setitem(zoo.ARCHITECTURES, "cnn", (cls, kw, epochs + 1))
    assert zoo.recipe_hash("cnn", 0) != h
    monkeypatch.setattr(zoo, "LR", zoo.LR * 2)
    monkeypatch.setitem(zoo.ARCHITECTURES, "cnn", (cls, kw, epochs))
    assert zoo.recipe_hash("cnn", 0) != h


@pytest.mark.slow  # trains zoo models on CPU
def test_zoo_models_disagree_on_benign_inputs():
    a, b = zoo.load("cnn-s0"), zoo.load("mlp-s0")
    x, y = zoo.benign_inputs(400)
    with torch.no_grad():
        pa, pb = a(x).argmax(1), b(x).argmax(1)
    disagree = (pa != pb).float().mean().item()
    assert disagree > 0.1, disagree
    for p in (pa, pb):
        acc = (p == y).float().mean().item()
        assert 0.3 < acc < 0.95, acc  # hard, yet far above chance (0.1)


@pytest.mark.slow
def test_load_arch_torchvision_and_weights(tmp_path):
    pytest.importorskip("torchvision")
    m = zoo.load_arch("resnet18", num_classes=7)
    assert m.fc.out_features == 7 and not m.training
    from safetensors.torch import save_file

    good = tmp_path / "good.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(good))
    m2 = zoo.load_arch("resnet18", good, num_classes=7)
    assert _same_weights(m, m2)
    pt = tmp_path / "w.pt"
    torch.save(m.state_dict(), pt)
    zoo.load_arch("resnet18", pt, num_classes=7)
    with pytest.raises(ValueError, match="does not match"):
        zoo.load_arch("resnet18", good)  # 1000-class head vs 7-class weights
    with pytest.raises(ValueError, match="does not match"):
        zoo.load_arch("resnet34", good, num_classes=7)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read"):
        zoo.load_arch("resnet18", bad)
    with pytest.raises(FileNotFoundError):
        zoo.load_arch("resnet18", tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="unknown architecture"):
        zoo.load_arch("no_such_net")


def test_load_arch_random_init_is_seeded():
    pytest.importorskip("timm")
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = zoo.load_arch("mobilenetv3_small_050", num_classes=10, seed=7, source="timm")
    assert torch.equal(torch.rand(3), before)  # the caller's RNG is left as it was
    b = zoo.load_arch("mobilenetv3_small_050", num_classes=10, seed=7, source="timm")
    c = zoo.load_arch("mobilenetv3_small_050", num_classes=10, seed=8, source="timm")
    assert a.get_classifier().out_features == 10
    assert _same_weights(a, b) and not _same_weights(a, c)
    with pytest.raises(ValueError, match="seed: "):
        zoo.load_arch("mobilenetv3_small_050", seed=-1)


def test_load_arch_refuses_torchscript_weights(tmp_path):
    pytest.importorskip("torchvision")
    path = tmp_path / "w.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))  # a TorchScript archive runs code
    with pytest.raises(ValueError, match="cannot read .* as a state dict"):
        zoo.load_arch("resnet18", path)


def test_load_arch_timm_message_when_missing():
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="timm is not installed"):
            zoo.load_arch("resnet18", source="timm")
    else:
        m = zoo.load_arch("resnet18", source="timm", num_classes=3)
        assert m(torch.rand(1, 3, 64, 64)).shape == (1, 3)


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs FIFOs")
def test_load_arch_refuses_a_weights_fifo(tmp_path):
    import os

    pytest.importorskip("torchvision")
    fifo = tmp_path / "w.safetensors"
    os.mkfifo(fifo)  # reading it would block forever
    with pytest.raises(ValueError, match="weights: .* FIFO, not a regular file"):
        zoo.load_arch("resnet18", fifo)
