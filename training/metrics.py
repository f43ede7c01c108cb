"""Evaluation of multi-label probabilities: AP, precision/recall/F1, per-label table, plots.

Implemented in numpy (checked against scikit-learn in the tests) so it needs
no extra dependency at inference time. Label groups: all labels, the 5 most
frequent (by train frequency when given, else by the evaluated split) and the
rest. Every thresholded metric is reported at 0.5 and at the per-label
thresholds.
"""

from __future__ import annotations

import numpy as np

from pipeline.labels.scores import counts, prf, prf_summary

TOP_K = 5


def average_precision(y_true, scores) -> float:
    """Area under the precision-recall curve as a step sum (sklearn's average_precision_score)."""
    y = np.asarray(y_true, dtype="float64").ravel()
    s = np.asarray(scores, dtype="float64").ravel()
    n_pos = y.sum()
    if n_pos <= 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(y)[last]
    k = np.arange(1, len(s) + 1)[last]
    precision = tp / k
    recall = tp / n_pos
    prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - prev) * precision))


def macro_average_precision(y_true, probs) -> float:
    """Mean AP over labels with at least one positive (nan if none has one)."""
    y = np.asarray(y_true)
    aps = [average_precision(y[:, j], probs[:, j]) for j in range(y.shape[1]) if y[:, j].sum() > 0]
    return float(np.mean(aps)) if aps else float("nan")


def label_groups(y_true, names, train_counts=None, k: int = TOP_K) -> dict[str, np.ndarray]:
    """Column indices of all labels, the k most frequent and the rest."""
    freq = np.asarray(train_counts if train_counts is not None else np.asarray(y_true).sum(0), dtype="float64")
    top = np.sort(np.argsort(-freq, kind="mergesort")[:k])
    rest = np.setdiff1d(np.arange(len(names)), top)
    return {"all": np.arange(len(names)), "top5": top, "rest": rest}


def evaluate(y_true, probs, thresholds, names, train_counts=None) -> dict:
    """Flat dict of metrics: macro_auc_pr, per group x (at 0.5, at thresholds) P/R/F1, labels per image."""
    y = np.asarray(y_true, dtype="float32")
    p = np.asarray(probs, dtype="float32")
    thr = np.asarray(thresholds, dtype="float32")
    out = {
        "n_images": int(len(y)),
        "macro_auc_pr": macro_average_precision(y, p),
        "mean_prevalence": float(y.mean()) if y.size else float("nan"),
        "mean_prevalence_positive_labels": float(y.mean(0)[y.sum(0) > 0].mean()) if (y.sum(0) > 0).any() else float("nan"),
        "true_labels_per_image": float(y.sum(1).mean()) if len(y) else float("nan"),
        "labels_with_positives": int((y.sum(0) > 0).sum()),
    }
    groups = label_groups(y, names, train_counts)
    for at, cut in (("at05", np.float32(0.5)), ("atthr", thr)):
        pred = p >= cut
        out[f"{at}_labels_per_image"] = float(pred.sum(1).mean()) if len(y) else float("nan")
        for group, cols in groups.items():
            if len(cols) == 0:
                continue
            for metric, value in prf_summary(y[:, cols], pred[:, cols]).items():
                out[f"{group}_{at}_{metric}"] = value
    for group, cols in groups.items():
        if len(cols):
            out[f"{group}_macro_auc_pr"] = macro_average_precision(y[:, cols], p[:, cols])
    return out


def per_label_table(y_true, probs, thresholds, names):
    """pandas DataFrame: one row per label with support, prevalence, AP and P/R/F1 at 0.5 and at its threshold."""
    import pandas as pd

    from pipeline.labels.taxonomy import slug

    y = np.asarray(y_true, dtype="float32")
    p = np.asarray(probs, dtype="float32")
    thr = np.asarray(thresholds, dtype="float32")
    rows = {
        "label": list(names),
        "slug": [slug(n) for n in names],
        "support": y.sum(0).astype("int64"),
        "prevalence": y.mean(0) if len(y) else np.full(len(names), np.nan),
        "average_precision": [average_precision(y[:, j], p[:, j]) for j in range(len(names))],
        "threshold": thr.astype("float64"),
    }
    for at, cut in (("at05", np.float32(0.5)), ("atthr", thr)):
        tp, fp, fn = counts(y, p >= cut)
        pr, rc, f1 = prf(tp, fp, fn)
        rows[f"precision_{at}"], rows[f"recall_{at}"], rows[f"f1_{at}"] = pr, rc, f1
    return pd.DataFrame(rows)


def pr_curve(y_true, scores):
    """(recall, precision) points of the PR curve, highest threshold first."""
    y = np.asarray(y_true, dtype="float64").ravel()
    s = np.asarray(scores, dtype="float64").ravel()
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(y)[last]
    k = np.arange(1, len(s) + 1)[last]
    return tp / max(y.sum(), 1.0), tp / k


def plot_pr_curves(y_true, probs, names, path: str, max_labels: int = 12) -> str:
    """PR curves of the most frequent labels, one PNG (Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(y_true)
    support = y.sum(0)
    cols = [j for j in np.argsort(-support, kind="mergesort") if support[j] > 0][:max_labels]
    fig, ax = plt.subplots(figsize=(7, 6))
    for j in cols:
        r, pr = pr_curve(y[:, j], probs[:, j])
        ax.step(np.r_[0.0, r], np.r_[pr[:1] if len(pr) else [1.0], pr], where="post",
                label=f"{names[j]} (AP {average_precision(y[:, j], probs[:, j]):.2f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"PR curves (macro AP {macro_average_precision(y, probs):.3f})")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_thresholds(thresholds, names, path: str, f1_at05=None, f1_atthr=None) -> str:
    """Bar chart of per-label thresholds (and F1 at 0.5 vs at the threshold when given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(8, 0.35 * len(names)), 5))
    ax.bar(x, thresholds, color="#888", label="threshold")
    if f1_at05 is not None and f1_atthr is not None:
        ax.plot(x, f1_at05, "o", label="F1 at 0.5")
        ax.plot(x, f1_atthr, "s", label="F1 at threshold")
    ax.axhline(0.5, color="k", lw=0.5, ls="--")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=75, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
