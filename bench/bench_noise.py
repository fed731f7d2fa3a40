"""Weight noise: fastfp.noise vs the per-parameter torch loop a user writes (baselines/noise.py).

Groups (baseline and fastfp measured in the same run):

- ``noise perturb vgg16 ...``: ``p + U(-delta, delta)`` for a VGG-16-sized parameter list (shapes
  only, random values). Full VGG-16 (138 M fp32) on CUDA; on CPU the VGG-16 layout at half width
  (~35 M, a quarter of the weights: the 2 shared cores and memory of the CI box); QUICK or
  --benchmark-disable (CI): 1/8 width. Targets: >= 2x on CPU; >= 80 % of HBM bandwidth on CUDA
  (bytes = read master + write out).
  Rows: a reusable Perturber (the target row), one-shot perturb(), and the pure-torch fallback
  (no extension, for information).
- ``noise grad_mean cifar vgg11 ...``: RC+GM gradient mean over q noisy copies, fastfp (one
  scratch copy, functional calls; loop and vmap rows) vs q deep-copied perturbed models;
  target >= 3x on CUDA.
- ``noise rcgm overhead ...``: fastfp's gradmean.grad_mean vs q x (forward + input gradient) of the
  bare model (no noise): speed-up >= 0.91 on CUDA means at most 10 % overhead for the noise.

Correctness (also under --benchmark-disable): fastfp's outputs are compared bit for bit (perturb)
or to 1e-4 (grad_mean) with the same-stream reference twin; the naive baseline, drawing torch's
noise, is checked for bounds.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn as nn

import fastfp
from fastfp.cexamples import gradmean
from fastfp.reference import noise as ref

from .baselines import noise as base
from .common import QUICK, bench_device, measure

DELTA = 0.01
VGG16: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                          512, 512, 512, "M"]
VGG11: list[int | str] = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


def vgg16_shapes(width: float = 1.0, classes: int = 1000) -> list[tuple[int, ...]]:
    """Parameter shapes of torchvision's vgg16 (width 1: 138,357,544 weights), channels scaled."""
    shapes, c = [], 3
    for v in VGG16:
        if isinstance(v, int):
            w = max(1, int(v * width))
            shapes += [(w, c, 3, 3), (w,)]
            c = w
    hidden = max(1, int(4096 * width))
    return shapes + [(hidden, c * 7 * 7), (hidden,), (hidden, hidden), (hidden,),
                     (classes, hidden), (classes,)]


@functools.lru_cache(maxsize=2)
def vgg16_params(device: str, width: float) -> tuple[torch.Tensor, ...]:
    g = torch.Generator(device=device).manual_seed(0)
    return tuple(torch.randn(s, generator=g, device=device) * 0.05 for s in vgg16_shapes(width))


@pytest.fixture
def small(request) -> bool:
    """QUICK shapes, also when benchmarks are disabled (CI runs each body once, for correctness)."""
    return QUICK or bool(request.config.getoption("benchmark_disable", False))


def perturb_width(device: torch.device, small: bool) -> float:
    if small:
        return 0.125
    return 1.0 if device.type == "cuda" else 0.5


def check_perturbed(params, outs, delta, exact: bool, seed=0, offset=0):
    assert len(outs) == len(params)
    for o, p in zip(outs, params, strict=True):
        assert o.shape == p.shape and o.dtype == p.dtype
        assert (o - p).abs().max().item() <= delta * (1 + 1e-6) + 1e-7
    if exact:  # the same stream as the reference twin, bit for bit (first tensors and last one)
        for o, w in zip(outs[:2], ref.perturb(params[:2], delta, seed, offset), strict=True):
            assert torch.equal(o, w)
        last_base = sum(p.numel() for p in params[:-1])
        z = ref.noise(last_base, params[-1].numel(), delta, seed, offset, params[-1].device)
        assert torch.equal(outs[-1], params[-1] + z)


@pytest.mark.parametrize("role", ["baseline", "fastfp", "fastfp-oneshot", "fallback"])
def test_perturb_vgg16(benchmark, role, monkeypatch, small):
    """fastfp: a Perturber drawing into reused buffers (what grad_mean does each copy);
    fastfp-oneshot: perturb() allocating and converting the list on every call."""
    device = bench_device()
    width = perturb_width(device, small)
    params = list(vgg16_params(str(device), width))
    numel = sum(p.numel() for p in params)
    if role == "fallback":
        monkeypatch.setenv("FASTFP_BACKEND", "torch")
    if role == "baseline":
        g = torch.Generator(device=device).manual_seed(0)

        def fn():
            return base.perturb_naive(params, DELTA, g)
    elif role == "fastfp":
        noisy = fastfp.noise.Perturber(params)

        def fn():
            return noisy.draw(DELTA, seed=0, offset=0)
    else:
        def fn():
            return fastfp.noise.perturb(params, DELTA, seed=0, offset=0)
    targets = {} if role != "fastfp" else dict(target_speedup={"cpu": 2.0},
                                               target_peak={"cuda": 0.8})
    name = "vgg16" if width == 1.0 else f"vgg16 x{width} width"
    outs = measure(benchmark, fn, group=f"noise perturb {name} ({numel / 1e6:.1f} M fp32)",
                   role="baseline" if role == "baseline" else "fastfp", device=device,
                   rounds=2 if role == "fallback" else 5, warmup=0 if role == "fallback" else 1,
                   entry=role, numel=numel, tensors=len(params), dtype="float32",
                   bytes=2 * 4 * numel, **targets)
    if role != "baseline":
        benchmark.extra_info["impl"] = fastfp.backend.last_used("noise.perturb")
        assert fastfp.backend.last_used("noise.perturb") == (
            "torch" if role == "fallback" else fastfp.noise.implementation(device))
    check_perturbed(params, outs, DELTA, exact=role != "baseline")


def vgg11_cifar(width: float, classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    c = 3
    for v in VGG11:
        if isinstance(v, str):
            layers.append(nn.MaxPool2d(2))
        else:
            w = max(1, int(v * width))
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
            c = w
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c, classes)).eval()


def cifar_case(device: torch.device, small: bool):
    """(model, x, labels, q): VGG-11 CIFAR (9.2 M weights) on CUDA, narrower on CPU."""
    if small:
        width, batch, q = 0.125, 4, 4
    elif device.type == "cuda":
        width, batch, q = 1.0, 128, 10
    else:
        width, batch, q = 0.25, 16, 10
    model = vgg11_cifar(width).to(device)
    g = torch.Generator(device=device).manual_seed(1)
    x = torch.rand(batch, 3, 32, 32, generator=g, device=device)
    labels = torch.randint(0, 10, (batch,), generator=g, device=device)
    return model, x, labels, q, width


@pytest.mark.parametrize("role", ["baseline", "fastfp", "fastfp-vmap"])
def test_grad_mean_cifar(benchmark, role, small):
    device = bench_device()
    model, x, labels, q, width = cifar_case(device, small)
    if role == "baseline":
        def fn():
            return base.grad_mean_naive(model, x, labels, DELTA, q, 0)
    else:
        batch = "vmap" if role == "fastfp-vmap" else "loop"

        def fn():
            return gradmean.grad_mean(model, x, labels, DELTA, q, seed=0, batch=batch)
    weights = sum(p.numel() for p in model.parameters())
    group = f"noise grad_mean cifar vgg11 x{width} q={q} batch={x.shape[0]}"
    g = measure(benchmark, fn, group=group,
                role="baseline" if role == "baseline" else "fastfp", device=device, rounds=3,
                warmup=1, entry=role, shape=list(x.shape), weights=weights, q=q,
                dtype="float32", **({"target_speedup": {"cuda": 3.0}} if role == "fastfp" else {}))
    assert g.shape == x.shape and torch.isfinite(g).all()
    if role != "baseline":
        want = ref.grad_mean(model, x, labels, DELTA, q, 0)
        torch.testing.assert_close(g, want, rtol=1e-4, atol=1e-6 * want.abs().max().item())


@pytest.mark.parametrize("role", ["baseline", "fastfp"])
def test_rcgm_overhead(benchmark, role, small):
    device = bench_device()
    model, x, labels, q, width = cifar_case(device, small)
    if role == "baseline":
        def fn():
            return base.grad_plain(model, x, labels, q)
    else:
        def fn():
            return gradmean.grad_mean(model, x, labels, DELTA, q, seed=0)
    g = measure(benchmark, fn, group=f"noise rcgm overhead vgg11 x{width} q={q} batch={x.shape[0]}",
                role=role, device=device, rounds=3, warmup=1, shape=list(x.shape), q=q,
                dtype="float32", **({"target_speedup": {"cuda": 0.91}} if role == "fastfp" else {}))
    assert g.shape == x.shape and torch.isfinite(g).all()
    if role == "fastfp":  # with delta = 0 the noisy mean is exactly the plain gradient
        torch.testing.assert_close(gradmean.grad_mean(model, x, labels, 0.0, 1, seed=0),
                                   base.grad_plain(model, x, labels, 1))
