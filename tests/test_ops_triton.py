"""The fused Triton kernel (kernels/highpass_sign_step.py) against scipy's DCT.

On CPU it runs under the Triton interpreter (small shapes): TRITON_INTERPRET is read when a kernel
is decorated, so the fixture sets it and re-imports the kernel module, then restores both, leaving
other areas' kernels compiled. On a CUDA machine the `gpu` tests run the compiled kernel.
"""

from __future__ import annotations

import importlib
import os

import oracles
import pytest
import torch

import fastfp
from fastfp import backend

triton = pytest.importorskip("triton")

HALF = (torch.float32, torch.float16, torch.bfloat16)


def _kernel_module():
    return importlib.import_module("fastfp.kernels.highpass_sign_step")


@pytest.fixture(scope="module")
def interpreted():
    """Forces FASTFP_BACKEND=triton on CPU tensors through the interpreter."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "1")
        importlib.reload(_kernel_module())
        yield
    if os.environ.get("TRITON_INTERPRET") != "1":
        importlib.reload(_kernel_module())  # back to the compiled kernel for later tests


@pytest.fixture
def triton_cpu(interpreted, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("FASTFP_BACKEND", "triton")


def _rand(shape, dtype, seed, uniform=False, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g) if uniform else torch.randn(shape, generator=g)
    return x.to(dtype=dtype, device=device)


# (shape, k): odd sizes, k = 0 / 1 / 2 / 20 / largest, and k big enough that the removed corner
# spans several 32x32 frequency blocks (k = 40 on 70x66 removes a 2x2-block band; k = 50 on
# 40x33 and k = 40 on 70x5 rebuild from the kept corner; the largest k leaves only the mean).
CASES = [((1, 1, 1, 1), 0), ((2, 3, 7, 9), 0), ((2, 3, 7, 9), 1), ((1, 3, 7, 9), 14),
         ((1, 2, 31, 32), 2), ((3, 1, 31, 32), 20), ((1, 1, 31, 32), 61), ((1, 1, 40, 33), 50),
         ((1, 1, 5, 70), 3), ((1, 1, 70, 5), 40), ((1, 1, 70, 66), 40)]


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("shape,k", CASES, ids=str)
def test_sign_step_interpreted(triton_cpu, shape, k, dtype):
    x = _rand(shape, dtype, 1, uniform=True)
    g = _rand(shape, dtype, 2)
    g.view(-1)[::7] = 0
    xb, gb = x.clone(), g.clone()
    y = fastfp.sign_step(x, g, 0.05, k, 0.1, 0.9)
    assert backend.last_used("sign_step") == "triton"
    assert y.dtype == dtype and y.shape == x.shape
    want = oracles.sign_step(x, g, 0.05, k, 0.1, 0.9)
    if dtype == torch.float32:
        ref_err = oracles.error(fastfp.reference.dct.sign_step(x, g, 0.05, k, 0.1, 0.9), want)
        oracles.assert_close(y, want, dtype, reference_error=ref_err)
    else:
        oracles.assert_close(y, want, dtype)
    assert torch.equal(x, xb) and torch.equal(g, gb)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("shape,k", CASES[::2], ids=str)
def test_highpass_interpreted(triton_cpu, shape, k, dtype):
    x = _rand(shape, dtype, 3)
    y = fastfp.highpass(x, k)
    assert backend.last_used("highpass") == "triton"
    oracles.assert_close(y, oracles.highpass(x, k), dtype)


def test_strided_inputs_interpreted(triton_cpu):
    base = _rand((2, 3, 12, 10), torch.float32, 4)
    x = base.transpose(-1, -2)                       # (2, 3, 10, 12), strided
    g = _rand((3, 10, 12), torch.float32, 5).expand(2, 3, 10, 12)  # batch stride 0
    y = fastfp.sign_step(x, g, 0.1, 4, -1.0, 1.0)
    assert backend.last_used("sign_step") == "triton"
    oracles.assert_close(y, oracles.sign_step(x, g, 0.1, 4, -1.0, 1.0), torch.float32)
    oracles.assert_close(fastfp.highpass(base[:, :, ::2, 1:], 3),
                         oracles.highpass(base[:, :, ::2, 1:], 3), torch.float32)
    cl = base.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    y = fastfp.sign_step(cl, g.transpose(-1, -2), 0.1, 5, -1.0, 1.0)
    assert backend.last_used("sign_step") == "triton" and y.is_contiguous()
    oracles.assert_close(y, oracles.sign_step(cl, g.transpose(-1, -2), 0.1, 5, -1.0, 1.0),
                         torch.bfloat16)


@pytest.mark.parametrize("gdtype", [torch.float64, torch.float16, torch.float32], ids=str)
def test_grad_dtype_sign_like_torch_interpreted(triton_cpu, gdtype, monkeypatch):
    # sign(grad) in grad's own dtype: a float64 grad below float32's range still steps (it
    # used to be cast to float32 first, flushing it to 0); a NaN grad gives 0, as torch.sign
    tiny = {torch.float64: 1e-300, torch.float16: 6e-8, torch.float32: 1e-45}[gdtype]
    x = _rand((2, 3, 6, 7), torch.float32, 10, uniform=True)
    g = _rand((2, 3, 6, 7), gdtype, 11)
    g.view(-1)[::3] = tiny
    g.view(-1)[1::9] = -tiny
    g.view(-1)[2::11] = float("nan")
    for k in (0, 3):
        y = fastfp.sign_step(x, g, 0.05, k, 0.1, 0.9)
        assert backend.last_used("sign_step") == "triton"
        want = fastfp.reference.dct.sign_step(x.double(), g.double(), 0.05, k, 0.1, 0.9)
        oracles.assert_close(y, want.numpy(), torch.float32)
        monkeypatch.setenv("FASTFP_BACKEND", "auto")
        oracles.assert_close(y, fastfp.sign_step(x, g, 0.05, k, 0.1, 0.9).numpy(), torch.float32)
        monkeypatch.setenv("FASTFP_BACKEND", "triton")


def test_float64_goes_to_the_torch_path(triton_cpu):
    # the kernel computes in float32; float64 keeps its precision on the low-rank torch path
    x = _rand((1, 6, 6), torch.float64, 6)
    oracles.assert_close(fastfp.highpass(x, 2), oracles.highpass(x, 2), torch.float64)
    assert backend.last_used("highpass") == "cpu"


@pytest.mark.slow
def test_kept_corner_multi_block_interpreted(triton_cpu):
    # k = 100 on 80 x 80 keeps rows and columns 22..79: two 32 x 32 blocks of the kept corner
    from fastfp import _lowrank

    assert _lowrank.plan(100, 80, 80) == (True, 22, 22, 58, 58)
    x = _rand((1, 1, 80, 80), torch.float32, 14, uniform=True)
    g = _rand((1, 1, 80, 80), torch.float32, 15)
    y = fastfp.sign_step(x, g, 0.01, 100)
    assert backend.last_used("sign_step") == "triton"
    want = oracles.sign_step(x, g, 0.01, 100, 0.0, 1.0)
    ref_err = oracles.error(fastfp.reference.dct.sign_step(x, g, 0.01, 100), want)
    oracles.assert_close(y, want, torch.float32, reference_error=ref_err)


# ---- NaN in x ----------------------------------------------------------------------------------

def _check_nan_propagates(x, g, k, impl):
    """A NaN pixel makes its whole image NaN (every DCT coefficient mixes every pixel; k = 0: only
    the pixel), never another image, and never gets cleaned; the other images stay right."""
    clean = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    clean[1, 0] = False
    for op, y, want in [("highpass", fastfp.highpass(x, k), oracles.highpass(x, k)),
                        ("sign_step", fastfp.sign_step(x, g, 0.05, k, 0.1, 0.9),
                         oracles.sign_step(x, g, 0.05, k, 0.1, 0.9))]:
        assert backend.last_used(op) == impl
        if k == 0:
            assert int(torch.isnan(y).sum()) == 1 and bool(torch.isnan(y[1, 0, 4, 2]))
        else:
            assert bool(torch.isnan(y[1, 0]).all()) and not bool(torch.isnan(y[clean]).any())
        oracles.assert_close(y[clean], want[clean.cpu().numpy()], x.dtype)


# the removed band, the kept corner (large k), only the mean left (largest k), a copy (k = 0)
NAN_CASES = [((2, 2, 9, 7), 3), ((2, 1, 40, 33), 50), ((2, 2, 9, 7), 14), ((2, 2, 9, 7), 0)]


@pytest.mark.parametrize("shape,k", NAN_CASES, ids=str)
def test_nan_in_x_propagates_interpreted(triton_cpu, shape, k):
    x = _rand(shape, torch.float32, 12, uniform=True)
    x[1, 0, 4, 2] = float("nan")
    _check_nan_propagates(x, _rand(shape, torch.float32, 13), k, "triton")


# ---- compiled kernel on a GPU -----------------------------------------------------------------

def _compiled_kernel():
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        pytest.skip("TRITON_INTERPRET is set: the compiled kernel is not in use")


# (shape, k, path): "band" subtracts the removed band, "kept" rebuilds from the kept corner;
# "multi" walks several 32 x 32 frequency blocks (k + 1 > 32 rows, or that many kept rows)
GPU_CASES = [((4, 3, 224, 224), 20, "band"), ((8, 3, 32, 32), 2, "band"),
             ((2, 1, 512, 512), 20, "band"), ((2, 1, 512, 512), 100, "band multi"),
             ((1, 2, 70, 66), 40, "band multi"), ((2, 3, 224, 224), 300, "kept multi"),
             ((1, 1, 40, 33), 50, "kept"), ((2, 3, 224, 224), 446, "kept"),
             ((3, 2, 7, 9), 5, "band"), ((2, 3, 100, 60), 0, "copy")]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("shape,k,path", GPU_CASES, ids=str)
def test_triton_on_gpu(shape, k, path, dtype, monkeypatch):
    # the maximum error over every element (oracles.assert_close), on every kernel path
    from fastfp import _lowrank

    _compiled_kernel()
    if k > 0:
        kept, _, _, rh, rw = _lowrank.plan(k, *shape[-2:])
        assert kept == ("kept" in path) and (max(rh, rw) > 32) == ("multi" in path)
    x = _rand(shape, dtype, 7, uniform=True, device="cuda")
    g = _rand(shape, dtype, 8, device="cuda")
    y = fastfp.sign_step(x, g, 0.01, k)
    assert backend.last_used("sign_step") == "triton"
    want = oracles.sign_step(x, g, 0.01, k, 0.0, 1.0)
    ref_err = oracles.error(fastfp.reference.dct.sign_step(x, g, 0.01, k), want)  # same precision
    oracles.assert_close(y, want, dtype,
                         reference_error=ref_err if dtype == torch.float32 else None)
    oracles.assert_close(fastfp.highpass(x, k), oracles.highpass(x, k), dtype)
    monkeypatch.setenv("FASTFP_BACKEND", "torch")
    oracles.assert_close(fastfp.sign_step(x, g, 0.01, k), want, dtype)
    assert backend.last_used("sign_step") == "torch"


@pytest.mark.gpu
@pytest.mark.parametrize("mode,impl", [("auto", "triton"), ("torch", "torch")])
@pytest.mark.parametrize("shape,k", NAN_CASES, ids=str)
def test_nan_in_x_propagates_on_gpu(shape, k, mode, impl, monkeypatch):
    _compiled_kernel()
    monkeypatch.setenv("FASTFP_BACKEND", mode)
    x = _rand(shape, torch.float32, 12, uniform=True, device="cuda")
    x[1, 0, 4, 2] = float("nan")
    _check_nan_propagates(x, _rand(shape, torch.float32, 13, device="cuda"), k, impl)


@pytest.mark.gpu
@pytest.mark.parametrize("mode,impl", [("auto", "triton"), ("torch", "torch")])
@pytest.mark.parametrize("shape,k", [((8, 3, 32, 32), 2), ((2, 3, 224, 224), 20),
                                     ((1, 2, 40, 33), 50), ((2, 3, 224, 224), 446),
                                     ((2, 3, 32, 32), 0)], ids=str)
def test_sign_step_in_a_cuda_graph(shape, k, mode, impl, monkeypatch):
    # the engine captures a step calling sign_step: after a first call with the same sizes the
    # fast paths neither sync nor copy host -> device, and a captured graph keeps its DCT rows
    from fastfp import _lowrank

    _compiled_kernel()
    monkeypatch.setenv("FASTFP_BACKEND", mode)
    x = _rand(shape, torch.float32, 1, uniform=True, device="cuda")
    g = _rand(shape, torch.float32, 2, device="cuda")
    side = torch.cuda.Stream()  # warm up on a side stream, as torch.cuda.graph asks
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fastfp.sign_step(x, g, 0.01, k)  # the first call builds the DCT rows and masks
        assert backend.last_used("sign_step") == impl
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")  # any sync (a blocking copy, .item()) raises
        try:
            fastfp.sign_step(x, g, 0.01, k)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fastfp.sign_step(x, g, 0.01, k)
    pinned = _lowrank.cache_info().pinned
    assert pinned > 0 or k == 0 or (impl == "torch" and k == 446)  # (only the mean: no rows)
    _lowrank.cache_clear()  # the entries the graph reads stay
    monkeypatch.setattr(_lowrank, "CACHE_ENTRIES", 1)
    for n in (11, 12, 13):  # evictions, and fresh allocations that would reuse freed memory
        fastfp.highpass(torch.rand(2, n, n + 2, device="cuda"), 3)
    assert _lowrank.cache_info().pinned == pinned
    for seed in (3, 4):
        x.copy_(_rand(shape, torch.float32, seed, uniform=True, device="cuda"))
        g.copy_(_rand(shape, torch.float32, seed + 10, device="cuda"))
        graph.replay()
        torch.cuda.synchronize()
        oracles.assert_close(out, oracles.sign_step(x, g, 0.01, k, 0.0, 1.0), torch.float32)


# ---- compiled for a GPU without one: catches what the lenient interpreter lets through ----------

@pytest.mark.parametrize("dtype,step,k,kept,tiles,gdtype", [
    ("fp32", True, 20, False, (32, 64, 32), None),   # the LTRC step at 224x224
    ("bf16", False, 50, True, (16, 16, 16), None),   # highpass only, rebuilt from the kept corner
    ("fp16", True, 0, False, (16, 32, 16), None),    # the step alone
    ("bf16", True, 2, False, (16, 32, 16), "fp64"),  # a float64 grad (sign in its own dtype)
])
def test_kernel_compiles_for_sm90(dtype, step, k, kept, tiles, gdtype):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    entry = os.environ.get("TRITON_INTERPRET")
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv("TRITON_INTERPRET", raising=False)
            kern = importlib.reload(_kernel_module()).highpass_sign_step_kernel
            assert isinstance(kern, JITFunction)
            bh, bw, rb = tiles
            consts = dict(STEP=step, HIGHPASS=k > 0, KEPT=kept, BH=bh, BW=bw, RB=rb, DOT="ieee")
            sig = {}
            for name in kern.arg_names:
                if name in consts:
                    sig[name] = "constexpr"
                elif name == "g_ptr":
                    sig[name] = f"*{gdtype or dtype}"
                elif name in ("x_ptr", "out_ptr"):
                    sig[name] = f"*{dtype}"
                elif name in ("dh_ptr", "dw_ptr"):
                    sig[name] = "*fp32"
                else:
                    sig[name] = "fp32" if name in ("alpha", "lo", "hi") else "i32"
            src = ASTSource(fn=kern, signature=sig,
                            constexprs={(kern.arg_names.index(n),): v for n, v in consts.items()})
            try:
                compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32))
            except RuntimeError as exc:  # no ptxas shipped with this triton build
                if "ptxas" in str(exc).lower():
                    pytest.skip(f"cannot assemble for sm_90 here: {exc}")
                raise
            assert "cubin" in compiled.asm and compiled.metadata.shared < 100 * 1024
    finally:
        if entry is not None and entry not in ("", "0"):
            importlib.reload(_kernel_module())  # back to interpreted for the tests that follow
