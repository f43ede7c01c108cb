"""Multi-label losses, written with ``keras.ops`` so they run on any Keras backend.

Every loss takes probabilities (the model ends in a sigmoid) and returns one
value per sample: the mean over labels of a per-label binary cross-entropy
variant. Class statistics (positives per label, number of train images) come
from the train split only, so nothing is learned from validation or test.
"""

from __future__ import annotations

import numpy as np
import keras
from keras import ops

EPS = 1e-7
LOSSES = ("bce", "weighted_bce", "focal", "class_weighted_bce", "mcloss")


def _clip(p):
    return ops.clip(ops.cast(p, "float32"), EPS, 1.0 - EPS)


def positive_weights(positives, total) -> np.ndarray:
    """Per-label weight of the positive term: negatives / positives (1.0 for a label with no positive)."""
    pos = np.asarray(positives, dtype="float64")
    neg = float(total) - pos
    return np.where(pos > 0, neg / np.maximum(pos, 1.0), 1.0).astype("float32")


def class_weights(positives, total) -> np.ndarray:
    """Per-label weight total / (count x number of labels), sklearn's 'balanced' (1.0 for an absent label)."""
    pos = np.asarray(positives, dtype="float64")
    n = max(len(pos), 1)
    return np.where(pos > 0, float(total) / (np.maximum(pos, 1.0) * n), 1.0).astype("float32")


def max_constraint(h, ancestor_matrix):
    """C-HMCNN's MCM: out[:, i] = max_j R[i, j] * h[:, j] (the max over label i and its descendants)."""
    r = ops.cast(ancestor_matrix, h.dtype)
    return ops.max(ops.expand_dims(h, 1) * ops.expand_dims(r, 0), axis=-1)


class _Base(keras.losses.Loss):
    def __init__(self, name, reduction="sum_over_batch_size", **kw):
        super().__init__(name=name, reduction=reduction, **kw)


@keras.saving.register_keras_serializable(package="wit_topics")
class BinaryCrossEntropy(_Base):
    """Plain BCE averaged over labels."""

    def __init__(self, name="bce", **kw):
        super().__init__(name=name, **kw)

    def call(self, y_true, y_pred):
        y, p = ops.cast(y_true, "float32"), _clip(y_pred)
        return -ops.mean(y * ops.log(p) + (1.0 - y) * ops.log(1.0 - p), axis=-1)


@keras.saving.register_keras_serializable(package="wit_topics")
class WeightedBinaryCrossEntropy(_Base):
    """BCE whose positive term is weighted per label (negatives / positives on train): rare labels count."""

    def __init__(self, pos_weight, name="weighted_bce", **kw):
        super().__init__(name=name, **kw)
        self.pos_weight = [float(w) for w in np.asarray(pos_weight).ravel()]

    def call(self, y_true, y_pred):
        y, p = ops.cast(y_true, "float32"), _clip(y_pred)
        w = ops.convert_to_tensor(np.asarray(self.pos_weight, dtype="float32"))
        return -ops.mean(w * y * ops.log(p) + (1.0 - y) * ops.log(1.0 - p), axis=-1)

    def get_config(self):
        return {**super().get_config(), "pos_weight": self.pos_weight}


@keras.saving.register_keras_serializable(package="wit_topics")
class ClassWeightedBinaryCrossEntropy(_Base):
    """BCE where each label's whole term is scaled by total / (count x labels)."""

    def __init__(self, class_weight, name="class_weighted_bce", **kw):
        super().__init__(name=name, **kw)
        self.class_weight = [float(w) for w in np.asarray(class_weight).ravel()]

    def call(self, y_true, y_pred):
        y, p = ops.cast(y_true, "float32"), _clip(y_pred)
        w = ops.convert_to_tensor(np.asarray(self.class_weight, dtype="float32"))
        return -ops.mean(w * (y * ops.log(p) + (1.0 - y) * ops.log(1.0 - p)), axis=-1)

    def get_config(self):
        return {**super().get_config(), "class_weight": self.class_weight}


@keras.saving.register_keras_serializable(package="wit_topics")
class FocalLoss(_Base):
    """Binary focal loss (Lin et al.): easy examples are down-weighted by (1 - p_t)^gamma."""

    def __init__(self, gamma=2.0, name="focal", **kw):
        super().__init__(name=name, **kw)
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        y, p = ops.cast(y_true, "float32"), _clip(y_pred)
        pos = y * ops.power(1.0 - p, self.gamma) * ops.log(p)
        neg = (1.0 - y) * ops.power(p, self.gamma) * ops.log(1.0 - p)
        return -ops.mean(pos + neg, axis=-1)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="wit_topics")
class MCLoss(_Base):
    """C-HMCNN(h)'s max-constraint loss (Giunchiglia & Lukasiewicz 2020).

    ``y_pred`` is the unconstrained output h during training. The loss uses
    MCM(y * h) for positive labels and MCM(h) for negatives, so a parent is
    only credited through the child that is actually positive. At evaluation
    the model already outputs MCM(h); MCM is idempotent, so the same formula
    applies.
    """

    def __init__(self, ancestor_matrix, name="mcloss", **kw):
        super().__init__(name=name, **kw)
        self.ancestor_matrix = np.asarray(ancestor_matrix, dtype="float32").tolist()

    def call(self, y_true, y_pred):
        y, h = ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
        r = np.asarray(self.ancestor_matrix, dtype="float32")
        constr = max_constraint(h, r)
        train = max_constraint(y * h, r)
        out = _clip((1.0 - y) * constr + y * train)
        return -ops.mean(y * ops.log(out) + (1.0 - y) * ops.log(1.0 - out), axis=-1)

    def get_config(self):
        return {**super().get_config(), "ancestor_matrix": self.ancestor_matrix}


def make_loss(name: str, positives=None, total=None, gamma: float = 2.0, ancestor_matrix=None):
    """The loss called ``name``; weighted ones need train-split ``positives`` per label and ``total`` images."""
    if name == "bce":
        return BinaryCrossEntropy()
    if name in ("weighted_bce", "class_weighted_bce"):
        if positives is None or total is None:
            raise ValueError(f"loss {name!r} needs train label counts (positives, total)")
        if name == "weighted_bce":
            return WeightedBinaryCrossEntropy(positive_weights(positives, total))
        return ClassWeightedBinaryCrossEntropy(class_weights(positives, total))
    if name == "focal":
        return FocalLoss(gamma)
    if name == "mcloss":
        if ancestor_matrix is None:
            raise ValueError("loss 'mcloss' needs the taxonomy's ancestor matrix")
        return MCLoss(ancestor_matrix)
    raise ValueError(f"unknown loss {name!r} (known: {', '.join(LOSSES)})")
