"""Per-label decision thresholds chosen on the threshold split.

Each label gets the F1-optimal threshold in each of several bootstrap draws
(sampling with replacement, 20% of the split by default), and the median over
the draws: more stable than one optimum on a small split. A label with no
positive in any draw keeps 0.5.
"""

from __future__ import annotations

import numpy as np

DRAWS = 7
FRACTION = 0.2
DEFAULT = 0.5


def best_f1_threshold(y_true, scores) -> float | None:
    """The threshold t maximising F1 of (score >= t), or None without positives.

    Candidates are midpoints between consecutive distinct scores (and the top
    score itself), so a separable label gets a threshold in the gap.
    """
    y = np.asarray(y_true, dtype="float64").ravel()
    s = np.asarray(scores, dtype="float64").ravel()
    n_pos = y.sum()
    if n_pos <= 0:
        return None
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    k = np.arange(1, len(s) + 1)  # predicted positives when cutting after each element
    last = np.r_[s[1:] != s[:-1], True]  # cut only between distinct scores
    tp, k, idx = tp[last], k[last], np.nonzero(last)[0]
    f1 = 2 * tp / (k + n_pos)
    best = int(np.argmax(f1))
    i = idx[best]
    lower = s[i + 1] if i + 1 < len(s) else None
    return float(s[i] if lower is None else (s[i] + lower) / 2.0)


def fit_thresholds(
    y_true, probs, draws: int = DRAWS, fraction: float = FRACTION, seed: int = 0, default: float = DEFAULT
) -> np.ndarray:
    """Median over ``draws`` bootstrap samples of the per-label F1-optimal threshold."""
    y = np.asarray(y_true, dtype="float32")
    p = np.asarray(probs, dtype="float32")
    if y.shape != p.shape or y.ndim != 2:
        raise ValueError(f"y_true {y.shape} and probs {p.shape} must be the same (n, labels) shape")
    n, labels = y.shape
    out = np.full(labels, default, dtype="float64")
    if n == 0:
        return out
    rng = np.random.default_rng(seed)
    size = max(1, int(round(fraction * n)))
    samples = [rng.integers(0, n, size=size) for _ in range(draws)]
    for j in range(labels):
        found = [t for rows in samples if (t := best_f1_threshold(y[rows, j], p[rows, j])) is not None]
        if found:
            out[j] = float(np.median(found))
    return out
