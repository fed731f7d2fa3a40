"""fastfp.highpass / fastfp.sign_step: the CPU low-rank path and the reference twin against
scipy's DCT (outside oracle), contracts (dtype, strides, inputs untouched), bad input, dispatch,
autograd and torch.compile."""

from __future__ import annotations

import shutil

import oracles
import pytest
import torch

import fastfp
from fastfp import backend
from fastfp.reference import dct as ref

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


@pytest.mark.parametrize("dtype", oracles.DTYPES, ids=str)
@pytest.mark.parametrize("shape,k", list(_cases()), ids=str)
def test_highpass_matches_scipy(shape, k, dtype, monkeypatch):
    x = _rand(shape, dtype)
    before = x.clone()
    want = oracles.highpass(x, k)
    monkeypatch.setenv("FASTFP_BACKEND", "reference")
    ref_err = oracles.error(fastfp.highpass(x, k), want)
    monkeypatch.setenv("FASTFP_BACKEND", "auto")
    y = fastfp.highpass(x, k)
    assert backend.last_used("highpass") == "cpu"
    assert y.dtype == dtype and y.shape == x.shape and y.is_contiguous()
    oracles.assert_close(y, want, dtype, reference_error=ref_err)
    assert torch.equal(x, before)


@pytest.mark.parametrize("dtype", oracles.DTYPES, ids=str)
@pytest.mark.parametrize("shape,k", list(_cases()), ids=str)
def test_sign_step_matches_scipy(shape, k, dtype, monkeypatch):
    x = _rand(shape, dtype, seed=1, uniform=True)
    grad = _rand(shape, dtype, seed=2)
    grad.view(-1)[::5] = 0  # sign(0) = 0: no step there
    xb, gb = x.clone(), grad.clone()
    want = oracles.sign_step(x, grad, 0.05, k, 0.1, 0.9)
    monkeypatch.setenv("FASTFP_BACKEND", "reference")
    ref_err = oracles.error(fastfp.sign_step(x, grad, 0.05, k, 0.1, 0.9), want)
    monkeypatch.setenv("FASTFP_BACKEND", "auto")
    y = fastfp.sign_step(x, grad, 0.05, k, lo=0.1, hi=0.9)
    assert backend.last_used("sign_step") == "cpu"
    assert y.dtype == dtype and y.shape == x.shape
    # half inputs: the reference steps in half precision, the fast path in float32
    oracles.assert_close(y, want, dtype, reference_error=ref_err if dtype in (
        torch.float32, torch.float64) else None)
    assert torch.equal(x, xb) and torch.equal(grad, gb)


@pytest.mark.parametrize("k", [20, 446])
def test_highpass_224(k):
    x = _rand((1, 3, 224, 224), torch.float32)
    want = oracles.highpass(x, k)
    ref_err = oracles.error(ref.highpass(x, k), want)
    oracles.assert_close(fastfp.highpass(x, k), want, torch.float32, reference_error=ref_err)


def test_sign_step_224_bf16():
    x = _rand((2, 3, 224, 224), torch.bfloat16, uniform=True)
    g = _rand((2, 3, 224, 224), torch.bfloat16, seed=3)
    oracles.assert_close(fastfp.sign_step(x, g, 0.01, 20), oracles.sign_step(x, g, 0.01, 20, 0, 1),
                         torch.bfloat16)


def test_mixed_dtypes_grad():
    x = _rand((2, 3, 8, 8), torch.float32, uniform=True)
    g = _rand((2, 3, 8, 8), torch.float64)
    y = fastfp.sign_step(x, g, 0.1, 3)
    assert y.dtype == torch.float32
    oracles.assert_close(y, oracles.sign_step(x, g, 0.1, 3, 0, 1), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_idempotent(dtype):
    x = _rand((3, 2, 12, 10), dtype)
    y = fastfp.highpass(x, 5)
    torch.testing.assert_close(fastfp.highpass(y, 5), y, atol=oracles.ATOL[dtype] * 10, rtol=0)
    # and it does remove something: the low band of y is gone, x's was not
    assert (x - y).abs().max() > 0.1


def test_two_dims_and_many_batch_dims():
    x = _rand((2, 2, 2, 5, 6), torch.float64)
    want = oracles.highpass(x, 3)
    oracles.assert_close(fastfp.highpass(x, 3), want, torch.float64)
    oracles.assert_close(fastfp.highpass(x[0, 0, 0], 3), want[0, 0, 0], torch.float64)


@pytest.mark.parametrize("layout", ["transposed", "sliced", "channels_last", "expanded"])
def test_non_contiguous(layout):
    base = _rand((4, 3, 18, 20), torch.float32)
    x = {"transposed": base.transpose(-1, -2), "sliced": base[:, :, ::2, 1:],
         "channels_last": base.contiguous(memory_format=torch.channels_last),
         "expanded": base[:1, :1].expand(4, 3, 18, 20)}[layout]
    g = torch.sign(_rand(x.shape, torch.float32, seed=5)).transpose(-1, -2).contiguous() \
        .transpose(-1, -2)  # strided grad too
    before = x.clone()
    oracles.assert_close(fastfp.highpass(x, 4), oracles.highpass(x, 4), torch.float32)
    oracles.assert_close(fastfp.sign_step(x, g, 0.1, 4, -1.0, 1.0),
                         oracles.sign_step(x, g, 0.1, 4, -1.0, 1.0), torch.float32)
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
        oracles.assert_close(y, oracles.sign_step(x, g, 0.1, k, 0, 1), torch.float32)


# ---- bad input --------------------------------------------------------------------------------

def _bad_cases():
    x = torch.rand(2, 3, 8, 8)
    g = torch.randn(2, 3, 8, 8)
    return [
        ("x", TypeError, "expected a torch.Tensor", lambda: fastfp.highpass(x.numpy(), 2)),
        ("x", TypeError, "expected float16", lambda: fastfp.highpass(x.to(torch.int32), 2)),
        ("x", ValueError, "expected at least 2 dims", lambda: fastfp.highpass(torch.rand(8), 2)),
        ("k", ValueError, r"expected an int in \[0, 14\]", lambda: fastfp.highpass(x, -1)),
        ("k", ValueError, r"expected an int in \[0, 14\]", lambda: fastfp.highpass(x, 15)),
        ("k", TypeError, "expected an int, got float", lambda: fastfp.highpass(x, 2.0)),
        ("k", TypeError, "expected an int, got bool", lambda: fastfp.highpass(x, True)),
        ("x", TypeError, "expected float16", lambda: fastfp.sign_step(x.to(torch.int64), g, 0.1)),
        ("x", ValueError, "expected at least 2 dims",
         lambda: fastfp.sign_step(torch.rand(8), torch.rand(8), 0.1)),
        ("grad", TypeError, "expected a torch.Tensor", lambda: fastfp.sign_step(x, [0.0], 0.1)),
        ("grad", TypeError, "expected float16",
         lambda: fastfp.sign_step(x, g.to(torch.int8), 0.1)),
        ("grad", ValueError, "shape .* does not match x",
         lambda: fastfp.sign_step(x, g[:, :2], 0.1)),
        ("grad", ValueError, "on meta, but x is on cpu",
         lambda: fastfp.sign_step(x, g.to("meta"), 0.1)),
        ("alpha", ValueError, "expected a number in", lambda: fastfp.sign_step(x, g, -0.1)),
        ("alpha", ValueError, "expected a finite number",
         lambda: fastfp.sign_step(x, g, float("nan"))),
        ("alpha", TypeError, "expected a number, got str", lambda: fastfp.sign_step(x, g, "0.1")),
        ("k", ValueError, r"expected an int in \[0, 14\]",
         lambda: fastfp.sign_step(x, g, 0.1, k=-2)),
        ("k", ValueError, r"expected an int in \[0, 14\]",
         lambda: fastfp.sign_step(x, g, 0.1, k=15)),
        ("lo", TypeError, "expected a number, got NoneType",
         lambda: fastfp.sign_step(x, g, 0.1, lo=None)),
        ("hi", ValueError, r"expected a number in \[1.0, inf\]",
         lambda: fastfp.sign_step(x, g, 0.1, 2, lo=1.0, hi=0.0)),
    ]


@pytest.mark.parametrize("case", range(len(_bad_cases())))
def test_bad_input_names_argument(case):
    name, exc, phrase, call = _bad_cases()[case]
    with pytest.raises(exc, match=rf"^{name}: {phrase}"):
        call()


def test_registered_ops_check_their_arguments():
    # a direct torch.ops call gets the same named errors (the checks live in the op)
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"^k: expected an int in \[0, 14\]"):
        torch.ops.fastfp.highpass(x, 15)
    with pytest.raises(TypeError, match="^x: expected float16"):
        torch.ops.fastfp.highpass(x.to(torch.int32), 1)
    with pytest.raises(ValueError, match="^grad: on meta, but x is on cpu"):  # the fake kernel
        torch.ops.fastfp.sign_step(x, x.to("meta"), 0.1, 0, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"^hi: expected a number in \[1.0, inf\]"):
        torch.ops.fastfp.sign_step(x, x, 0.1, 0, 1.0, 0.0)


def test_arguments_checked_once_per_call(monkeypatch):
    from fastfp import ops

    calls = []
    for name in ("_check_highpass", "_check_sign_step"):
        check = getattr(ops, name)
        monkeypatch.setattr(ops, name, lambda *a, _c=check, _n=name: (calls.append(_n), _c(*a))[1])
    x = torch.rand(2, 7, 9)
    fastfp.highpass(x, 3)
    assert calls == ["_check_highpass"]
    calls.clear()
    fastfp.sign_step(x, x, 0.1, 3)
    assert calls == ["_check_sign_step"]


def test_largest_k_accepted():
    x = torch.rand(1, 7, 9)
    fastfp.highpass(x, 14)
    fastfp.sign_step(x, x, 0.1, 14)


# ---- dispatch ---------------------------------------------------------------------------------

def test_forced_backends(monkeypatch):
    x = _rand((2, 9, 7), torch.float32)
    want = oracles.highpass(x, 3)
    for mode, impl in [("reference", "reference"), ("torch", "cpu"), ("auto", "cpu"),
                       ("cuda", "cpu")]:
        monkeypatch.setenv("FASTFP_BACKEND", mode)
        oracles.assert_close(fastfp.highpass(x, 3), want, torch.float32)
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
    oracles.assert_close(torch.ops.fastfp.highpass(x, 3), oracles.highpass(x, 3), torch.float32)
    oracles.assert_close(torch.ops.fastfp.sign_step(x, g, 0.1, 3, 0.0, 1.0),
                         oracles.sign_step(x, g, 0.1, 3, 0.0, 1.0), torch.float32)
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
    want = oracles.highpass(x, k)
    oracles.assert_close(fastfp.highpass(x, k), want, dtype,
                         reference_error=oracles.error(ref.highpass(x, k), want))
    g = _rand(shape, dtype, seed=9)
    oracles.assert_close(fastfp.sign_step(x, g, 0.1, k, -1, 1),
                         oracles.sign_step(x, g, 0.1, k, -1, 1), dtype)


# ---- the DCT rows: only those used, built once, cache bounded, sizes bounded -----------------

def test_dct_rows_built_once_and_only_those_used(monkeypatch):
    from fastfp import _lowrank

    built = []
    real = _lowrank.dct_matrix

    def counting(n, **kw):
        built.append((n, kw.get("rows"), kw.get("start", 0)))
        return real(n, **kw)

    monkeypatch.setattr(_lowrank, "dct_matrix", counting)
    _lowrank.cache_clear()
    x = _rand((2, 3, 37, 41), torch.float32)
    want = oracles.highpass(x, 5)
    oracles.assert_close(fastfp.highpass(x, 5), want, torch.float32)
    assert sorted(built) == [(37, 6, 0), (41, 6, 0)]  # the k+1 rows of each axis, not n x n
    oracles.assert_close(fastfp.highpass(x, 5), want, torch.float32)
    fastfp.sign_step(x, x, 0.1, 5)
    assert len(built) == 2  # later calls with the same (n, rows, dtype, device) build nothing
    fastfp.highpass(x, 60)  # the kept corner: rows 60 - 41 + 2 = 21.. of H, 60 - 37 + 2 = 25.. of W
    assert sorted(built[2:]) == [(37, 16, 21), (41, 16, 25)]


@pytest.mark.parametrize("entries,nbytes", [(6, 10**9), (10**6, 3000)])
def test_dct_cache_is_bounded(entries, nbytes, monkeypatch):
    from fastfp import _lowrank

    monkeypatch.setattr(_lowrank, "CACHE_ENTRIES", entries)
    monkeypatch.setattr(_lowrank, "CACHE_BYTES", nbytes)
    _lowrank.cache_clear()
    for n in range(20, 60, 3):
        x = _rand((2, n, n + 1), torch.float32, seed=n)
        oracles.assert_close(fastfp.highpass(x, 4), oracles.highpass(x, 4), torch.float32)
        info = _lowrank.cache_info()
        assert 0 < info.entries <= entries and info.bytes <= nbytes


def test_wide_image_caches_only_the_rows_it_uses():
    from fastfp import _lowrank

    _lowrank.cache_clear()
    x = _rand((1, 2, 100_000), torch.float32)
    oracles.assert_close(fastfp.highpass(x, 2), oracles.highpass(x, 2), torch.float32)
    # 3 rows of the 100,000-wide DCT in float32 (1.2 MB; the whole matrix would be 40 GB)
    assert _lowrank.cache_info().bytes < 1.25e6


@pytest.mark.parametrize("shape,k", [((2, 10**7), 1), ((3, 100_000), 200),
                                     ((5000, 5000), 4999)], ids=str)
def test_sizes_beyond_the_fast_path_are_rejected(shape, k):
    from fastfp import _lowrank

    x = torch.zeros(1, 1).expand(*shape)  # no memory: the check comes before any work
    before = _lowrank.cache_info()
    phrase = rf"^x: a {shape[0]} x {shape[1]} image at k={k} needs \d+ DCT-matrix elements"
    with pytest.raises(ValueError, match=phrase):
        fastfp.highpass(x, k)
    with pytest.raises(ValueError, match=phrase):
        fastfp.sign_step(x, x, 0.1, k)
    with pytest.raises(ValueError, match=phrase):
        torch.ops.fastfp.highpass(x, k)
    assert _lowrank.cache_info() == before


# ---- NaN in x: propagates (the DCT mixes every pixel of an image into every coefficient) -------

@pytest.mark.parametrize("mode,shape,k,kept", [
    ("reference", (3, 2, 9, 7), 3, None),
    ("auto", (3, 2, 9, 7), 3, False),       # the low-rank path: subtract the removed band
    ("auto", (3, 2, 40, 33), 50, True),     # large k: rebuilt from the kept corner
    ("auto", (3, 2, 9, 7), 14, True),       # largest k: only the mean is left
    ("auto", (3, 2, 9, 7), 0, None),        # k = 0: a copy
    ("reference", (3, 2, 9, 7), 0, None),
], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_nan_in_x_propagates(mode, shape, k, kept, dtype, monkeypatch):
    from fastfp import _lowrank

    monkeypatch.setenv("FASTFP_BACKEND", mode)
    if kept is not None:
        assert _lowrank.plan(k, *shape[-2:])[0] == kept
    x = _rand(shape, dtype, seed=12, uniform=True)
    x[1, 0, 4, 2] = float("nan")
    g = _rand(shape, dtype, seed=13)
    clean = torch.ones(shape[:2], dtype=torch.bool)
    clean[1, 0] = False
    impl = "reference" if mode == "reference" else "cpu"
    for op, y, want in [("highpass", fastfp.highpass(x, k), oracles.highpass(x, k)),
                        ("sign_step", fastfp.sign_step(x, g, 0.05, k, 0.1, 0.9),
                         oracles.sign_step(x, g, 0.05, k, 0.1, 0.9))]:
        assert backend.last_used(op) == impl
        if k == 0:  # only the NaN pixel itself
            assert torch.isnan(y).sum() == 1 and torch.isnan(y[1, 0, 4, 2])
        else:       # that whole image, and no other
            assert torch.isnan(y[1, 0]).all() and not torch.isnan(y[clean]).any()
        oracles.assert_close(y[clean], want[clean.numpy()], dtype)
