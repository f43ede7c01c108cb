"""EfficientNet multi-label classifier (Keras 3, any backend).

EfficientNet from ``keras.applications`` includes its own rescaling and
normalisation, so the model takes float32 pixels in 0..255 (NHWC).
"""

from __future__ import annotations

import os

import numpy as np
import keras
from keras import ops

from training.losses import max_constraint

BACKBONES = {f"B{i}": f"EfficientNetB{i}" for i in range(8)}


@keras.saving.register_keras_serializable(package="wit_topics")
class MaxConstraint(keras.layers.Layer):
    """C-HMCNN(h) head: passes h through while training, outputs MCM(h) otherwise.

    The MCLoss needs the raw h while training; at inference a parent's
    probability is then never below any of its descendants'.
    """

    def __init__(self, ancestor_matrix, **kw):
        super().__init__(**kw)
        self.ancestor_matrix = np.asarray(ancestor_matrix, dtype="float32").tolist()

    def call(self, h, training=None):
        if training:
            return h
        return max_constraint(h, np.asarray(self.ancestor_matrix, dtype="float32"))

    def get_config(self):
        return {**super().get_config(), "ancestor_matrix": self.ancestor_matrix}


def build_model(
    num_labels: int,
    backbone: str = "B0",
    weights: str = "imagenet",
    image_size: int = 64,
    trainable="all",
    hierarchical_head: bool = False,
    ancestor_matrix=None,
    bn_momentum: float = 0.99,
) -> keras.Model:
    """EfficientNet<backbone> (avg-pooled) + Dense(128, relu) + Dense(num_labels, sigmoid).

    ``weights``: "imagenet" (downloaded by Keras), "none" (random init) or a
    path to a ``.weights.h5`` file of this same model, loaded after building.
    ``trainable``: "all", or N to train only the backbone's last N layers (the
    head is always trainable).
    ``bn_momentum``: of every BatchNormalization layer of the backbone (Keras's
    is 0.99); a lower one (0.9) lets the moving statistics of a model trained
    from scratch on a small set catch up within a few hundred steps, so that
    validation loss is not noise in the first epochs.
    """
    key = backbone.upper() if not backbone.upper().startswith("EFFICIENTNET") else backbone.upper()[12:]
    if key not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r} (known: {', '.join(BACKBONES)})")
    local_weights = None
    if weights in ("none", "None", "", None):
        app_weights = None
    elif weights == "imagenet":
        app_weights = "imagenet"
    else:
        if not os.path.exists(weights):
            raise FileNotFoundError(f"weights file {weights!r} not found")
        app_weights, local_weights = None, weights
    if hierarchical_head and ancestor_matrix is None:
        raise ValueError("hierarchical_head needs the taxonomy's ancestor_matrix")

    base = getattr(keras.applications, BACKBONES[key])(
        include_top=False,
        weights=app_weights,
        input_shape=(image_size, image_size, 3),
        pooling="avg",
    )
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = bn_momentum
    if trainable != "all":
        n = int(trainable)
        base.trainable = True
        layers = base.layers
        for i, layer in enumerate(layers):
            layer.trainable = i >= len(layers) - n if n > 0 else False

    inputs = keras.Input((image_size, image_size, 3), dtype="float32", name="image")
    x = base(inputs)
    x = keras.layers.Dense(128, activation="relu", name="hidden")(x)
    # float32 output even under a mixed policy, so losses and thresholds see full precision.
    out = keras.layers.Dense(num_labels, activation="sigmoid", dtype="float32", name="probs")(x)
    if hierarchical_head:
        out = MaxConstraint(ancestor_matrix, dtype="float32", name="max_constraint")(out)
    model = keras.Model(inputs, out, name=f"efficientnet{key.lower()}_topics")
    if local_weights:
        model.load_weights(local_weights)
    return model


def predict_probs(model, x, batch_size: int = 256) -> np.ndarray:
    """Probabilities for uint8 or float images (N, H, W, 3), batch by batch (compiled, no tf.data overhead)."""
    n = len(x)
    if n == 0:
        return np.zeros((0, model.output_shape[-1]), dtype="float32")
    out = []
    for start in range(0, n, batch_size):
        chunk = np.asarray(x[start : start + batch_size], dtype="float32")
        out.append(np.asarray(model.predict_on_batch(chunk), dtype="float32"))
    return np.concatenate(out, axis=0)
