"""FBI engine: all-pairs Rajski distances and greedy scores vs the code a user writes otherwise.

Groups (baseline and fastfp measured in the same run):

- ``fbi rajski vs bincount ...``: fastfp.fbi.pairwise_rajski (one-hot matmul of joint histograms)
  vs a vectorised numpy bincount on combined codes; 1000 x 1000 models, L = 100, k = 10
  (QUICK: 300 x 300). Target >= 2x on CPU.
- ``fbi rajski vs sklearn loop ...``: the same call vs a loop of mutual_info_score over pairs,
  timed on a sample of pairs and extrapolated (``baseline_extrapolated_s``). Target >= 150x on CPU.
- ``fbi rajski cuda 1000x1000 L=1000 ...``: 10^6 pairs at L = 1000 on the GPU, target <= 1 ms.
- ``fbi greedy scores ...``: eq. (7) for every input, 10,000 inputs x 1,000 models top-3
  (QUICK: 2,000 x 300), vs the literal loop timed on a sample of inputs and extrapolated.
  Target >= 20x on CPU.

Correctness (also under --benchmark-disable, with small shapes): distances equal the baselines
to 1e-6 (the contract), greedy numerators equal the literal loop exactly.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest
import torch

from fastfp import fbi

from .baselines import fbi as base
from .common import QUICK, bench_device, measure

K = 11  # k = 10


def _disabled(request) -> bool:
    return bool(request.config.getoption("benchmark_disable", default=False))


@functools.lru_cache(maxsize=4)
def symbols(m: int, n: int, L: int, seed: int = 0):
    """Model outputs after S_k: mostly right at rank 1, related pairs share most symbols."""
    rng = np.random.default_rng(seed)
    p = np.array([0.2, 0.5] + [0.3 / (K - 2)] * (K - 2))
    A = rng.choice(K, size=(m, L), p=p)
    B = rng.choice(K, size=(n, L), p=p)
    r = min(m, n) // 2
    B[:r] = np.where(rng.random((r, L)) < 0.8, A[:r], B[:r])
    return A, B


def _sample_pairs(m, n, count, seed=1):
    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(m, size=count).tolist(), rng.integers(n, size=count).tolist()
    return list(zip(rows, cols, strict=True))


def _size(request):
    if _disabled(request):
        return 60, 100
    return (300 if QUICK else 1000), 100


@pytest.mark.parametrize("role", ["baseline", "fastfp"])
def test_rajski_vs_bincount(benchmark, request, role):
    device = torch.device("cpu")
    m, L = _size(request)
    A, B = symbols(m, m, L)
    group = f"fbi rajski vs bincount {m}x{m} L={L} k={K - 1}"
    info = dict(shape=[m, m, L], k=K - 1, pairs=m * m, target_speedup={"cpu": 2})
    if role == "baseline":
        d = measure(benchmark, lambda: base.pairwise_rajski_bincount(A, B, K), group=group,
                    role=role, device=device, rounds=2, **info)
    else:
        tA, tB = torch.from_numpy(A), torch.from_numpy(B)
        d = measure(benchmark, lambda: fbi.pairwise_rajski(tA, tB, k=K - 1), group=group,
                    role=role, device=device, rounds=3,
                    impl="torch one-hot matmul (bf16 counts, fp64 entropies)", **info)
        d = d.numpy()
    sample = _sample_pairs(m, m, 50)
    want = base.rajski_pairs_sklearn(A, B, sample)
    np.testing.assert_allclose([d[i, j] for i, j in sample], want, atol=1e-6)


@pytest.mark.parametrize("role", ["baseline", "fastfp"])
def test_rajski_vs_sklearn_loop(benchmark, request, role):
    device = torch.device("cpu")
    m, L = _size(request)
    A, B = symbols(m, m, L)
    group = f"fbi rajski vs sklearn loop {m}x{m} L={L} k={K - 1}"
    pairs = _sample_pairs(m, m, 20 if _disabled(request) else 400)
    scale = (m * m) / len(pairs)
    if role == "baseline":
        t = min(_timed(lambda: base.rajski_pairs_sklearn(A, B, pairs)) for _ in range(2))
        got = measure(benchmark, lambda: base.rajski_pairs_sklearn(A, B, pairs), group=group,
                      role=role, device=device, rounds=1, warmup=0, pairs_timed=len(pairs),
                      pairs_total=m * m, baseline_extrapolated_s=t * scale,
                      extrapolation=f"sample of {len(pairs)} pairs x {scale:.0f}")
        d = fbi.pairwise_rajski(A, B, k=K - 1)
        np.testing.assert_allclose(got, [d[i, j] for i, j in pairs], atol=1e-6)
    else:
        tA, tB = torch.from_numpy(A), torch.from_numpy(B)
        d = measure(benchmark, lambda: fbi.pairwise_rajski(tA, tB, k=K - 1), group=group, role=role,
                    device=device, rounds=3, shape=[m, m, L], target_speedup={"cpu": 150})
        np.testing.assert_allclose([float(d[i, j]) for i, j in pairs[:10]],
                                   base.rajski_pairs_sklearn(A, B, pairs[:10]), atol=1e-6)


@pytest.mark.gpu
def test_rajski_cuda_million_pairs(benchmark, request):
    device = bench_device()
    if device.type != "cuda":
        pytest.skip("the 10^6-pair target is for CUDA")
    m, L = (200, 1000) if _disabled(request) else (1000, 1000)
    A, B = symbols(m, m, L)
    tA, tB = torch.from_numpy(A).to(device), torch.from_numpy(B).to(device)
    d = measure(benchmark, lambda: fbi.pairwise_rajski(tA, tB, k=K - 1),
                group=f"fbi rajski cuda {m}x{m} L={L} k={K - 1}", role="fastfp", device=device,
                rounds=10, warmup=3, shape=[m, m, L], pairs=m * m, flops=2 * (m * K) * (m * K) * L,
                peak_precision="fp16", target_max_s={"cuda": 1e-3})
    sample = _sample_pairs(m, m, 20)
    np.testing.assert_allclose([float(d[i, j]) for i, j in sample],
                               base.rajski_pairs_sklearn(A, B, sample), atol=1e-6)


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _top3(rng, shape, classes=100):
    """Random top-3 lists of distinct labels: a first label, then two distinct offsets from it."""
    first = rng.integers(classes, size=shape)
    o1 = rng.integers(1, classes, size=shape)
    o2 = rng.integers(1, classes - 1, size=shape)
    o2 = o2 + (o2 >= o1)
    return np.stack([first, (first + o1) % classes, (first + o2) % classes], -1)


@functools.lru_cache(maxsize=2)
def greedy_outputs(models: int, inputs: int, families: int = 50, seed: int = 0):
    """Top-3 outputs (100 classes) of ``families`` vanilla models and noisy variants of theirs."""
    rng = np.random.default_rng(seed)
    vanilla = _top3(rng, (families, inputs))
    fam = np.arange(models) % families
    out = vanilla[fam]
    redraw = rng.random((models, inputs)) < 0.2
    out[redraw] = _top3(rng, (int(redraw.sum()),))
    return out, fam


@pytest.mark.parametrize("role", ["baseline", "fastfp"])
def test_greedy_scores(benchmark, request, role):
    device = bench_device() if role == "fastfp" else torch.device("cpu")
    models, inputs = (60, 200) if _disabled(request) else ((300, 2000) if QUICK else (1000, 10_000))
    outputs, fam = greedy_outputs(models, inputs)
    family = np.flatnonzero(fam == 0)
    sample = list(range(0, inputs, max(1, inputs // (20 if _disabled(request) else 100))))
    group = f"fbi greedy scores {inputs} inputs x {models} models top-3"
    sub = [[tuple(o) for o in row] for row in outputs[:, sample].tolist()]  # literal twin's format
    want = base.detection_scores_loop(sub, family, range(len(sample)))
    if role == "baseline":
        def loop():
            return base.detection_scores_loop(sub, family, range(len(sample)))

        t = min(_timed(loop) for _ in range(2))
        measure(benchmark, loop, group=group, role=role, device=device, rounds=1, warmup=0,
                inputs_timed=len(sample), baseline_extrapolated_s=t * inputs / len(sample),
                extrapolation=f"sample of {len(sample)} inputs x {inputs / len(sample):.0f}")
    else:
        enc = fbi.encode(torch.from_numpy(outputs).to(device))  # once per database, not per step
        fam_t = torch.from_numpy(fam == 0).to(device)
        num = measure(benchmark, lambda: fbi.detection_scores(enc, fam_t), group=group, role=role,
                      device=device, rounds=5, shape=[models, inputs, 3], groups=enc.num_groups,
                      target_speedup={"cpu": 20})
        assert num[sample].cpu().tolist() == want
