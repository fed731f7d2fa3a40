"""The CPU fast paths used inside fastfp's gradient loops: max-pool bit for bit PyTorch's op,
the small-input convolution's input gradient equal to PyTorch's up to summation order."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fastfp
from fastfp import _cpu_layers

pytestmark = pytest.mark.skipif(not _cpu_layers.available(), reason="extension without the CPU layer kernels")


def aten_pool(x, k):
    return torch.ops.aten.max_pool2d_with_indices(x, [k, k], [k, k])


def ext_pool(x, k):
    n, c, h, w = x.shape
    out = torch.empty(n, c, h // k, w // k)
    idx = torch.empty(out.shape, dtype=torch.int64)
    assert fastfp.backend.extension().max_pool2d_cpu(x, out, idx, k, k)
    return out, idx


def inputs(kind, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "ties":  # few distinct values: many windows with several maxima
        return torch.randint(-2, 2, shape, generator=g).float()
    x = torch.randn(shape, generator=g)
    if kind == "special":
        flat = x.view(-1)
        pick = torch.randperm(flat.numel(), generator=g)
        flat[pick[: flat.numel() // 7]] = float("nan")
        flat[pick[flat.numel() // 7: flat.numel() // 4]] = float("-inf")
        flat[pick[flat.numel() // 4: flat.numel() // 3]] = float("inf")
    return x


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 1, 7, 9), (3, 2, 4, 13), (2, 5, 12, 4), (1, 2, 33, 31)])
@pytest.mark.parametrize("kind", ["normal", "ties", "special"])
def test_kernel_gives_pytorchs_values_and_indices(k, shape, kind):
    x = inputs(kind, shape, seed=k)
    if x.shape[2] < k or x.shape[3] < k:
        pytest.skip("window larger than the image")
    out, idx = ext_pool(x, k)
    ref_out, ref_idx = aten_pool(x, k)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(idx, ref_idx)


class Spy:
    def __init__(self, monkeypatch, fn=None):
        fn = fn or _cpu_layers._MaxPool
        self.calls = 0
        real = fn.apply

        def counted(*args):
            self.calls += 1
            return real(*args)

        monkeypatch.setattr(fn, "apply", counted)


def pool_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3), nn.Flatten(),
                         nn.Linear(8 * 3 * 3, 5)).eval()


def input_grad(model, x, y):
    xg = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(xg), y, reduction="sum")
    return loss.detach(), torch.autograd.grad(loss, xg)[0]


def test_routed_model_gives_pytorchs_loss_and_input_gradient(monkeypatch):
    # frozen weights: a convolution whose weight wants a gradient stays PyTorch's (below)
    model, spy = pool_cnn().requires_grad_(False), Spy(monkeypatch)
    conv = Spy(monkeypatch, _cpu_layers._ConvSmallInput)
    x = inputs("ties", (4, 1, 19, 20)) / 4 + torch.rand(4, 1, 19, 20) * 0.01
    y = torch.tensor([0, 1, 2, 3])
    ref = input_grad(model, x, y)
    with _cpu_layers.enabled("cpu"):
        got = input_grad(model, x, y)
    assert spy.calls == 2 and conv.calls == 1  # both pools, the 1-channel first convolution
    assert torch.equal(got[0], ref[0])  # the forward is PyTorch's, bit for bit
    torch.testing.assert_close(got[1], ref[1], rtol=1e-5, atol=1e-6 * ref[1].abs().max().item())
    monkeypatch.setattr(_cpu_layers, "MAX_CONV_IN_CHANNELS", 0)  # the pools alone: bit for bit
    with _cpu_layers.enabled("cpu"):
        assert torch.equal(input_grad(model, x, y)[1], ref[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ci,co,k,pad,size", [(1, 16, 3, 1, (32, 32)), (3, 8, 5, 2, (9, 7)),
                                              (2, 5, 1, 0, (6, 11)), (4, 3, 3, 0, (5, 5)),
                                              (1, 4, 3, 2, (3, 4)), (3, 6, (3, 1), (1, 0), (8, 6))])
def test_conv_input_gradient_matches_pytorch(monkeypatch, dtype, ci, co, k, pad, size):
    torch.manual_seed(ci * 10 + co)
    conv = nn.Conv2d(ci, co, k, padding=pad).to(dtype).requires_grad_(False)
    x = torch.randn(3, ci, *size, dtype=dtype)
    g = torch.randn_like(conv(x))
    xg = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(conv(xg), xg, g)
    spy = Spy(monkeypatch, _cpu_layers._ConvSmallInput)
    with _cpu_layers.enabled("cpu"):
        out = conv(xg)
        (got,) = torch.autograd.grad(out, xg, g)
    assert spy.calls == 1 and torch.equal(out, conv(x))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol * ref.abs().max().item())
    twin = _cpu_layers.conv_input_grad(g, conv.weight, size, _cpu_layers._pair(pad))
    torch.testing.assert_close(twin, ref, rtol=tol, atol=tol * ref.abs().max().item())


@pytest.mark.parametrize("call", [
    lambda x, w: F.conv2d(x, w, stride=2),
    lambda x, w: F.conv2d(x, w, dilation=2),
    lambda x, w: F.conv2d(x, w.requires_grad_(True)),
    lambda x, w: F.conv2d(torch.cat([x, x, x[:, :1]], 1), torch.cat([w, w, w[:, :1]], 1)),
    lambda x, w: F.conv2d(x.contiguous(memory_format=torch.channels_last), w),
    lambda x, w: F.conv2d(x.detach(), w),
    lambda x, w: F.conv2d(x, w, padding="same"),
], ids=["stride", "dilation", "weight-grad", "5-channels", "channels_last", "no-input-grad", "same"])
def test_other_convolutions_run_pytorchs_op(monkeypatch, call):
    spy = Spy(monkeypatch, _cpu_layers._ConvSmallInput)
    x = torch.randn(2, 2, 9, 9).requires_grad_(True)
    w = torch.randn(4, 2, 3, 3)
    with _cpu_layers.enabled("cpu"):
        got = call(x, w.clone())
    assert spy.calls == 0
    torch.testing.assert_close(got, call(x, w.clone()), rtol=0, atol=0)


def test_return_indices_and_torch_max_pool2d(monkeypatch):
    spy, x = Spy(monkeypatch), inputs("ties", (2, 3, 8, 10))
    with _cpu_layers.enabled("cpu"):
        out, idx = F.max_pool2d(x, kernel_size=(2, 2), stride=2, return_indices=True)
        plain = torch.max_pool2d(x, [2, 2])
    ref_out, ref_idx = aten_pool(x, 2)
    assert spy.calls == 2
    assert torch.equal(out, ref_out) and torch.equal(idx, ref_idx) and torch.equal(plain, ref_out)


@pytest.mark.parametrize("call", [
    lambda x: F.max_pool2d(x, 2, padding=1),
    lambda x: F.max_pool2d(x, 3, stride=2),
    lambda x: F.max_pool2d(x, 2, dilation=2),
    lambda x: F.max_pool2d(x, 2, ceil_mode=True),
    lambda x: F.max_pool2d(x, (2, 3)),
    lambda x: F.max_pool2d(x, 5),
    lambda x: F.max_pool2d(x.double(), 2),
    lambda x: F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2),
    lambda x: F.max_pool2d(x[..., ::2], 2),
    lambda x: F.max_pool2d(x[0], 2),
], ids=["padding", "stride", "dilation", "ceil", "rect", "k5", "float64", "channels_last",
        "strided", "3d"])
def test_other_max_pools_run_pytorchs_op(monkeypatch, call):
    spy, x = Spy(monkeypatch), inputs("normal", (2, 3, 10, 12))
    with _cpu_layers.enabled("cpu"):
        got = call(x)
    assert spy.calls == 0
    torch.testing.assert_close(got, call(x), rtol=0, atol=0)


def test_off_switches_and_no_leak(monkeypatch):
    spy, x = Spy(monkeypatch), inputs("normal", (1, 2, 8, 8))
    monkeypatch.setenv("FASTFP_CPU_LAYERS", "0")
    with _cpu_layers.enabled("cpu"):
        F.max_pool2d(x, 2)
    monkeypatch.setenv("FASTFP_CPU_LAYERS", "1")
    monkeypatch.setenv("FASTFP_BACKEND", "torch")
    with _cpu_layers.enabled("cpu"):
        F.max_pool2d(x, 2)
    monkeypatch.delenv("FASTFP_BACKEND")
    with _cpu_layers.enabled("cpu"), torch.autocast("cpu", dtype=torch.bfloat16):
        F.max_pool2d(x, 2)
    with _cpu_layers.enabled("meta"):
        F.max_pool2d(x, 2)
    assert spy.calls == 0
    with pytest.raises(RuntimeError, match="boom"), _cpu_layers.enabled("cpu"):
        with _cpu_layers.enabled("cpu"):  # nested: one router, still routed
            F.max_pool2d(x, 2)
        raise RuntimeError("boom")
    assert spy.calls == 1
    F.max_pool2d(x, 2)  # outside: PyTorch's op, also after an error inside
    assert spy.calls == 1 and not getattr(_cpu_layers._state, "active", False)


def test_generation_is_bit_identical_with_and_without_the_pool_path(monkeypatch):
    monkeypatch.setattr(_cpu_layers, "MAX_CONV_IN_CHANNELS", 0)  # exact: the pools alone
    model, spy = pool_cnn(), Spy(monkeypatch)
    kw = dict(method="ltrc", steps=4, q=2, eta=0.0, progress=False)
    fast = fastfp.cexamples.generate(model, 3, (1, 18, 18), 5, **kw)
    assert spy.calls > 0
    monkeypatch.setenv("FASTFP_CPU_LAYERS", "0")
    plain = fastfp.cexamples.generate(model, 3, (1, 18, 18), 5, **kw)
    assert torch.equal(fast.inputs, plain.inputs)
    calls = spy.calls
    F.max_pool2d(torch.rand(1, 1, 4, 4), 2)
    assert spy.calls == calls  # the router is gone once generate returns


def test_grad_mean_routes_and_matches(monkeypatch):
    model, spy = pool_cnn(), Spy(monkeypatch)
    x, y = torch.rand(3, 1, 18, 18), torch.tensor([0, 4, 2])
    fast = fastfp.noise.grad_mean(model, x, y, 0.02, 3, seed=1)
    assert spy.calls == 3 * 2
    monkeypatch.setenv("FASTFP_CPU_LAYERS", "0")
    plain = fastfp.noise.grad_mean(model, x, y, 0.02, 3, seed=1)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6 * plain.abs().max().item())


def test_extension_checks_its_arrays():
    ext = fastfp.backend.extension()
    x = torch.rand(1, 2, 8, 8)
    with pytest.raises(ValueError, match="out, idx"):
        ext.max_pool2d_cpu(x, torch.empty(1, 2, 3, 4), torch.empty(1, 2, 4, 4, dtype=torch.int64), 2, 2)
    with pytest.raises(TypeError):  # not C-contiguous: refused, never copied silently
        ext.max_pool2d_cpu(x.transpose(2, 3), torch.empty(1, 2, 4, 4),
                           torch.empty(1, 2, 4, 4, dtype=torch.int64), 2, 2)
    out, idx = torch.empty(1, 2, 1, 1), torch.empty(1, 2, 1, 1, dtype=torch.int64)
    assert ext.max_pool2d_cpu(x, out, idx, 5, 5) is False  # not compiled: nothing written
    g, w = torch.rand(1, 3, 8, 8), torch.rand(3, 2, 3, 3)
    with pytest.raises(ValueError, match="grad_out"):
        ext.conv_input_grad_cpu(g, w, torch.empty(1, 2, 8, 8), 0, 0)  # 8x8 is not 6x6 + 2
    with pytest.raises(ValueError, match="grad_in"):
        ext.conv_input_grad_cpu(g, w, torch.empty(1, 3, 8, 8), 1, 1)
    with pytest.raises(ValueError, match="padding"):
        ext.conv_input_grad_cpu(g, w, torch.empty(1, 2, 10, 10), -1, -1)


def test_status_line_says_which_layers_run(monkeypatch):
    assert "extension" in _cpu_layers.status()
    monkeypatch.setenv("FASTFP_CPU_LAYERS", "0")
    assert "FASTFP_CPU_LAYERS=0" in _cpu_layers.status()
    monkeypatch.setenv("FASTFP_CPU_LAYERS", "1")
    monkeypatch.setenv("FASTFP_BACKEND", "torch")
    assert "FASTFP_BACKEND=torch" in _cpu_layers.status()
    assert fastfp.backend.report()["cpu_model_layers"] == _cpu_layers.status()


def test_compiled_models_keep_pytorchs_layers(monkeypatch):
    class Compiled(nn.Module):  # what torch.compile returns exposes the original as _orig_mod
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

        def forward(self, x):
            return self._orig_mod(x)

    spy = Spy(monkeypatch)
    fastfp.noise.grad_mean(Compiled(pool_cnn()), torch.rand(2, 1, 18, 18), torch.tensor([0, 1]), 0.02, 2, seed=0)
    assert spy.calls == 0
