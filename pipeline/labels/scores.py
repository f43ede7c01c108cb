"""Precision, recall and F1 of label sets against reference label sets, per label and overall.

One implementation for everything that scores topic labels: the labelers against people's labels
(``pipeline.labels.quality``) and the model's predictions against the graph's labels
(``training.metrics``).
"""

from __future__ import annotations

import numpy as np


def prf(tp, fp, fn):
    p = np.divide(tp, tp + fp, out=np.zeros_like(tp, dtype="float64"), where=(tp + fp) > 0)
    r = np.divide(tp, tp + fn, out=np.zeros_like(tp, dtype="float64"), where=(tp + fn) > 0)
    f = np.divide(2 * p * r, p + r, out=np.zeros_like(tp, dtype="float64"), where=(p + r) > 0)
    return p, r, f


def counts(y_true, y_pred):
    y = np.asarray(y_true).astype(bool)
    q = np.asarray(y_pred).astype(bool)
    tp = (y & q).sum(0).astype("float64")
    fp = (~y & q).sum(0).astype("float64")
    fn = (y & ~q).sum(0).astype("float64")
    return tp, fp, fn


def prf_summary(y_true, y_pred) -> dict:
    """Micro and macro precision/recall/F1 (zero when undefined, like sklearn's zero_division=0)."""
    tp, fp, fn = counts(y_true, y_pred)
    p, r, f = prf(tp, fp, fn)
    mp, mr, mf = prf(np.array([tp.sum()]), np.array([fp.sum()]), np.array([fn.sum()]))
    return {
        "precision_micro": float(mp[0]),
        "recall_micro": float(mr[0]),
        "f1_micro": float(mf[0]),
        "precision_macro": float(p.mean()) if len(p) else float("nan"),
        "recall_macro": float(r.mean()) if len(r) else float("nan"),
        "f1_macro": float(f.mean()) if len(f) else float("nan"),
    }
