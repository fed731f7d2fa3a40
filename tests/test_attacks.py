"""torchattacks-style adapters: same results as generate, images or noise as the start."""

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
