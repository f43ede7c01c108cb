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

A model that reads pixels is two models composed: the image tower (pixels ->
pooled features, rounded to float16: ``build_tower``) and the heads (features
and/or words -> probabilities: ``build_head``). The ``embed`` stage stores the
tower's output once per image; ``train.mode=heads`` trains only the heads on it
and composes them with the tower it came from, and ``infer`` runs the heads
alone on stored features (``parts``), with the same probabilities as from pixels.
"""

from __future__ import annotations

import os

import keras
import numpy as np
from keras import ops

from training.inputs import InputSpec, ModelInputs
from training.losses import max_constraint

BACKBONES = {f"B{i}": f"EfficientNetB{i}" for i in range(8)}
TOWER, HEAD = "image_tower", "head"


@keras.saving.register_keras_serializable(package="wit_topics")
class HalfRound(keras.layers.Layer):
    """Rounds to float16 and back: the tower's output as the ``embed`` stage stores it."""

    def call(self, x):
        return ops.cast(ops.cast(x, "float16"), "float32")


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


def _weights(weights):
    """(keras.applications weights, local .weights.h5 path) for ``train.weights``."""
    if weights in ("none", "None", "", None):
        return None, None
    if weights == "imagenet":
        return "imagenet", None
    if not os.path.exists(weights):
        raise FileNotFoundError(f"weights file {weights!r} not found")
    return None, weights


def build_tower(backbone: str = "B0", weights: str = "imagenet", image_size: int = 64, trainable="all",
                bn_momentum: float = 0.99) -> keras.Model:
    """The image tower: pixels -> EfficientNet<backbone>, average-pooled, rounded to float16.

    Its output is what the ``embed`` stage stores (fp16), so the rounding is part of the model:
    the heads read the same numbers from the tower as from the stored features.
    """
    key = backbone.upper() if not backbone.upper().startswith("EFFICIENTNET") else backbone.upper()[12:]
    if key not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r} (known: {', '.join(BACKBONES)})")
    app_weights, _ = _weights(weights)
    base = getattr(keras.applications, BACKBONES[key])(
        include_top=False, weights=app_weights, input_shape=(image_size, image_size, 3), pooling="avg")
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = bn_momentum
    if trainable != "all":
        n = int(trainable)
        base.trainable = True
        for i, layer in enumerate(base.layers):
            layer.trainable = i >= len(base.layers) - n if n > 0 else False
    image = keras.Input((image_size, image_size, 3), dtype="float32", name="image")
    features = HalfRound(dtype="float32", name="half_round")(base(image))
    return keras.Model(image, features, name=TOWER)


def build_head(num_labels: int, inputs, spec: InputSpec, hierarchical_head: bool = False, ancestor_matrix=None,
               text_vocab: int = 32768, text_dim: int = 32, drop_text: float = 0.0, drop_image: float = 0.0,
               seed: int | None = None) -> keras.Model:
    """The heads: [image features] [+ TextBag] + Dense(128, relu) + Dense(num_labels, sigmoid).

    ``inputs``: what the heads read (``ModelInputs`` without pixels: ``features``, ``text`` or
    ``features+text``); an image beside words also takes ``has_image``, and ``ModalityDropout``
    puts a learned vector where the image is missing.
    """
    if hierarchical_head and ancestor_matrix is None:
        raise ValueError("hierarchical_head needs the taxonomy's ancestor_matrix")
    feeds = inputs.keras_inputs(spec)
    parts = []
    if "features" in feeds:
        parts.append(feeds["features"])
    if "text" in feeds:
        ids = feeds["text"]
        if "has_image" in feeds:
            parts[0], ids = ModalityDropout(drop_text, drop_image, seed, name="modality_dropout")(
                [parts[0], ids, feeds["has_image"]])
        parts.append(TextBag(text_vocab, text_dim, name="text_bag")(ids))
    x = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="fusion")(parts)
    x = keras.layers.Dense(128, activation="relu", name="hidden")(x)
    # float32 output even under a mixed policy, so losses and thresholds see full precision.
    out = keras.layers.Dense(num_labels, activation="sigmoid", dtype="float32", name="probs")(x)
    if hierarchical_head:
        out = MaxConstraint(ancestor_matrix, dtype="float32", name="max_constraint")(out)
    return keras.Model(feeds, out, name=HEAD)


def compose(tower: keras.Model | None, head: keras.Model, name: str = "topics") -> keras.Model:
    """The whole model: pixels through the tower into the heads (the heads alone when there is no tower)."""
    if tower is None:
        return head
    feeds, head_feeds = {}, {}
    for t in head.inputs:
        if t.name == "features":
            feeds["image"] = keras.Input(tuple(tower.input.shape[1:]), dtype="float32", name="image")
            head_feeds["features"] = tower(feeds["image"])
        else:
            feeds[t.name] = keras.Input(tuple(t.shape[1:]), dtype=t.dtype, name=t.name)
            head_feeds[t.name] = feeds[t.name]
    single = list(feeds) == ["image"]
    return keras.Model(feeds["image"] if single else feeds, head(head_feeds), name=name)


def parts(model: keras.Model) -> tuple[keras.Model | None, keras.Model]:
    """(image tower or None, heads) of a model built by ``build_model`` or ``compose``."""
    names = {layer.name for layer in model.layers}
    if HEAD not in names:
        return None, model  # a text model is its heads
    return (model.get_layer(TOWER) if TOWER in names else None), model.get_layer(HEAD)


def backbone_fingerprint(tower: keras.Model) -> str:
    """What stored features depend on: the tower's weights, input size and output width (sha256, 16 hex)."""
    import hashlib
    import json

    h = hashlib.sha256(json.dumps({"input": list(tower.input.shape[1:]), "dim": int(tower.output.shape[-1])}).encode())
    for w in tower.weights:
        h.update(np.ascontiguousarray(ops.convert_to_numpy(w), dtype="float32").tobytes())
    return h.hexdigest()[:16]


def build_model(
    num_labels: int,
    backbone: str = "B0",
    weights: str = "imagenet",
    image_size: int = 64,
    trainable="all",
    hierarchical_head: bool = False,
    ancestor_matrix=None,
    bn_momentum: float = 0.99,
    inputs="image",
    text_shape: tuple[int, int] = (6, 48),
    text_vocab: int = 32768,
    text_dim: int = 32,
    drop_text: float = 0.0,
    drop_image: float = 0.0,
    seed: int | None = None,
) -> keras.Model:
    """The whole model: ``build_tower`` (when it reads pixels) composed with ``build_head``.

    ``weights``: "imagenet" (downloaded by Keras), "none" (random init) or a
    path to a ``.weights.h5`` file of this same model, loaded after building.
    ``trainable``: "all", or N to train only the backbone's last N layers (the
    head is always trainable).
    ``bn_momentum``: of every BatchNormalization layer of the backbone (Keras's
    is 0.99); a lower one (0.9) lets the moving statistics of a model trained
    from scratch on a small set catch up within a few hundred steps, so that
    validation loss is not noise in the first epochs.
    ``inputs``: a ``ModelInputs`` or its name ("image", "text", "image+text"); ``text_shape`` is
    (fields, tokens per field) of the ``text`` input; ``drop_text``/``drop_image`` the
    modality dropout shares (image+text only).
    """
    inputs = inputs if isinstance(inputs, ModelInputs) else ModelInputs(inputs)
    _, local_weights = _weights(weights)
    tower = build_tower(backbone, weights, image_size, trainable, bn_momentum) if inputs.reads_pixels else None
    encoding = _Shape(text_shape)
    spec = InputSpec(image_size, encoding, int(tower.output.shape[-1]) if tower is not None else 0)
    head = build_head(num_labels, inputs.heads(), spec, hierarchical_head, ancestor_matrix, text_vocab, text_dim,
                      drop_text, drop_image, seed)
    model = compose(tower, head, name=f"{inputs.name.replace('+', '_')}_topics")
    if local_weights:
        model.load_weights(local_weights)
    return model


class _Shape:
    """A stand-in text encoding that only knows its shape (what ``build_head`` needs of it)."""

    def __init__(self, shape):
        self.shape = tuple(shape)


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
