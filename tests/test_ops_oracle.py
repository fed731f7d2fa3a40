"""Outside oracle and tolerances shared by the ops tests (scipy's orthonormal DCT, float64).

Imported by test_ops*.py as a plain module; its own tests check the oracle itself."""

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


def sign_step(x, grad, alpha, k, lo, hi) -> np.ndarray:
    a = x.detach().cpu().double().numpy()
    g = grad.detach().cpu().double().numpy()
    stepped = torch.from_numpy(np.clip(a - alpha * np.sign(g), lo, hi))
    return highpass(stepped, k)


def error(y: torch.Tensor, want: np.ndarray) -> float:
    return float(np.abs(y.detach().cpu().double().numpy() - want).max(initial=0.0))


def assert_close(y, want, dtype, *, reference_error: float | None = None):
    """Within the dtype's tolerance, and (when given) no worse than ~2x the reference's error."""
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    err = error(y, want)
    assert err <= ATOL[dtype] * scale, f"{dtype}: max error {err:.3g} > {ATOL[dtype] * scale:.3g}"
    if reference_error is not None:
        floor = torch.finfo(dtype).eps * scale  # both exact (e.g. k=0): allow one rounding
        assert err <= 2 * reference_error + floor, (
            f"{dtype}: error {err:.3g} vs reference's own {reference_error:.3g}")


# The oracle itself, checked against things it does not share code with.

def test_reference_dct_matches_scipy():
    from fastfp.reference import dct as ref

    x = torch.randn(2, 7, 9, dtype=torch.float64)
    want = scipy.fft.dctn(x.numpy(), axes=(-2, -1), norm="ortho")
    np.testing.assert_allclose(ref.dct2(x).numpy(), want, atol=1e-12)
    np.testing.assert_allclose(ref.idct2(torch.from_numpy(want)).numpy(), x.numpy(), atol=1e-12)


def test_oracle_highpass_extremes():
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    np.testing.assert_allclose(highpass(x, 0), x.numpy(), atol=1e-12)
    # largest k: only the DC term survives -> every pixel equals the image mean
    y = highpass(x, 7)
    np.testing.assert_allclose(y, np.broadcast_to(x.numpy().mean(axis=(-2, -1), keepdims=True),
                                                  y.shape), atol=1e-12)
