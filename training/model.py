"""The topic classifier (Keras 3, any backend): EfficientNet on pixels, a text bag on words, or both.

``inputs`` picks what the model reads:

- ``image``: EfficientNet from ``keras.applications`` (it includes its own
  rescaling and normalisation, so the input ``image`` is float32 pixels in
  0..255, NHWC);
- ``text``: the image's texts as hashed token ids ``text`` (fields x tokens,
  ``pipeline.features.texts``), an embedding bag per field (``TextBag``);
- ``image+text``: both, concatenated before the hidden layer, plus
  ``has_image`` (1/0 per row): ``ModalityDropout`` puts a learned vector where
  the image is missing, and while training hides the text of some images and
  the pixels of others, so the model still predicts when one is missing.

Every mode ends in the same hidden layer and heads (flat sigmoid or C-HMCNN).
"""

from __future__ import annotations

import os

import keras
import numpy as np
from keras import ops

from training.losses import max_constraint

BACKBONES = {f"B{i}": f"EfficientNetB{i}" for i in range(8)}
INPUTS = ("image", "text", "image+text")


def check_inputs(inputs: str) -> str:
    if inputs not in INPUTS:
        raise ValueError(f"train.inputs must be one of {', '.join(INPUTS)}, not {inputs!r}")
    return inputs


@keras.saving.register_keras_serializable(package="wit_topics")
class TextBag(keras.layers.Layer):
    """Pooled token embeddings of each field, and a learned vector for each field that is empty.

    Ids (batch, fields, tokens), 0 = padding -> (batch, fields * dim): the
    fields stay apart, so the next layer can weigh a caption differently from
    a file name; an image with no text at all gets the learned empty vectors.
    """

    def __init__(self, vocab: int, dim: int, **kw):
        super().__init__(**kw)
        self.vocab, self.dim = int(vocab), int(dim)
        self.embedding = keras.layers.Embedding(self.vocab, self.dim, name="embedding")

    def build(self, input_shape):
        self.fields = int(input_shape[1])
        self.embedding.build((None, None))
        self.empty = self.add_weight(shape=(self.fields, self.dim), initializer="zeros", name="empty")

    def call(self, ids):
        e = self.embedding(ids)  # (batch, fields, tokens, dim)
        mask = ops.expand_dims(ops.cast(ops.greater(ids, 0), e.dtype), -1)
        count = ops.sum(mask, axis=2)
        # "sqrtn" pooling (sum / sqrt(count)), as TensorFlow's embedding combiners: each token's
        # gradient shrinks less with the text's length than under a plain mean, so the bag learns
        # from a few epochs on a small set.
        mean = ops.sum(e * mask, axis=2) / ops.sqrt(ops.maximum(count, 1.0))
        has = ops.cast(ops.greater(count, 0), e.dtype)
        pooled = has * mean + (1.0 - has) * ops.cast(self.empty, e.dtype)[None]
        return ops.reshape(pooled, (-1, self.fields * self.dim))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] * self.dim)

    def get_config(self):
        return {**super().get_config(), "vocab": self.vocab, "dim": self.dim}


@keras.saving.register_keras_serializable(package="wit_topics")
class ModalityDropout(keras.layers.Layer):
    """Image features where the image is missing, and modality dropout while training.

    Inputs: image features, text ids, and ``has_image`` (1 or 0 per row). A row
    without an image gets a learned "no image" vector instead of its features,
    so an image whose bytes could not be fetched is still predicted from its
    words. While training it also empties the text of ``drop_text`` of the
    rows and hides the image of ``drop_image`` of them (never both), so the
    model learns to predict with either one missing.
    """

    def __init__(self, drop_text: float = 0.0, drop_image: float = 0.0, seed: int | None = None, **kw):
        super().__init__(**kw)
        if drop_text < 0 or drop_image < 0 or drop_text + drop_image >= 1:
            raise ValueError(f"modality dropout shares must be >= 0 and sum to < 1 (text {drop_text}, image {drop_image})")
        self.drop_text, self.drop_image, self.seed = float(drop_text), float(drop_image), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        features_shape = input_shape[0]
        self.no_image = self.add_weight(shape=(int(features_shape[-1]),), initializer="zeros", name="no_image")

    def call(self, inputs, training=None):
        features, ids, has_image = inputs
        present = ops.cast(ops.reshape(has_image, (-1, 1)), features.dtype)
        if training and (self.drop_text > 0 or self.drop_image > 0):
            u = keras.random.uniform((ops.shape(ids)[0],), seed=self.seed_generator)
            ids = ids * ops.cast(ops.greater_equal(u, self.drop_text), ids.dtype)[:, None, None]
            hide = ops.logical_and(ops.greater_equal(u, self.drop_text), ops.less(u, self.drop_text + self.drop_image))
            present = present * (1.0 - ops.expand_dims(ops.cast(hide, features.dtype), -1))
        features = features * present + (1.0 - present) * ops.cast(self.no_image, features.dtype)[None]
        return features, ids

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:2])

    def get_config(self):
        return {**super().get_config(), "drop_text": self.drop_text, "drop_image": self.drop_image, "seed": self.seed}


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
    inputs: str = "image",
    text_shape: tuple[int, int] = (6, 48),
    text_vocab: int = 32768,
    text_dim: int = 32,
    drop_text: float = 0.0,
    drop_image: float = 0.0,
    seed: int | None = None,
) -> keras.Model:
    """[EfficientNet<backbone> (avg-pooled)] [+ TextBag] + Dense(128, relu) + Dense(num_labels, sigmoid).

    ``weights``: "imagenet" (downloaded by Keras), "none" (random init) or a
    path to a ``.weights.h5`` file of this same model, loaded after building.
    ``trainable``: "all", or N to train only the backbone's last N layers (the
    head is always trainable).
    ``bn_momentum``: of every BatchNormalization layer of the backbone (Keras's
    is 0.99); a lower one (0.9) lets the moving statistics of a model trained
    from scratch on a small set catch up within a few hundred steps, so that
    validation loss is not noise in the first epochs.
    ``inputs``: "image", "text" or "image+text"; ``text_shape`` is (fields,
    tokens per field) of the ``text`` input; ``drop_text``/``drop_image`` the
    modality dropout shares (image+text only).
    """
    check_inputs(inputs)
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

    model_inputs, features = {}, []
    if inputs != "text":
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
        model_inputs["image"] = keras.Input((image_size, image_size, 3), dtype="float32", name="image")
        features.append(base(model_inputs["image"]))
    if inputs != "image":
        model_inputs["text"] = keras.Input(tuple(text_shape), dtype="int32", name="text")
        ids = model_inputs["text"]
        if inputs == "image+text":
            model_inputs["has_image"] = keras.Input((1,), dtype="float32", name="has_image")
            features[0], ids = ModalityDropout(drop_text, drop_image, seed, name="modality_dropout")(
                [features[0], ids, model_inputs["has_image"]])
        features.append(TextBag(text_vocab, text_dim, name="text_bag")(ids))
    x = features[0] if len(features) == 1 else keras.layers.Concatenate(name="fusion")(features)
    x = keras.layers.Dense(128, activation="relu", name="hidden")(x)
    # float32 output even under a mixed policy, so losses and thresholds see full precision.
    out = keras.layers.Dense(num_labels, activation="sigmoid", dtype="float32", name="probs")(x)
    if hierarchical_head:
        out = MaxConstraint(ancestor_matrix, dtype="float32", name="max_constraint")(out)
    name = {"image": f"efficientnet{key.lower()}_topics", "text": "text_topics",
            "image+text": f"efficientnet{key.lower()}_text_topics"}[inputs]
    model = keras.Model(model_inputs["image"] if inputs == "image" else model_inputs, out, name=name)
    if local_weights:
        model.load_weights(local_weights)
    return model


def predict_probs(model, x, batch_size: int = 256) -> np.ndarray:
    """Probabilities batch by batch (compiled, no tf.data overhead).

    ``x``: uint8 or float images (N, H, W, 3) for an image model, or a dict of
    its inputs (``image``, ``text`` ids, ``has_image``) for any model. When
    there is more than one batch, the last is padded to the batch size (zeros:
    no image, no text) and its padding dropped, so the predict function is
    traced for one shape only; rows do not interact in inference.
    """
    inputs = x if isinstance(x, dict) else {"image": x}
    n = len(next(iter(inputs.values())))
    if n == 0:
        return np.zeros((0, model.output_shape[-1]), dtype="float32")
    single = not isinstance(model.input, dict)
    out = []
    for start in range(0, n, batch_size):
        chunk = {k: np.asarray(v[start : start + batch_size], dtype="int32" if k == "text" else "float32")
                 for k, v in inputs.items()}
        rows = len(next(iter(chunk.values())))
        if rows < batch_size < n:
            chunk = {k: np.concatenate([v, np.zeros((batch_size - rows, *v.shape[1:]), v.dtype)])
                     for k, v in chunk.items()}
        probs = model.predict_on_batch(next(iter(chunk.values())) if single else chunk)
        out.append(np.asarray(probs, dtype="float32")[:rows])
    return np.concatenate(out, axis=0)
