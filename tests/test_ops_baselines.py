"""The benchmark baselines of the ops (bench/baselines/dct.py) compute the same thing as scipy:
a speed-up against a wrong baseline would mean nothing."""

from __future__ import annotations

import numpy as np
import oracles
import pytest
import scipy.fft
import torch

from fastfp.bench.baselines import dct as base


@pytest.mark.parametrize("h,w", [(1, 1), (1, 5), (2, 2), (7, 9), (31, 32), (64, 48)])
def test_fft_dct_matches_scipy(h, w):
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    c = base.dct_2d(x)
    np.testing.assert_allclose(c.numpy(), scipy.fft.dctn(x.numpy(), axes=(-2, -1), norm="ortho"),
                               atol=1e-12)
    np.testing.assert_allclose(base.idct_2d(c).numpy(), x.numpy(), atol=1e-12)


@pytest.mark.parametrize("fn", ["fft", "dense"])
@pytest.mark.parametrize("h,w,k", [(7, 9, 3), (32, 32, 2), (40, 24, 20), (6, 6, 10)])
def test_baseline_ops_match_oracle(fn, h, w, k):
    x = torch.rand(2, 3, h, w, dtype=torch.float64)
    g = torch.randn(2, 3, h, w, dtype=torch.float64)
    hp = getattr(base, f"highpass_{fn}")
    ss = getattr(base, f"sign_step_{fn}")
    np.testing.assert_allclose(hp(x, k).numpy(), oracles.highpass(x, k), atol=1e-11)
    np.testing.assert_allclose(ss(x, g, 0.1, k).numpy(), oracles.sign_step(x, g, 0.1, k, 0.0, 1.0),
                               atol=1e-11)
