"""torchattacks-style adapters: same results as generate, images or noise as the start."""

import numpy as np
import pytest
import torch
from helpers import METHODS, digits_cnn, tiny_cnn

import fastfp
from fastfp import attacks, cexamples


@pytest.mark.parametrize("method", METHODS)
def test_adapter_from_noise_equals_generate(method):
    model = tiny_cnn()
    fp = cexamples.generate(model, 3, (1, 8, 8), 5, method=method, steps=5, q=2, seed=4,
                            progress=False)
    atk = attacks.ATTACKS[method](model, input_shape=(1, 8, 8), steps=5, q=2, seed=4)
    x = atk(None, fp.labels)
    assert isinstance(x, torch.Tensor) and x.shape == (3, 1, 8, 8)
    torch.testing.assert_close(x, fp.inputs, atol=1e-6, rtol=0)
    assert isinstance(atk.fingerprint, fastfp.Fingerprint)
    assert atk.fingerprint.meta["method"] == method and atk.fingerprint.meta["start"] == "uniform"
    assert method.upper() in repr(atk).upper() or type(atk).__name__ in repr(atk)


def test_adapter_from_images_reaches_targets():
    model, _ = digits_cnn()
    images = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(1)).double()
    targets = torch.tensor([1, 2, 3, 4, 5, 6])
    x = attacks.LTRC(model, steps=40, q=3)(images, targets)
    assert x.dtype == torch.float64  # the caller's dtype comes back
    with torch.no_grad():
        assert torch.equal(model(x.float()).argmax(1), targets)
    assert float((x - images).abs().max()) > 0


@pytest.mark.parametrize("method", ["vanilla", "rcgm"])
def test_adapter_starts_from_the_given_images(method):
    """Each step moves a pixel by at most alpha (the clip only brings it closer), so after S
    steps the result lies within S * alpha of its start: of the given images, not of noise."""
    model = tiny_cnn()
    images = torch.full((4, 1, 8, 8), 0.5)
    images[:, :, ::2] = 0.25  # a pattern uniform noise does not have
    targets = torch.tensor([0, 1, 2, 3])
    steps, alpha = 4, 0.01
    atk = attacks.ATTACKS[method](model, steps=steps, alpha=alpha, q=2, eta=0.0)
    x = atk(images, targets)
    assert float((x - images).abs().max()) <= steps * alpha + 1e-6
    assert float((x - images).abs().max()) > 0
    expect = cexamples.generate(model, 4, (1, 8, 8), 5, method=method, steps=steps, alpha=alpha,
                                q=2, eta=0.0, x0=images, labels=targets, progress=False)
    torch.testing.assert_close(x, expect.inputs, atol=0, rtol=0)
    assert atk.fingerprint.meta["start"] == "given"


@pytest.mark.parametrize("build, call, exc, name", [
    (dict(), (None, torch.tensor([0, 1])), ValueError, "images"),
    (dict(input_shape=(1, 8, 8)), (None, [0, 1]), TypeError, "labels"),
    (dict(input_shape=(1, 8, 8)), (None, torch.tensor([0, 7])), ValueError, "labels"),
    (dict(input_shape=(1, 8, 8)), (None, torch.zeros(2, 2, dtype=torch.int64)), ValueError,
     "labels"),
    (dict(), (torch.rand(2, 1, 8, 8) * 2, torch.tensor([0, 1])), ValueError, "images"),
    (dict(), (torch.rand(3, 1, 8, 8), torch.tensor([0, 1])), ValueError, "labels"),
    (dict(), (torch.rand(1, 8, 8), torch.tensor([0])), ValueError, "images"),
    (dict(input_shape=(1, 8, 9)), (torch.rand(1, 1, 8, 8), torch.tensor([0])), ValueError,
     "images"),
    (dict(), (torch.full((2, 1, 8, 8), float("nan")), torch.tensor([0, 1])), ValueError, "images"),
])
def test_adapter_bad_calls(build, call, exc, name):
    atk = attacks.RCGM(tiny_cnn(), steps=2, **build)
    with pytest.raises(exc, match=f"^{name}: "):
        atk(*call)


def test_adapter_bad_construction():
    with pytest.raises(TypeError, match="^model: expected"):
        attacks.LTRC(object())
    with pytest.raises(ValueError, match="q: expected an int"):
        attacks.LTRC(tiny_cnn(), q=0)
    with pytest.raises(ValueError, match="delta: method 'vanilla'"):
        attacks.Vanilla(tiny_cnn(), delta=0.5)
    with pytest.raises(ValueError, match="^input_shape: expected 3 dims"):
        attacks.RC(tiny_cnn(), input_shape=(8, 8))
    with pytest.raises(TypeError, match="^graphs: expected"):
        attacks.RC(tiny_cnn(), graphs="yes")


# ----------------------------------------------------------------------------- torchattacks

torchattacks = pytest.importorskip("torchattacks")


def test_adapters_are_torchattacks_attacks():
    model = tiny_cnn()
    for cls in attacks.ATTACKS.values():
        atk = cls(model, steps=2)
        assert isinstance(atk, torchattacks.attack.Attack)
        assert atk.targeted and atk.get_mode() == "targeted(label)"
        assert atk.device == torch.device("cpu")


def test_vanilla_is_targeted_pgd_without_projection():
    """C-examples from given images are torchattacks' targeted PGD with eps = 1 (no projection
    ball) and no random start: the same method, the same examples."""
    model, _ = digits_cnn()
    images = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    targets = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    steps, alpha = 10, 0.02
    pgd = torchattacks.PGD(model, eps=1.0, alpha=alpha, steps=steps, random_start=False)
    pgd.set_mode_targeted_by_label(quiet=True)
    expect = pgd(images, targets)
    got = attacks.Vanilla(model, steps=steps, alpha=alpha, eta=0)(images, targets)
    # PGD writes x0 + clamp(x - x0, -eps, eps): the same value up to one rounding of the sum
    torch.testing.assert_close(got, expect, atol=1e-6, rtol=0)
    assert float((got - images).abs().max()) > 0.1


def test_default_mode_refuses_instead_of_driving_toward_true_labels():
    atk = attacks.LTRC(tiny_cnn(), steps=2)
    atk.set_mode_default()
    with pytest.raises(ValueError, match="mode: LTRC drives inputs toward target labels"):
        atk(torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))


def test_random_targets_and_normalization_used():
    model, _ = digits_cnn()
    images = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    truth = torch.tensor([0, 1, 2, 3, 4, 5])
    atk = attacks.RCGM(model, steps=40, q=2)
    atk.set_normalization_used(mean=[0.3], std=[0.5])
    atk.set_mode_targeted_random(quiet=True)
    # with normalisation on, torchattacks takes and returns normalised tensors
    x = atk((images - 0.3) / 0.5, truth) * 0.5 + 0.3
    fp = atk.fingerprint
    assert fp.meta["normalize"] == [[pytest.approx(0.3)], [0.5]]
    assert not bool((fp.labels == truth).any())  # random targets differ from the true labels
    torch.testing.assert_close(x, fp.inputs, atol=1e-5, rtol=0)
    assert cexamples.verify(model, fp) == 1.0  # verify applies the recorded normalisation


def test_save_and_multiattack(tmp_path):
    model = tiny_cnn()
    data = torch.utils.data.TensorDataset(torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4, 0]))
    loader = torch.utils.data.DataLoader(data, batch_size=3)
    atk = attacks.RC(model, steps=3)
    atk.save(loader, save_path=str(tmp_path / "adv.pt"), verbose=False)
    saved = torch.load(tmp_path / "adv.pt", weights_only=True)
    assert saved["adv_inputs"].shape == (6, 1, 8, 8)
    multi = torchattacks.MultiAttack([attacks.Vanilla(model, steps=2),
                                      attacks.LTRC(model, steps=2)])
    out = multi(torch.rand(3, 1, 8, 8), torch.tensor([1, 2, 3]))
    assert out.shape == (3, 1, 8, 8)


# ----------------------------------------------------------------------------- ART

def test_art_evasion_attack_keeps_the_estimators_conventions():
    art = pytest.importorskip("art")
    from art.estimators.classification import PyTorchClassifier

    from fastfp.attacks.art import CharacteristicExamples

    model, _ = digits_cnn()
    mean, std = 0.1, 0.9  # the estimator standardises its [0, 255] inputs
    class ChannelsLast(torch.nn.Module):  # the estimator's model takes (N, H, W, C) in [0, 255]
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            return self.net(x.permute(0, 3, 1, 2) / 255.0)

    net = ChannelsLast()
    clf = PyTorchClassifier(net, torch.nn.CrossEntropyLoss(), input_shape=(32, 32, 1),
                            nb_classes=10, clip_values=(0, 255), channels_first=False,
                            preprocessing=(mean * 255, std))
    assert isinstance(CharacteristicExamples(clf), art.attacks.EvasionAttack)
    atk = CharacteristicExamples(clf, method="ltrc", steps=60, q=2)
    start = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 1)).astype(np.float32)
    targets = np.eye(10, dtype=np.float32)[[1, 3, 5, 7, 9]]  # one-hot, as ART passes them
    x = atk.generate(start, targets)
    assert isinstance(x, np.ndarray) and x.shape == start.shape
    assert x.min() >= 0 and x.max() <= 255
    assert (clf.predict(x).argmax(1) == [1, 3, 5, 7, 9]).all()  # through ART's own pipeline
    with pytest.raises(TypeError, match="estimator: expected an art PyTorchClassifier"):
        CharacteristicExamples(model)
