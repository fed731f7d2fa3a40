"""Outside oracle and tolerances shared by the ops tests (scipy's orthonormal DCT, float64).

A helper module, not a test module: test_ops*.py import it; test_ops_oracle.py checks the oracle.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import torch

# Absolute tolerance per dtype, relative to the output's magnitude (max |oracle|, at least 1).
ATOL = {torch.float64: 1e-11, torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}
DTYPES = tuple(ATOL)


def highpass(x: torch.Tensor, k: int) -> np.ndarray:
    """IDCTN(mask * DCTN(x)) over the last two axes with scipy, float64."""
    a = x.detach().cpu().double().numpy()
    c = scipy.fft.dctn(a, axes=(-2, -1), norm="ortho")
    h, w = a.shape[-2:]
    s = np.arange(h)[:, None] + np.arange(w)[None, :]
    c[..., (s >= 1) & (s <= k)] = 0.0
    return scipy.fft.idctn(c, axes=(-2, -1), norm="ortho")


def sign_step(x: torch.Tensor, grad: torch.Tensor, alpha: float, k: int, lo: float,
              hi: float) -> np.ndarray:
    """highpass(clip(x - alpha * sign(grad), lo, hi), k) with numpy / scipy, float64."""
    a = x.detach().cpu().double().numpy()
    g = grad.detach().cpu().double().numpy()
    stepped = torch.from_numpy(np.clip(a - alpha * np.sign(g), lo, hi))
    return highpass(stepped, k)


def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix (n x n) from scipy: column j is the DCT of the j-th unit
    vector."""
    return scipy.fft.dct(np.eye(n), axis=0, norm="ortho")


def error(y: torch.Tensor, want: np.ndarray) -> float:
    """Maximum absolute difference."""
    return float(np.abs(y.detach().cpu().double().numpy() - want).max(initial=0.0))


def assert_close(y: torch.Tensor, want: np.ndarray, dtype: torch.dtype, *,
                 reference_error: float | None = None) -> None:
    """Maximum error within the dtype's tolerance, and (when given) no worse than ~2x the
    reference's own error."""
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    err = error(y, want)
    assert err <= ATOL[dtype] * scale, f"{dtype}: max error {err:.3g} > {ATOL[dtype] * scale:.3g}"
    if reference_error is not None:
        floor = torch.finfo(dtype).eps * scale  # both exact (e.g. k=0): allow one rounding
        assert err <= 2 * reference_error + floor, (
            f"{dtype}: error {err:.3g} vs reference's own {reference_error:.3g}")
