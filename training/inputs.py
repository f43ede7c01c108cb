"""What a model reads, one class per input: pixels, text ids, stored image features.

Each class holds everything about its input: its Keras input(s), how a batch of
it is read from the run's image index and the stores (``read``), what stands in
for a row that lacks it (``blank``), its columns in the served model's MLflow
signature and input example. ``ModelInputs`` is a model's set of them; it is
saved with the logged model (``inputs.json``) and refuses, when the settings are
read, any combination no model is built for. A new input is one new class here
and a line in ``SUPPORTED``.

``Pixels`` feeds the image tower (EfficientNet); ``ImageFeatures`` feeds the
heads directly with the tower's stored output (``pipeline.features.embeddings``),
so a model's heads can be trained and run without decoding an image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class InputSpec:
    """The sizes an input needs: pixels' side, the text encoding, the image features' width."""

    image_size: int = 64
    encoding: object = None  # pipeline.features.texts.TextEncoding, for text ids
    feature_dim: int = 0


class ModelInput:
    """One input of a model. Subclasses state their name and what they read."""

    name: ClassVar[str]
    reads_pixels: ClassVar[bool] = False
    reads_words: ClassVar[bool] = False
    reads_features: ClassVar[bool] = False
    sees_image: ClassVar[bool] = False  # what it reads is the image (pixels or their features)

    def keras_inputs(self, spec: InputSpec) -> dict:
        raise NotImplementedError

    def read(self, index, rows, spec: InputSpec) -> dict:
        """This input for ``rows`` of a ``training.data.ShardIndex``."""
        raise NotImplementedError

    def blank(self, n: int, spec: InputSpec) -> dict:
        """What ``n`` rows without this input are fed (zeros)."""
        raise NotImplementedError

    def signature_columns(self, spec: InputSpec, required: bool) -> list:
        return []

    def example(self, spec: InputSpec) -> dict:
        return {}

    def __repr__(self) -> str:
        return self.name


class Pixels(ModelInput):
    """Pixels 0..255, N x S x S x 3, from the store's bytes through ``preprocess`` (read as uint8, fed as float32)."""

    name = "image"
    reads_pixels = sees_image = True

    def keras_inputs(self, spec):
        import keras

        return {"image": keras.Input((spec.image_size, spec.image_size, 3), dtype="float32", name="image")}

    def read(self, index, rows, spec):
        from training.data import read_images

        return {"image": read_images(index, rows, spec.image_size)}

    def blank(self, n, spec):
        return {"image": np.zeros((n, spec.image_size, spec.image_size, 3), dtype="uint8")}

    def signature_columns(self, spec, required):
        from mlflow.types import DataType
        from mlflow.types.schema import ColSpec

        return [ColSpec(DataType.binary, "image", required=required)]

    def example(self, spec):
        import io

        from PIL import Image

        size = spec.image_size
        ramp = np.linspace(0, 255, size * size * 3).astype("uint8").reshape(size, size, 3)
        buf = io.BytesIO()
        Image.fromarray(ramp).save(buf, format="PNG")
        return {"image": buf.getvalue()}


class Words(ModelInput):
    """int32 hashed token ids, N x fields x tokens, of the index's text columns (``pipeline.features.texts``)."""

    name = "text"
    reads_words = True

    def keras_inputs(self, spec):
        import keras

        return {"text": keras.Input(tuple(spec.encoding.shape), dtype="int32", name="text")}

    def read(self, index, rows, spec):
        from training.data import read_texts

        return {"text": read_texts(index, rows, spec.encoding)}

    def blank(self, n, spec):
        return {"text": np.zeros((n, *spec.encoding.shape), dtype="int32")}

    def signature_columns(self, spec, required):
        from mlflow.types import DataType
        from mlflow.types.schema import Array, ColSpec

        return [ColSpec(DataType.string if c == "file_title" else Array(DataType.string), c, required=False)
                for c in spec.encoding.columns]

    def example(self, spec):
        return {c: "Lake Turkana.jpg" if c == "file_title" else ["Lake Turkana"] for c in spec.encoding.columns}


class ImageFeatures(ModelInput):
    """float32 N x dim: the image tower's pooled output, stored in fp16 by the ``embed`` stage."""

    name = "features"
    reads_features = sees_image = True

    def keras_inputs(self, spec):
        import keras

        return {"features": keras.Input((spec.feature_dim,), dtype="float32", name="features")}

    def read(self, index, rows, spec):
        return {"features": index.features.read(rows)}

    def blank(self, n, spec):
        return {"features": np.zeros((n, spec.feature_dim), dtype="float32")}


KINDS = {k.name: k for k in (Pixels, ImageFeatures, Words)}  # the order names are spelled in
# The combinations a model is built for, as train.inputs spells them (features: the heads of a model).
SUPPORTED = ("image", "text", "image+text", "features", "features+text")


class ModelInputs:
    """A model's inputs: a set of ``ModelInput``, plus ``has_image`` where an image input meets words."""

    def __init__(self, value):
        names = value.split("+") if isinstance(value, str) else list(value)
        ordered = [k for k in KINDS if k in names]
        if any(n not in KINDS for n in names) or "+".join(ordered) not in SUPPORTED or len(ordered) != len(names):
            raise ValueError(f"train.inputs must be one of {', '.join(SUPPORTED[:3])} "
                             f"(a model's heads also read {', '.join(SUPPORTED[3:])}), not {value!r}")
        self.members = tuple(KINDS[n]() for n in ordered)

    @property
    def name(self) -> str:
        """As ``train.inputs`` spells it: ``image``, ``text``, ``image+text``, ``features+text``..."""
        return "+".join(m.name for m in self.members)

    def __str__(self) -> str:
        return self.name

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            return other == self.name
        return isinstance(other, ModelInputs) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def has(self, kind: type) -> bool:
        return any(isinstance(m, kind) for m in self.members)

    @property
    def reads_pixels(self) -> bool:
        return any(m.reads_pixels for m in self.members)

    @property
    def reads_words(self) -> bool:
        return any(m.reads_words for m in self.members)

    @property
    def reads_features(self) -> bool:
        return any(m.reads_features for m in self.members)

    @property
    def sees_image(self) -> bool:
        return any(m.sees_image for m in self.members)

    @property
    def has_image_flag(self) -> bool:
        """Whether the model takes ``has_image`` (1/0): an image input beside words, either may be missing."""
        return self.sees_image and self.reads_words

    @property
    def image_required(self) -> bool:
        """Whether every row needs its image: nothing (no words) stands in for a missing one."""
        return self.sees_image and not self.has_image_flag

    def heads(self) -> "ModelInputs":
        """What the model's heads read: stored image features in place of pixels."""
        return ModelInputs([ImageFeatures.name if m.reads_pixels else m.name for m in self.members])

    def with_pixels(self) -> "ModelInputs":
        """What the whole model reads, its image tower included: pixels in place of features."""
        return ModelInputs([Pixels.name if m.reads_features else m.name for m in self.members])

    def keras_inputs(self, spec: InputSpec) -> dict:
        import keras

        out = {}
        for m in self.members:
            out.update(m.keras_inputs(spec))
        if self.has_image_flag:
            out["has_image"] = keras.Input((1,), dtype="float32", name="has_image")
        return out

    def read(self, index, rows, spec: InputSpec) -> dict:
        """The model's inputs for ``rows`` of the index (every listed image has bytes: ``has_image`` 1)."""
        out = {}
        for m in self.members:
            out.update(m.read(index, rows, spec))
        if self.has_image_flag:
            out["has_image"] = np.ones((len(rows), 1), dtype="float32")
        return out

    def blank(self, n: int, spec: InputSpec) -> dict:
        out = {}
        for m in self.members:
            out.update(m.blank(n, spec))
        if self.has_image_flag:
            out["has_image"] = np.zeros((n, 1), dtype="float32")
        return out

    def signature(self, slugs, spec: InputSpec):
        """The served model's MLflow signature: its inputs in; probabilities and labels out."""
        from mlflow.models import ModelSignature
        from mlflow.types import DataType
        from mlflow.types.schema import Array, ColSpec, Schema

        # an image input is required only where nothing else can stand in for it
        cols = [c for m in self.members for c in m.signature_columns(spec, required=len(self.members) == 1)]
        out = [ColSpec(DataType.double, f"p_{s}") for s in slugs] + [ColSpec(Array(DataType.string), "predicted")]
        return ModelSignature(inputs=Schema(cols), outputs=Schema(out))

    def example(self, spec: InputSpec):
        """One row the served model reads, as ``dataframe_records`` would carry it."""
        import pandas as pd

        row = {}
        for m in self.members:
            row.update(m.example(spec))
        return pd.DataFrame([row])
