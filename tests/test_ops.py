"""fastfp.highpass / fastfp.sign_step: the CPU low-rank path and the reference twin against
scipy's DCT (outside oracle), contracts (dtype, strides, inputs untouched), bad input, dispatch,
autograd and torch.compile."""

from __future__ import annotations

import shutil

import pytest
import torch

import fastfp
from fastfp import backend
from fastfp.reference import dct as ref

import test_ops_oracle as oracle

SHAPES = [(1, 1, 1, 1), (1, 3, 7, 9), (6, 1, 7, 9), (2, 3, 31, 32), (16, 1, 31, 32)]
KS = [0, 1, 2, 20, "max"]


def _k(k, shape):
    h, w = shape[-2:]
    return h + w - 2 if k == "max" else k


def _legal(shape, k):
    return _k(k, shape) <= shape[-2] + shape[-1] - 2


def _cases():
    for shape in SHAPES:
        for k in KS:
            if _legal(shape, k):
                yield shape, _k(k, shape)


def _rand(shape, dtype, seed=0, uniform=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64) if uniform else \
        torch.randn(shape, generator=g, dtype=torch.float64)
    return x.to(dtype)


@pytest.mark.parametrize("dtype", oracle.DTYPES, ids=str)
@pytest.mark.parametrize("shape,k", list(_cases()), ids=str)
def test_highpass_matches_scipy(shape, k, dtype, monkeypatch):
    x = _rand(shape, dtype)
    before = x.clone()
    want = oracle.highpass(x, k)
    monkeypatch.setenv("FASTFP_BACKEND", "reference")
    ref_err = oracle.error(fastfp.highpass(x, k), want)
    monkeypatch.setenv("FASTFP_BACKEND", "auto")
    y = fastfp.highpass(x, k)
    assert backend.last_used("highpass") == "cpu"
    assert y.dtype == dtype and y.shape == x.shape and y.is_contiguous()
    oracle.assert_close(y, want, dtype, reference_error=ref_err)
    assert torch.equal(x, before)


@pytest.mark.parametrize("dtype", oracle.DTYPES, ids=str)
@pytest.mark.parametrize("shape,k", list(_cases()), ids=str)
def test_sign_step_matches_scipy(shape, k, dtype, monkeypatch):
    x = _rand(shape, dtype, seed=1, uniform=True)
    grad = _rand(shape, dtype, seed=2)
    grad.view(-1)[::5] = 0  # sign(0) = 0: no step there
    xb, gb = x.clone(), grad.clone()
    want = oracle.sign_step(x, grad, 0.05, k, 0.1, 0.9)
    monkeypatch.setenv("FASTFP_BACKEND", "reference")
    ref_err = oracle.error(fastfp.sign_step(x, grad, 0.05, k, 0.1, 0.9), want)
    monkeypatch.setenv("FASTFP_BACKEND", "auto")
    y = fastfp.sign_step(x, grad, 0.05, k, lo=0.1, hi=0.9)
    assert backend.last_used("sign_step") == "cpu"
    assert y.dtype == dtype and y.shape == x.shape
    # half inputs: the reference steps in half precision, the fast path in float32
    oracle.assert_close(y, want, dtype, reference_error=ref_err if dtype in (
        torch.float32, torch.float64) else None)
    assert torch.equal(x, xb) and torch.equal(grad, gb)


@pytest.mark.parametrize("k", [20, 446])
def test_highpass_224(k):
    x = _rand((1, 3, 224, 224), torch.float32)
    want = oracle.highpass(x, k)
    ref_err = oracle.error(ref.highpass(x, k), want)
    oracle.assert_close(fastfp.highpass(x, k), want, torch.float32, reference_error=ref_err)


def test_sign_step_224_bf16():
    x = _rand((2, 3, 224, 224), torch.bfloat16, uniform=True)
    g = _rand((2, 3, 224, 224), torch.bfloat16, seed=3)
    oracle.assert_close(fastfp.sign_step(x, g, 0.01, 20), oracle.sign_step(x, g, 0.01, 20, 0, 1),
                        torch.bfloat16)


def test_mixed_dtypes_grad():
    x = _rand((2, 3, 8, 8), torch.float32, uniform=True)
    g = _rand((2, 3, 8, 8), torch.float64)
    y = fastfp.sign_step(x, g, 0.1, 3)
    assert y.dtype == torch.float32
    oracle.assert_close(y, oracle.sign_step(x, g, 0.1, 3, 0, 1), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_idempotent(dtype):
    x = _rand((3, 2, 12, 10), dtype)
    y = fastfp.highpass(x, 5)
    torch.testing.assert_close(fastfp.highpass(y, 5), y, atol=oracle.ATOL[dtype] * 10, rtol=0)
    # and it does remove something: the low band of y is gone, x's was not
    assert (x - y).abs().max() > 0.1


def test_two_dims_and_many_batch_dims():
    x = _rand((2, 2, 2, 5, 6), torch.float64)
    want = oracle.highpass(x, 3)
    oracle.assert_close(fastfp.highpass(x, 3), want, torch.float64)
    oracle.assert_close(fastfp.highpass(x[0, 0, 0], 3), want[0, 0, 0], torch.float64)


@pytest.mark.parametrize("layout", ["transposed", "sliced", "channels_last", "expanded"])
def test_non_contiguous(layout):
    base = _rand((4, 3, 18, 20), torch.float32)
    x = {"transposed": base.transpose(-1, -2), "sliced": base[:, :, ::2, 1:],
         "channels_last": base.contiguous(memory_format=torch.channels_last),
         "expanded": base[:1, :1].expand(4, 3, 18, 20)}[layout]
    g = torch.sign(_rand(x.shape, torch.float32, seed=5)).transpose(-1, -2).contiguous() \
        .transpose(-1, -2)  # strided grad too
    before = x.clone()
    oracle.assert_close(fastfp.highpass(x, 4), oracle.highpass(x, 4), torch.float32)
    oracle.assert_close(fastfp.sign_step(x, g, 0.1, 4, -1.0, 1.0),
                        oracle.sign_step(x, g, 0.1, 4, -1.0, 1.0), torch.float32)
    assert torch.equal(x, before)


def test_k0_is_a_copy():
    x = _rand((2, 5, 5), torch.float32)
    y = fastfp.highpass(x, 0)
    assert torch.equal(x, y) and y.data_ptr() != x.data_ptr()


def test_zero_size_batch():
    x = torch.zeros(0, 3, 8, 8)
    assert fastfp.highpass(x, 2).shape == x.shape
    assert fastfp.sign_step(x, x, 0.1, 2).shape == x.shape


@pytest.mark.parametrize("mode", ["auto", "reference"])
@pytest.mark.parametrize("shape", [(2, 0, 5), (3, 4, 0), (0, 0)], ids=str)
def test_empty_image_dims(shape, mode, monkeypatch):
    # H or W = 0: nothing to filter (a size-0 DCT matrix used to divide by zero)
    monkeypatch.setenv("FASTFP_BACKEND", mode)
    x = torch.zeros(shape)
    k = max(sum(shape[-2:]) - 2, 0)
    assert fastfp.highpass(x, k).shape == x.shape
    assert fastfp.sign_step(x, x, 0.1, k).shape == x.shape


@pytest.mark.parametrize("mode", ["auto", "reference"])
def test_mixed_grad_dtype_keeps_x_dtype_on_every_path(mode, monkeypatch):
    # the op's fake kernel promises x's dtype; the reference twin promotes to grad's float64
    monkeypatch.setenv("FASTFP_BACKEND", mode)
    x = _rand((2, 7, 9), torch.float32, uniform=True)
    g = _rand((2, 7, 9), torch.float64, seed=6)
    for k in (0, 3):
        y = fastfp.sign_step(x, g, 0.1, k)
        assert backend.last_used("sign_step") == ("cpu" if mode == "auto" else mode)
        assert y.dtype == torch.float32 and y.is_contiguous()
        oracle.assert_close(y, oracle.sign_step(x, g, 0.1, k, 0, 1), torch.float32)


# ---- bad input --------------------------------------------------------------------------------

def _bad_cases():
    x = torch.rand(2, 3, 8, 8)
    g = torch.randn(2, 3, 8, 8)
    return [
        ("x", TypeError, lambda: fastfp.highpass(x.numpy(), 2)),
        ("x", TypeError, lambda: fastfp.highpass(x.to(torch.int32), 2)),
        ("x", ValueError, lambda: fastfp.highpass(torch.rand(8), 2)),
        ("k", ValueError, lambda: fastfp.highpass(x, -1)),
        ("k", ValueError, lambda: fastfp.highpass(x, 15)),
        ("k", TypeError, lambda: fastfp.highpass(x, 2.0)),
        ("x", TypeError, lambda: fastfp.sign_step(x.to(torch.int64), g, 0.1)),
        ("x", ValueError, lambda: fastfp.sign_step(torch.rand(8), torch.rand(8), 0.1)),
        ("grad", TypeError, lambda: fastfp.sign_step(x, g.to(torch.int8), 0.1)),
        ("grad", ValueError, lambda: fastfp.sign_step(x, g[:, :2], 0.1)),
        ("grad", ValueError, lambda: fastfp.sign_step(x, g.to("meta"), 0.1)),
        ("alpha", ValueError, lambda: fastfp.sign_step(x, g, -0.1)),
        ("alpha", ValueError, lambda: fastfp.sign_step(x, g, float("nan"))),
        ("k", ValueError, lambda: fastfp.sign_step(x, g, 0.1, k=-2)),
        ("k", ValueError, lambda: fastfp.sign_step(x, g, 0.1, k=15)),
        ("hi", ValueError, lambda: fastfp.sign_step(x, g, 0.1, 2, lo=1.0, hi=0.0)),
    ]


@pytest.mark.parametrize("case", range(len(_bad_cases())))
def test_bad_input_names_argument(case):
    name, exc, call = _bad_cases()[case]
    with pytest.raises(exc, match=rf"^{name}:"):
        call()


def test_largest_k_accepted():
    x = torch.rand(1, 7, 9)
    fastfp.highpass(x, 14)
    fastfp.sign_step(x, x, 0.1, 14)


# ---- dispatch ---------------------------------------------------------------------------------

def test_forced_backends(monkeypatch):
    x = _rand((2, 9, 7), torch.float32)
    want = oracle.highpass(x, 3)
    for mode, impl in [("reference", "reference"), ("torch", "cpu"), ("auto", "cpu"),
                       ("cuda", "cpu")]:
        monkeypatch.setenv("FASTFP_BACKEND", mode)
        oracle.assert_close(fastfp.highpass(x, 3), want, torch.float32)
        assert backend.last_used("highpass") == impl, mode
        fastfp.sign_step(x, x, 0.1, 3)
        assert backend.last_used("sign_step") == impl, mode


def test_forced_triton_without_interpreter_is_actionable(monkeypatch):
    monkeypatch.setenv("FASTFP_BACKEND", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        fastfp.highpass(torch.rand(4, 4), 1)
    with pytest.raises(RuntimeError, match="sign_step"):
        fastfp.sign_step(torch.rand(4, 4), torch.rand(4, 4), 0.1, 1)


def test_elementwise_step_paths_agree(monkeypatch):
    # the extension's threaded step (switchable, see fastfp.ops.USE_EXT_STEP) == torch's
    from fastfp import ops

    if backend.extension() is None:
        pytest.skip("the compiled extension is not built")
    x = _rand((3, 10, 11), torch.float32, uniform=True)
    g = _rand((3, 10, 11), torch.float32, seed=4)
    g.view(-1)[::4] = 0
    monkeypatch.setattr(ops, "USE_EXT_STEP", False)
    a = fastfp.sign_step(x, g, 0.2, 3)
    monkeypatch.setattr(ops, "USE_EXT_STEP", True)
    monkeypatch.setattr(ops._lowrank, "subtract_lowpass_", lambda s, k: s)  # the step alone
    b = fastfp.sign_step(x, g, 0.2, 3)
    want = torch.clamp(x - 0.2 * torch.sign(g), 0, 1)
    assert torch.equal(b, want)
    oracle.assert_close(a, oracle.sign_step(x, g, 0.2, 3, 0, 1), torch.float32)


# ---- autograd and torch.compile ---------------------------------------------------------------

def test_highpass_gradcheck_and_self_adjoint():
    x = _rand((2, 6, 5), torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: fastfp.highpass(t, 4), (x,))
    # agrees with autograd through the literal reference
    v = _rand((2, 6, 5), torch.float64, seed=9)
    (gx,) = torch.autograd.grad(fastfp.highpass(x, 4), x, v)
    xr = x.detach().clone().requires_grad_()
    (gr,) = torch.autograd.grad(ref.highpass(xr, 4), xr, v)
    torch.testing.assert_close(gx, gr)


def test_sign_step_gradients():
    x = (_rand((2, 6, 5), torch.float64, uniform=True) * 1.4 - 0.2).requires_grad_()
    g = _rand((2, 6, 5), torch.float64, seed=3)
    assert torch.autograd.gradcheck(lambda t: fastfp.sign_step(t, g, 0.05, 3), (x,))
    v = _rand((2, 6, 5), torch.float64, seed=4)
    (gx,) = torch.autograd.grad(fastfp.sign_step(x, g, 0.05, 3), x, v)
    xr = x.detach().clone().requires_grad_()
    (gr,) = torch.autograd.grad(ref.sign_step(xr, g, 0.05, 3), xr, v)
    torch.testing.assert_close(gx, gr)
    gg = g.clone().requires_grad_()
    (dg,) = torch.autograd.grad(fastfp.sign_step(x.detach(), gg, 0.05, 3).sum(), gg,
                                allow_unused=True)
    assert dg is None or not dg.any()


def test_registered_ops_and_compile_aot_eager():
    x = _rand((2, 3, 9, 8), torch.float32)
    g = _rand((2, 3, 9, 8), torch.float32, seed=1)
    assert torch.equal(torch.ops.fastfp.highpass(x, 3), fastfp.highpass(x, 3))
    torch.library.opcheck(torch.ops.fastfp.highpass.default, (x, 3))
    torch.library.opcheck(torch.ops.fastfp.sign_step.default, (x, g, 0.1, 3, 0.0, 1.0))

    def f(t, d):
        return fastfp.sign_step(fastfp.highpass(t * 2, 3), d, 0.1, 2) + 1

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, g), f(x, g))


def _cxx_available():
    import os

    names = [os.environ.get("CXX"), "g++", "c++", "clang++"]
    return any(n and shutil.which(n) for n in names)


def test_compile_inductor_fullgraph():
    if not _cxx_available():
        pytest.skip("torch.compile's inductor backend needs a C++ compiler on PATH (none found)")
    x = _rand((2, 3, 9, 8), torch.float32)

    def f(t):  # the op alone: inductor emits no C++ kernel of its own, keeping the test fast
        return fastfp.highpass(t, 3)

    compiled = torch.compile(f, fullgraph=True)
    torch.testing.assert_close(compiled(x), f(x))


@pytest.mark.parametrize("shape,k", [((2, 40, 33), 50), ((1, 70, 5), 40), ((3, 9, 12), 12),
                                     ((2, 33, 40), 30)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_large_k_rebuilds_from_the_kept_corner(shape, k, dtype):
    from fastfp import _lowrank

    assert _lowrank.plan(k, *shape[-2:])[0] == (k != 30)  # k=30 on 33x40: still the removed band
    x = _rand(shape, dtype, seed=8)
    want = oracle.highpass(x, k)
    oracle.assert_close(fastfp.highpass(x, k), want, dtype,
                        reference_error=oracle.error(ref.highpass(x, k), want))
    g = _rand(shape, dtype, seed=9)
    oracle.assert_close(fastfp.sign_step(x, g, 0.1, k, -1, 1), oracle.sign_step(x, g, 0.1, k, -1, 1),
                        dtype)
