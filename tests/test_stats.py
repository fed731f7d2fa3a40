"""Decision statistics (fastfp.stats) against scikit-learn / scipy and the literal definitions."""

import numpy as np
import pytest
from scipy import stats as sps
from sklearn import metrics as skm

from fastfp import stats as M


def _cases():
    rng = np.random.default_rng(0)
    for n in (2, 7, 50, 333):
        y = rng.integers(0, 2, n)
        y[0], y[1] = 0, 1
        yield rng.normal(size=n) + y, y  # distinct scores
        yield rng.integers(0, 4, n).astype(float), y  # many ties
    yield np.array([0.0, 0.0, 1.0, 1.0]), np.array([0, 1, 0, 1])
    yield np.array([3.0, 1.0]), np.array([1, 0])  # perfect


def _roc_by_hand(s, y):
    """Literal definitions: one point per distinct score t (positive iff score >= t), and the AUC
    as P(pos > neg) + P(pos == neg) / 2 over every pair."""
    pos, neg = s[y == 1], s[y == 0]
    ts = np.unique(s)[::-1]
    fpr = np.r_[0.0, [np.mean(neg >= t) for t in ts]]
    tpr = np.r_[0.0, [np.mean(pos >= t) for t in ts]]
    pairs = pos[:, None] - neg[None, :]
    auc = np.mean(pairs > 0) + 0.5 * np.mean(pairs == 0)
    return fpr, tpr, np.r_[np.inf, ts], auc


def test_roc_auc_and_curve_follow_the_definitions():
    for s, y in _cases():
        f0, t0, th0, auc0 = _roc_by_hand(s, y)
        assert M.roc_auc(s, y) == pytest.approx(auc0, abs=1e-12)
        f, t, th = M.roc_curve(s, y)
        np.testing.assert_allclose(f, f0)
        np.testing.assert_allclose(t, t0)
        np.testing.assert_array_equal(th, th0)
        assert M.roc_auc(s, y) == pytest.approx(np.trapezoid(t, f))
    # ties by hand: one positive above, one tied with a negative -> (1 + 0.5) / 2
    assert M.roc_auc([3.0, 1.0, 1.0], [1, 1, 0]) == 0.75


def test_tpr_at_fpr_uses_the_negatives_quantile():
    for s, y in _cases():
        fs, ts, _, _ = _roc_by_hand(s, y)
        for target in (0.0, 0.05, 0.3, 1.0):
            assert M.tpr_at_fpr(s, y, target) == pytest.approx(ts[fs <= target + 1e-12].max())
            tau = M.threshold_at_fpr(s, y, target)
            neg, pos = s[y == 0], s[y == 1]
            assert np.mean(neg >= tau) <= target + 1e-12
            assert M.tpr_at_fpr(s, y, target) == pytest.approx(np.mean(pos >= tau))
    # by hand: negatives 0..19, positives 17.5 and 30 -> tau = 19 keeps FPR 1/20, TPR 1/2
    s = np.r_[np.arange(20.0), 17.5, 30.0]
    y = np.r_[np.zeros(20), 1, 1]
    assert M.threshold_at_fpr(s, y, 0.05) == 19.0 and M.tpr_at_fpr(s, y, 0.05) == 0.5
    assert M.tpr_at_fpr(s, y, 0.10) == 1.0


def test_f1_matches_sklearn():
    rng = np.random.default_rng(1)
    for n in (1, 5, 100):
        p, y = rng.integers(0, 2, n), rng.integers(0, 2, n)
        assert M.f1(p, y) == pytest.approx(skm.f1_score(y, p, zero_division=0.0))
    assert M.f1([0, 0], [0, 0]) == 0.0


def test_binary_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="labels: "):
        M.roc_auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="labels: "):
        M.roc_auc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="labels: "):
        M.tpr_at_fpr([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="scores: "):
        M.roc_auc([np.nan, 0.2], [0, 1])
    with pytest.raises(ValueError, match="fpr: "):
        M.tpr_at_fpr([0.1, 0.2], [0, 1], fpr=1.5)
    with pytest.raises(ValueError, match="predicted: "):
        M.f1([0, 3], [0, 1])


def test_identification_counts():
    c = M.identification_counts(["a", None, "b", "c"], ["a", "a", "c", "c"])
    assert (c["correct"], c["abstain"], c["wrong"], c["n"]) == (2, 1, 1, 4)
    assert c["success"] + c["abstain_rate"] + c["error"] == pytest.approx(1.0)
    c = M.identification_counts(np.array([1, -1, 2]), np.array([1, 1, 1]))
    assert (c["correct"], c["abstain"], c["wrong"]) == (1, 1, 1)
    c = M.identification_counts([0, 9], [0, 1], abstain=9)
    assert (c["correct"], c["abstain"], c["wrong"]) == (1, 1, 0)
    with pytest.raises(ValueError, match="truth: "):
        M.identification_counts([1], [1, 2])
    with pytest.raises(ValueError, match="predicted: "):
        M.identification_counts([], [])


def test_binomial_test_matches_scipy():
    for n, p in ((1, 0.5), (20, 0.1), (64, 0.03), (200, 0.5)):
        for count in {0, 1, n // 3, n}:
            want = sps.binomtest(count, n, p, alternative="greater").pvalue if count else 1.0
            assert M.binomial_p_value(count, n, p) == pytest.approx(want, rel=1e-9, abs=1e-300)
        for alpha in (0.01, 0.05):
            t = M.binomial_threshold(n, p, alpha)
            if t == float("inf"):
                assert M.binomial_p_value(n, n, p) >= alpha
                continue
            c = round(t * n)
            assert M.binomial_p_value(c, n, p) < alpha  # the smallest count below alpha
            assert c == 0 or M.binomial_p_value(c - 1, n, p) >= alpha
    assert M.binomial_threshold(3, 0.9, 0.01) == float("inf")  # no count of 3 is that unlikely


def test_binomial_test_rejects_bad_input():
    with pytest.raises(ValueError, match="count: "):
        M.binomial_p_value(5, 4, 0.5)
    with pytest.raises(ValueError, match="p: "):
        M.binomial_p_value(1, 4, 1.5)
    with pytest.raises(TypeError, match="n: "):
        M.binomial_threshold(4.0, 0.5, 0.01)
    with pytest.raises(ValueError, match="alpha: "):
        M.binomial_threshold(4, 0.5, -0.1)
