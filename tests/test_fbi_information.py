"""Surjection, entropy, mutual information and Rajski distances vs the literal twins and sklearn."""

import functools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

from fastfp import backend, fbi
from fastfp.reference import fbi as ref


def _ref_pairwise(A, B=None):
    A = np.asarray(A)
    B = A if B is None else np.asarray(B)
    return np.array(_ref_cached(A.tobytes(), A.shape, B.tobytes(), B.shape))


@functools.cache  # both all-pairs paths compare against the same (slow) oracle
def _ref_cached(a, a_shape, b, b_shape):
    A = np.frombuffer(a, dtype=np.int64).reshape(a_shape)
    B = np.frombuffer(b, dtype=np.int64).reshape(b_shape)
    return ref.pairwise_rajski(A.tolist(), B.tolist())


@pytest.mark.parametrize("k", [1, 3, 10])
def test_surjection_matches_reference(k):
    rng = np.random.default_rng(k)
    N, C = 50, 12
    topk = np.stack([rng.permutation(C)[: k + 2] for _ in range(N)])  # more columns than k
    reference = rng.integers(C, size=N)
    got = fbi.surjection(topk, reference, k)
    assert isinstance(got, np.ndarray) and got.dtype == np.uint8
    assert got.tolist() == ref.surjection(topk.tolist(), reference.tolist(), k)
    assert got.max() <= k
    # torch in -> torch out; batched leading dims broadcast against the reference
    batch = torch.from_numpy(np.stack([topk, topk[::-1].copy()]))
    got_t = fbi.surjection(batch, torch.from_numpy(reference), k)
    assert isinstance(got_t, torch.Tensor) and got_t.shape == (2, N)
    assert got_t[0].tolist() == got.tolist()


def test_surjection_top1_without_axis_and_extra_columns_ignored():
    labels = np.array([3, 1, 2])
    assert fbi.surjection(labels, np.array([3, 0, 2]), 1).tolist() == [1, 0, 1]
    # the reference at rank 3 of a top-3 list does not count for k = 2
    assert fbi.surjection(np.array([[5, 6, 7]]), np.array([7]), 2).tolist() == [0]
    assert fbi.surjection(np.array([[5, 6, 7]]), np.array([7]), 3).tolist() == [3]


def test_surjection_bad_input():
    with pytest.raises(ValueError, match="fewer than k = 3"):
        fbi.surjection(np.zeros((4, 2), dtype=int), np.zeros(4, dtype=int), 3)
    with pytest.raises(ValueError, match="reference"):
        fbi.surjection(np.zeros((4, 2), dtype=int), np.zeros(5, dtype=int), 1)
    with pytest.raises(TypeError, match="topk_labels"):
        fbi.surjection(np.zeros((4, 2)), np.zeros(4, dtype=int), 1)
    with pytest.raises(ValueError, match="k: expected an int in"):
        fbi.surjection(np.zeros((4, 2), dtype=int), np.zeros(4, dtype=int), 0)


@pytest.mark.parametrize("L,K", [(1, 2), (7, 2), (100, 11), (333, 4)])
def test_mutual_information_equals_sklearn(L, K):
    rng = np.random.default_rng(L)
    for _ in range(5):
        a, b = rng.integers(K, size=L), rng.integers(K, size=L)
        b[: L // 2] = a[: L // 2]  # some dependence
        mi = fbi.mutual_information(a, b, k=K - 1)
        assert abs(float(mi) - mutual_info_score(a, b)) < 1e-12
        d = fbi.rajski_distance(a, b)
        assert abs(float(d) - ref.rajski_distance(a.tolist(), b.tolist())) < 1e-12
        h = fbi.entropy(a)
        assert abs(float(h) - ref.entropy(a.tolist())) < 1e-12


def test_elementwise_batches_and_kinds():
    rng = np.random.default_rng(1)
    a, b = rng.integers(4, size=(3, 20)), rng.integers(4, size=(3, 20))
    d = fbi.rajski_distance(torch.from_numpy(a), torch.from_numpy(b))
    assert isinstance(d, torch.Tensor) and d.shape == (3,)
    for i in range(3):
        assert abs(float(d[i]) - ref.rajski_distance(a[i].tolist(), b[i].tolist())) < 1e-12


def test_extreme_distances():
    a = np.array([0, 1, 2, 0, 1, 2])
    assert float(fbi.rajski_distance(a, a)) == 0.0  # same model: D = 0
    assert float(fbi.rajski_distance(a, np.zeros(6, int))) == 1.0  # constant vs anything: I = 0
    assert float(fbi.rajski_distance(np.ones(6, int), np.ones(6, int))) == 0.0  # H(joint) = 0
    assert float(fbi.mutual_information(np.ones(6, int), np.ones(6, int))) == 0.0


@pytest.fixture(params=["scatter", "matmul"])
def path(request, monkeypatch):
    """Run a test on both all-pairs paths (small problems take the scatter one by default)."""
    from fastfp.fbi import information

    monkeypatch.setattr(information, "SMALL", 1 << 40 if request.param == "scatter" else 0)
    # scatter: fp64 counts and logs; matmul: fp32 relative-error entropies, contract 1e-6
    return 1e-9 if request.param == "scatter" else 1e-6


@pytest.mark.parametrize(
    "m,n,L,k",
    [
        (1, 1, 1, 1),
        (5, 7, 1, 3),
        (9, 4, 13, 1),
        (17, 23, 50, 10),
        pytest.param(5, 260, 40, 2, marks=pytest.mark.slow),
        (3, 5, 300, 3),
    ],
)
def test_pairwise_matches_reference(m, n, L, k, path):
    rng = np.random.default_rng(m * n + L)
    A, B = rng.integers(k + 1, size=(m, L)), rng.integers(k + 1, size=(n, L))
    B[: min(m, n)] = np.where(rng.random((min(m, n), L)) < 0.7, A[: min(m, n)], B[: min(m, n)])
    A[0] = 1  # a constant row (zero entropy)
    got = fbi.pairwise_rajski(A, B, k=k)
    assert got.shape == (m, n) and got.dtype == np.float64
    np.testing.assert_allclose(got, _ref_pairwise(A, B), atol=path, rtol=0)
    assert backend.last_used("fbi.pairwise_rajski") == "torch"


def test_pairwise_symmetric_and_adversarial(path):
    rng = np.random.default_rng(5)
    A = rng.integers(4, size=(20, 30))
    A[3] = A[4]  # identical models
    A[5] = 0  # constant models
    A[6] = 0
    A[7] = np.where(np.arange(30) == 0, 1, 2)  # near-constant: tiny joint entropies
    got = fbi.pairwise_rajski(torch.from_numpy(A))
    assert isinstance(got, torch.Tensor)
    want = _ref_pairwise(A)
    np.testing.assert_allclose(got.numpy(), want, atol=path, rtol=0)
    assert np.array_equal(got.numpy(), got.numpy().T)
    assert got[3, 4] <= path and got[5, 6] == 0 and got[5, 8] == 1.0
    assert torch.all(torch.diagonal(got) == 0)


def test_pairwise_large_L_uses_fp32_counts_exactly(path):
    rng = np.random.default_rng(2)
    A, B = rng.integers(3, size=(4, 1000)), rng.integers(3, size=(3, 1000))
    B[0] = A[0]
    np.testing.assert_allclose(fbi.pairwise_rajski(A, B), _ref_pairwise(A, B), atol=path, rtol=0)


def test_reference_backend_dispatch(monkeypatch):
    rng = np.random.default_rng(3)
    A = rng.integers(3, size=(4, 9))
    want = _ref_pairwise(A)  # the sklearn-based literal twin, computed directly
    np.testing.assert_allclose(fbi.pairwise_rajski(A), want, atol=1e-12, rtol=0)
    assert backend.last_used("fbi.pairwise_rajski") == "torch"
    monkeypatch.setenv("FASTFP_BACKEND", "reference")
    slow = fbi.pairwise_rajski(A)
    assert backend.last_used("fbi.pairwise_rajski") == "reference"
    np.testing.assert_array_equal(slow, want)  # the dispatch serves the twin itself
    assert abs(float(fbi.mutual_information(A[0], A[1])) - mutual_info_score(A[0], A[1])) < 1e-12
    assert backend.last_used("fbi.mutual_information") == "reference"


def test_information_bad_input():
    with pytest.raises(ValueError, match="mismatched"):
        fbi.pairwise_rajski(np.zeros((2, 3), int), np.zeros((2, 4), int))
    with pytest.raises(ValueError, match="0..k"):
        fbi.pairwise_rajski(np.full((2, 3), 4), k=3)
    with pytest.raises(ValueError, match=">= 0"):
        fbi.mutual_information(np.array([0, -1]), np.array([0, 1]))
    with pytest.raises(ValueError, match="mismatched"):
        fbi.rajski_distance(np.zeros(3, int), np.zeros(4, int))
    with pytest.raises(TypeError, match="A: expected an integer array"):
        fbi.pairwise_rajski(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="A: expected at least 2 dims"):
        fbi.pairwise_rajski(np.zeros(3, int))
    with pytest.raises(ValueError, match="b: symbols must lie in 0..k"):
        fbi.mutual_information(np.zeros(3, int), np.full(3, 5), k=2)


@pytest.mark.gpu
def test_pairwise_cuda_matches_cpu():
    rng = np.random.default_rng(4)
    A, B = rng.integers(11, size=(300, 1000)), rng.integers(11, size=(200, 1000))
    B[:50] = A[:50]
    got = fbi.pairwise_rajski(torch.from_numpy(A).cuda(), torch.from_numpy(B).cuda(), k=10)
    assert got.is_cuda
    np.testing.assert_allclose(got.cpu().numpy(), fbi.pairwise_rajski(A, B, k=10), atol=1e-6)


@pytest.mark.gpu
def test_cupy_in_cupy_out():
    cupy = pytest.importorskip("cupy")
    A = cupy.asarray(np.random.default_rng(0).integers(3, size=(5, 20)))
    out = fbi.pairwise_rajski(A)
    assert isinstance(out, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(out), _ref_pairwise(cupy.asnumpy(A)), atol=1e-9)


@pytest.mark.parametrize("shape,k", [((1, 1, 1, 1), 1), ((1, 1, 3, 100), 1), ((2, 5, 3, 37), 4),
                                     ((3, 1, 2, 9), 10), ((1, 4, 4, 200), 254)])
def test_exact_counts_by_bincount_equal_the_matmul_ones_to_the_bit(shape, k, monkeypatch):
    # a few pairs (one detection) count by bincount, larger problems by matmul: the same exact
    # counts, so every distance has the same bits whichever way its call is batched
    from fastfp.fbi import information

    nb, m, n, L = shape
    rng = np.random.default_rng(L + k)
    A = rng.integers(k + 1, size=(nb, m, L)).astype(np.uint8)
    B = rng.integers(k + 1, size=(nb, n, L)).astype(np.uint8)
    B[..., :1] = A[:, :1, :1]  # some agreement, and constant rows when L = 1
    tiny = np.asarray(fbi.pairwise_rajski(A, B, k=k, exact=True))
    monkeypatch.setattr(information, "_TINY", -1)
    matmul = np.asarray(fbi.pairwise_rajski(A, B, k=k, exact=True))
    np.testing.assert_array_equal(tiny, matmul)
    want = [[[ref.rajski_distance(a.tolist(), b.tolist()) for b in Bi] for a in Ai]
            for Ai, Bi in zip(A, B, strict=True)]
    np.testing.assert_allclose(tiny, want, atol=1e-9, rtol=0)


# --- the distance setting: rajski, mi, mi_min through the same fast paths ----------------------


def _ref_distance(A, B, distance):
    return np.array(ref.pairwise_distance(np.asarray(A).tolist(),
                                          None if B is None else np.asarray(B).tolist(), distance))


def _close(got, want, atol):
    """Equal infinities where the twin has them, finite values within atol elsewhere."""
    got = np.asarray(got)
    fin = np.isfinite(want)
    assert np.array_equal(np.isfinite(got), fin)
    assert np.array_equal(got[~fin], want[~fin])
    np.testing.assert_allclose(got[fin], want[fin], atol=atol, rtol=0)


@pytest.mark.parametrize("distance", ["rajski", "mi", "mi_min"])
@pytest.mark.parametrize("m,n,L,k", [(1, 1, 1, 1), (5, 7, 1, 3), (9, 4, 13, 1), (17, 23, 50, 10),
                                     (3, 5, 300, 3), (4, 3, 7, 254)])
def test_pairwise_distance_matches_the_contingency_twin(m, n, L, k, distance, path):
    rng = np.random.default_rng(m * n + L + k)
    A, B = rng.integers(k + 1, size=(m, L)), rng.integers(k + 1, size=(n, L))
    B[: min(m, n)] = np.where(rng.random((min(m, n), L)) < 0.7, A[: min(m, n)], B[: min(m, n)])
    A[0] = 1  # a constant row: mi = 0, mi_min = inf
    if n > 2:
        B[2] = B[1]  # ties
    # matmul: fp32 entropies, relative 1e-6 of H(a, b) <= log(K^2) on I
    atol = path if distance != "mi" or path < 1e-7 else 1e-6 * max(1.0, 2 * math.log(k + 1))
    got = fbi.pairwise_distance(A, B, k=k, distance=distance)
    assert got.shape == (m, n) and got.dtype == np.float64
    _close(got, _ref_distance(A, B, distance), atol)
    assert backend.last_used("fbi.pairwise_distance") == "torch"
    sym = fbi.pairwise_distance(torch.from_numpy(B), k=k, distance=distance)
    assert isinstance(sym, torch.Tensor)
    _close(sym.numpy(), _ref_distance(B, None, distance), atol)
    assert torch.equal(sym, sym.T)
    if distance == "mi":  # the outside oracle
        for i in range(min(m, 3)):
            for j in range(min(n, 3)):
                assert abs(got[i, j] - mutual_info_score(A[i], B[j])) <= max(atol, 1e-12)
    if distance == "rajski":  # the old name is the same call
        np.testing.assert_array_equal(got, fbi.pairwise_rajski(A, B, k=k))


def test_pairwise_distance_diagonals_and_extremes():
    a = np.array([[0, 1, 2, 0, 1, 2], [1, 1, 1, 1, 1, 1], [2, 0, 1, 2, 0, 1]])  # row 2: relabelled
    h = np.array([ref.entropy(r.tolist()) for r in a])
    mi = fbi.pairwise_distance(a, distance="mi")
    np.testing.assert_allclose(np.diag(mi), h, atol=0, rtol=0)  # I(a; a) = H(a), exactly
    assert mi[0, 1] == 0.0 and mi[1, 1] == 0.0
    d = fbi.pairwise_distance(a, distance="mi_min")
    assert d[0, 0] == 0.0 and d[1, 1] == math.inf and d[0, 1] == math.inf and d[0, 2] <= 1e-12
    # one symbol only (k = 0 rows): every sequence constant
    z = np.zeros((2, 5), dtype=int)
    assert np.all(fbi.pairwise_distance(z, z, distance="mi") == 0.0)
    assert np.all(fbi.pairwise_distance(z, z, distance="mi_min") == math.inf)
    assert np.all(fbi.pairwise_distance(z, z) == 0.0)


@pytest.mark.parametrize("distance", ["mi", "mi_min"])
def test_pairwise_distance_exact_paths_agree_to_the_bit(distance, monkeypatch):
    from fastfp.fbi import information

    rng = np.random.default_rng(7)
    A = rng.integers(3, size=(2, 4, 37)).astype(np.uint8)
    B = rng.integers(3, size=(2, 5, 37)).astype(np.uint8)
    B[:, 0] = A[:, 0]
    tiny = np.asarray(fbi.pairwise_distance(A, B, k=2, distance=distance, exact=True))
    monkeypatch.setattr(information, "_TINY", -1)
    matmul = np.asarray(fbi.pairwise_distance(A, B, k=2, distance=distance, exact=True))
    np.testing.assert_array_equal(tiny, matmul)
    for i in range(2):
        _close(tiny[i], _ref_distance(A[i], B[i], distance), 1e-12)


def test_pairwise_distance_reference_backend_and_bad_input(monkeypatch):
    rng = np.random.default_rng(3)
    A = rng.integers(3, size=(4, 9))
    A[1] = 0
    for distance in ("mi", "mi_min"):
        want = _ref_distance(A, None, distance)
        monkeypatch.setenv("FASTFP_BACKEND", "reference")
        slow = fbi.pairwise_distance(A, distance=distance)
        assert backend.last_used("fbi.pairwise_distance") == "reference"
        monkeypatch.delenv("FASTFP_BACKEND")
        np.testing.assert_array_equal(slow, want)
        _close(fbi.pairwise_distance(A, distance=distance), want, 1e-12)
    with pytest.raises(ValueError, match="distance: expected one of 'rajski', 'mi', 'mi_min'"):
        fbi.pairwise_distance(A, distance="l2")
    with pytest.raises(ValueError, match="distance: expected one of"):
        ref.distance([0, 1], [1, 0], "mutual_information")
    with pytest.raises(ValueError, match="mismatched"):
        fbi.pairwise_distance(np.zeros((2, 3), int), np.zeros((2, 4), int), distance="mi")
