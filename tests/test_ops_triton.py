"""The fused Triton kernel (kernels/highpass_sign_step.py) against scipy's DCT.

On CPU it runs under the Triton interpreter (small shapes): TRITON_INTERPRET is read when a kernel
is decorated, so the fixture sets it and re-imports the kernel module, then restores both, leaving
other areas' kernels compiled. On a CUDA machine the `gpu` tests run the compiled kernel.
"""

from __future__ import annotations

import importlib
import os

import pytest
import torch

import fastfp
from fastfp import backend

import test_ops_oracle as oracle

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
    want = oracle.sign_step(x, g, 0.05, k, 0.1, 0.9)
    if dtype == torch.float32:
        ref_err = oracle.error(fastfp.reference.dct.sign_step(x, g, 0.05, k, 0.1, 0.9), want)
        oracle.assert_close(y, want, dtype, reference_error=ref_err)
    else:
        oracle.assert_close(y, want, dtype)
    assert torch.equal(x, xb) and torch.equal(g, gb)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("shape,k", CASES[::2], ids=str)
def test_highpass_interpreted(triton_cpu, shape, k, dtype):
    x = _rand(shape, dtype, 3)
    y = fastfp.highpass(x, k)
    assert backend.last_used("highpass") == "triton"
    oracle.assert_close(y, oracle.highpass(x, k), dtype)


def test_strided_inputs_interpreted(triton_cpu):
    base = _rand((2, 3, 12, 10), torch.float32, 4)
    x = base.transpose(-1, -2)                       # (2, 3, 10, 12), strided
    g = _rand((3, 10, 12), torch.float32, 5).expand(2, 3, 10, 12)  # batch stride 0
    y = fastfp.sign_step(x, g, 0.1, 4, -1.0, 1.0)
    assert backend.last_used("sign_step") == "triton"
    oracle.assert_close(y, oracle.sign_step(x, g, 0.1, 4, -1.0, 1.0), torch.float32)
    oracle.assert_close(fastfp.highpass(base[:, :, ::2, 1:], 3),
                        oracle.highpass(base[:, :, ::2, 1:], 3), torch.float32)
    cl = base.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    y = fastfp.sign_step(cl, g.transpose(-1, -2), 0.1, 5, -1.0, 1.0)
    assert backend.last_used("sign_step") == "triton" and y.is_contiguous()
    oracle.assert_close(y, oracle.sign_step(cl, g.transpose(-1, -2), 0.1, 5, -1.0, 1.0),
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
        oracle.assert_close(y, want.numpy(), torch.float32)
        monkeypatch.setenv("FASTFP_BACKEND", "auto")
        oracle.assert_close(y, fastfp.sign_step(x, g, 0.05, k, 0.1, 0.9).numpy(), torch.float32)
        monkeypatch.setenv("FASTFP_BACKEND", "triton")


def test_float64_goes_to_the_torch_path(triton_cpu):
    # the kernel computes in float32; float64 keeps its precision on the low-rank torch path
    x = _rand((1, 6, 6), torch.float64, 6)
    oracle.assert_close(fastfp.highpass(x, 2), oracle.highpass(x, 2), torch.float64)
    assert backend.last_used("highpass") == "cpu"


# ---- compiled kernel on a GPU -----------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("shape,k", [((4, 3, 224, 224), 20), ((8, 3, 32, 32), 2),
                                     ((2, 1, 512, 512), 20), ((2, 3, 224, 224), 446),
                                     ((3, 2, 7, 9), 5), ((2, 3, 100, 60), 0)], ids=str)
def test_triton_on_gpu(shape, k, dtype, monkeypatch):
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        pytest.skip("TRITON_INTERPRET is set: the compiled kernel is not in use")
    x = _rand(shape, dtype, 7, uniform=True, device="cuda")
    g = _rand(shape, dtype, 8, device="cuda")
    y = fastfp.sign_step(x, g, 0.01, k)
    assert backend.last_used("sign_step") == "triton"
    want = oracle.sign_step(x, g, 0.01, k, 0.0, 1.0)
    ref_err = oracle.error(fastfp.reference.dct.sign_step(x, g, 0.01, k), want)  # same precision
    oracle.assert_close(y, want, dtype, reference_error=ref_err if dtype == torch.float32 else None)
    oracle.assert_close(fastfp.highpass(x, k), oracle.highpass(x, k), dtype)
    monkeypatch.setenv("FASTFP_BACKEND", "torch")
    oracle.assert_close(fastfp.sign_step(x, g, 0.01, k), want, dtype)
    assert backend.last_used("sign_step") == "torch"


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
