"""Fused ops: fastfp.highpass / fastfp.sign_step against the DCT a user would write.

One group per (op, shape, baseline), so each ratio is explicit:

- ``... | fft``: (a) torch-dct-style full DCT via FFT (bench/baselines/dct.py);
- ``... | dense``: (b) full H x H / W x W DCT matrices and matmuls.

Targets (issue 3): CPU, batch 100: highpass 3x224x224 k=20 >= 15x vs (a) and >= 4x vs (b);
3x32x32 k=2 >= 10x vs (a). CUDA: the Triton sign_step at batch 100 3x224x224 k=20 >= 75 % of the
memory bandwidth counting x, grad and out, and >= 30x vs (a). On CUDA a second fastfp row times
the low-rank torch path (FASTFP_BACKEND=torch) for comparison.

Correctness (also under --benchmark-disable): every entry's output on the first images equals the
other side's (the baselines are themselves checked against scipy in tests/test_ops_baselines.py).
"""

from __future__ import annotations

import os

import pytest
import torch

import fastfp

from .baselines import dct as base
from .common import QUICK, bench_device, measure

DEV = bench_device()
BATCH = 8 if QUICK else 100


@pytest.fixture
def batch(request):
    # --benchmark-disable (CI) runs each body once for correctness: small batches suffice
    disabled = request.config.getoption("benchmark_disable", default=False)
    return 8 if disabled else BATCH
ALPHA = 1.0 / 255
CASES = [  # (channels, size, k, targets vs fft, targets vs dense, peak target)
    pytest.param(3, 224, 20, {"cpu": 15.0, "cuda": 30.0}, {"cpu": 4.0}, id="3x224x224-k20"),
    pytest.param(3, 32, 2, {"cpu": 10.0}, {}, id="3x32x32-k2"),
]
ROLES = ["baseline", "fastfp"] + (["fastfp-torch"] if DEV.type == "cuda" else [])


def _inputs(c, size, batch=BATCH):
    g = torch.Generator(device=DEV).manual_seed(0)
    x = torch.rand(batch, c, size, size, generator=g, device=DEV)
    grad = torch.randn(batch, c, size, size, generator=g, device=DEV)
    return x, grad


def _check(out, want):
    torch.testing.assert_close(out[:2], want, atol=2e-5, rtol=0)


def _run(benchmark, batch, role, op, c, size, k, baseline_name, targets, monkeypatch):
    x, grad = _inputs(c, size, batch)
    fft_or_dense = {"fft": (base.highpass_fft, base.sign_step_fft),
                    "dense": (base.highpass_dense, base.sign_step_dense)}[baseline_name]
    if op == "highpass":
        baseline = lambda: fft_or_dense[0](x, k)  # noqa: E731
        fast = lambda: fastfp.highpass(x, k)  # noqa: E731
        ref_first = fft_or_dense[0](x[:2], k)
        tensors = 2  # x in, out
    else:
        baseline = lambda: fft_or_dense[1](x, grad, ALPHA, k)  # noqa: E731
        fast = lambda: fastfp.sign_step(x, grad, ALPHA, k)  # noqa: E731
        ref_first = fft_or_dense[1](x[:2], grad[:2], ALPHA, k)
        tensors = 3  # x, grad in, out
    if role == "fastfp-torch":
        monkeypatch.setenv("FASTFP_BACKEND", "torch")
    extra = dict(shape=list(x.shape), dtype="float32", k=k, bytes=tensors * x.numel() * 4,
                 baseline=baseline_name)
    if targets:
        extra["target_speedup"] = targets
    if op == "sign_step" and DEV.type == "cuda" and size == 224 and baseline_name == "fft" \
            and role == "fastfp":
        extra["target_peak"] = {"cuda": 0.75}
    heavy = size >= 224 and not QUICK
    out = measure(benchmark, baseline if role == "baseline" else fast,
                  group=f"{op} {c}x{size}x{size} k={k} | {baseline_name}",
                  role="baseline" if role == "baseline" else "fastfp", device=DEV,
                  rounds=3 if heavy else 10, warmup=1, **extra)
    if role != "baseline":
        impl = fastfp.backend.last_used(op)
        benchmark.extra_info["impl"] = impl
        if role == "fastfp-torch":
            assert impl == "torch"
        elif DEV.type == "cuda" and fastfp.backend.triton_usable(DEV):
            assert impl == "triton"
    _check(out, ref_first)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("c,size,k,t_fft,t_dense", CASES)
@pytest.mark.parametrize("op", ["highpass", "sign_step"])
def test_vs_fft(benchmark, batch, monkeypatch, op, c, size, k, t_fft, t_dense, role):
    # the CPU floors are stated for the high-pass; sign_step rows carry the CUDA ones
    _run(benchmark, batch, role, op, c, size, k, "fft",
         t_fft if op == "highpass" else {kk: v for kk, v in t_fft.items() if kk == "cuda"},
         monkeypatch)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("c,size,k,t_fft,t_dense", CASES[:1])
@pytest.mark.parametrize("op", ["highpass", "sign_step"])
def test_vs_dense(benchmark, batch, monkeypatch, op, c, size, k, t_fft, t_dense, role):
    _run(benchmark, batch, role, op, c, size, k, "dense", t_dense if op == "highpass" else {},
         monkeypatch)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sign_step_half_cuda(benchmark, batch, dtype):
    """bf16 / fp16 Triton sign step (no baseline: reports GB/s against the bandwidth peak)."""
    if os.environ.get("FASTFP_BENCH_DEVICE", "cuda") != "cuda":
        pytest.skip("CUDA-only row")
    x, grad = (t.to(dtype) for t in _inputs(3, 224, batch))
    out = measure(benchmark, lambda: fastfp.sign_step(x, grad, ALPHA, 20),
                  group=f"sign_step 3x224x224 k=20 {str(dtype).split('.')[-1]}", role="fastfp",
                  device=DEV, rounds=10, warmup=2, shape=list(x.shape),
                  dtype=str(dtype).split(".")[-1], bytes=3 * x.numel() * x.element_size())
    want = base.sign_step_fft(x[:2].float(), grad[:2].float(), ALPHA, 20)
    torch.testing.assert_close(out[:2].float(), want, atol=2e-2, rtol=0)
