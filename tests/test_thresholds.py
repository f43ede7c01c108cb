"""Per-label thresholds: F1 optimum, bootstrap median, labels without positives."""

import numpy as np
import pytest

from training.thresholds import best_f1_threshold, fit_thresholds


def _f1_at(y, s, t):
    pred = s >= t
    tp = (pred & (y == 1)).sum()
    fp = (pred & (y == 0)).sum()
    fn = (~pred & (y == 1)).sum()
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def test_separable_label_gets_threshold_in_the_gap():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    t = best_f1_threshold(y, s)
    assert t == pytest.approx(0.55)
    assert _f1_at(y, s, t) == 1.0


def test_best_f1_threshold_matches_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(20):
        y = (rng.random(60) < 0.3).astype(int)
        if y.sum() == 0:
            continue
        s = np.round(np.clip(0.3 * y + rng.random(60) * 0.7, 0, 1), 2)  # ties on purpose
        t = best_f1_threshold(y, s)
        best = max(_f1_at(y, s, c) for c in np.unique(s))
        assert _f1_at(y, s, t) == pytest.approx(best)


def test_no_positives_is_none():
    assert best_f1_threshold([0, 0, 0], [0.1, 0.5, 0.9]) is None


def test_fit_thresholds_known_optimum_and_defaults():
    n = 500
    rng = np.random.default_rng(0)
    y = np.zeros((n, 3), dtype="float32")
    y[:, 0] = rng.random(n) < 0.4
    y[:, 1] = rng.random(n) < 0.2
    p = np.zeros((n, 3), dtype="float32")
    p[:, 0] = np.where(y[:, 0] == 1, 0.8, 0.3)  # separable: every draw's optimum is 0.55
    p[:, 1] = np.where(y[:, 1] == 1, rng.uniform(0.5, 1.0, n), rng.uniform(0.0, 0.3, n))
    p[:, 2] = rng.random(n)  # no positive at all -> 0.5
    t = fit_thresholds(y, p, seed=1)
    assert t[0] == pytest.approx(0.55)
    assert 0.3 < t[1] < 0.5  # inside the gap between the classes
    assert _f1_at(y[:, 1], p[:, 1], t[1]) == 1.0
    assert t[2] == 0.5
    # deterministic for a seed
    assert np.array_equal(t, fit_thresholds(y, p, seed=1))


def test_median_of_draws_is_robust_to_noise():
    rng = np.random.default_rng(7)
    n = 2000
    y = (rng.random((n, 1)) < 0.3).astype("float32")
    p = np.clip(np.where(y == 1, 0.7, 0.3) + rng.normal(0, 0.12, (n, 1)), 0, 1).astype("float32")
    t = fit_thresholds(y, p, draws=7, fraction=0.2, seed=0)[0]
    # With equal-variance noise the F1 optimum lies between the two class means, below the midpoint.
    assert 0.3 < t < 0.6


def test_shape_mismatch():
    with pytest.raises(ValueError):
        fit_thresholds(np.zeros((3, 2)), np.zeros((3, 3)))
