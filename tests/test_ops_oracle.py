"""The ops tests' outside oracle (tests/oracles.py) checked against things it shares no code with,
and fastfp.reference.dct's matrix builder against scipy."""

from __future__ import annotations

import numpy as np
import oracles
import pytest
import scipy.fft
import torch

from fastfp.reference import dct as ref


def test_reference_dct_matches_scipy():
    x = torch.randn(2, 7, 9, dtype=torch.float64)
    want = scipy.fft.dctn(x.numpy(), axes=(-2, -1), norm="ortho")
    np.testing.assert_allclose(ref.dct2(x).numpy(), want, atol=1e-12)
    np.testing.assert_allclose(ref.idct2(torch.from_numpy(want)).numpy(), x.numpy(), atol=1e-12)


def test_oracle_highpass_extremes():
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    np.testing.assert_allclose(oracles.highpass(x, 0), x.numpy(), atol=1e-12)
    # largest k: only the DC term survives -> every pixel equals the image mean
    y = oracles.highpass(x, 7)
    np.testing.assert_allclose(y, np.broadcast_to(x.numpy().mean(axis=(-2, -1), keepdims=True),
                                                  y.shape), atol=1e-12)


def test_oracle_dct_matrix_is_orthonormal_dct():
    d = oracles.dct_matrix(6)
    np.testing.assert_allclose(d @ d.T, np.eye(6), atol=1e-12)
    v = np.random.default_rng(0).standard_normal(6)
    np.testing.assert_allclose(d @ v, scipy.fft.dct(v, norm="ortho"), atol=1e-12)


@pytest.mark.parametrize("n,rows,start", [(1, None, 0), (7, None, 0), (9, 3, 0), (9, 4, 5),
                                          (9, 0, 9), (32, 1, 31), (5, 0, 2)])
def test_dct_matrix_rows(n, rows, start):
    # only the asked rows are built, and they are the rows of the full matrix
    d = ref.dct_matrix(n, rows=rows, start=start)
    want = oracles.dct_matrix(n)[start:start + (n - start if rows is None else rows)]
    assert d.shape == want.shape and d.dtype == torch.float64
    np.testing.assert_allclose(d.numpy(), want, atol=1e-13)
    assert ref.dct_matrix(n, rows=rows, start=start, dtype=torch.float32).dtype == torch.float32


@pytest.mark.parametrize("kwargs,name", [(dict(start=8), "start"), (dict(start=-1), "start"),
                                         (dict(rows=8), "rows"), (dict(rows=3, start=5), "rows"),
                                         (dict(rows=-1), "rows")])
def test_dct_matrix_bad_rows(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name}: expected 0\.\."):
        ref.dct_matrix(7, **kwargs)
