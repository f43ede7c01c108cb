"""The registered model: a Keras model plus thresholds and label names, as an MLflow pyfunc.

Artifacts: ``keras_model`` (a ``.keras`` file, float32, no optimizer state),
``thresholds`` (JSON ``{"labels": [...], "thresholds": [...]}``),
``labels`` (JSON ``{"taxonomy": ..., "names": [...], "slugs": [...]}``), so a
loaded model needs no taxonomy file, and ``inputs`` (JSON ``{"inputs":
"image" | "text" | "image+text", "text": {fields, vocab, max_tokens}}``, how
texts are encoded; absent in models logged before texts: image). The model
carries the code it imports (``MODEL_CODE``, as ``code_paths``) and an input
example, so ``mlflow models serve`` loads it without this checkout.
"""

from __future__ import annotations

import json

import numpy as np

try:
    import mlflow.pyfunc

    _Base = mlflow.pyfunc.PythonModel
except ImportError:  # loading without MLflow (load_from_dir) still works
    _Base = object


class TopicModel(_Base):
    """pyfunc: DataFrame with ``image`` bytes and/or text columns -> ``p_<slug>`` columns + ``predicted``.

    An image+text model takes rows without image bytes (None, empty, or no
    ``image`` column) and predicts them from their words.

    Images go through ``pipeline.features.imaging.preprocess`` (center crop, resize),
    texts through ``pipeline.features.texts`` (the image index's columns: ``file_title``,
    ``page_titles``, ...; a missing column or value is an empty text), the
    same functions the training loader and batch inference use. An image
    model also takes uint8 arrays N x H x W x 3.
    """

    batch_size = 256

    def load_context(self, context):
        self._load(context.artifacts["keras_model"], context.artifacts["thresholds"], context.artifacts["labels"],
                   context.artifacts.get("inputs"))

    def _load(self, keras_path: str, thresholds_path: str, labels_path: str, inputs_path: str | None = None):
        import keras

        import training.model  # noqa: F401  (registers the custom layers)

        self.model = keras.saving.load_model(keras_path, compile=False)
        with open(labels_path, encoding="utf-8") as f:
            labels = json.load(f)
        with open(thresholds_path, encoding="utf-8") as f:
            thr = json.load(f)
        self.names = list(labels["names"])
        self.slugs = list(labels["slugs"])
        self.taxonomy = labels.get("taxonomy")
        if list(thr["labels"]) != self.names:
            raise ValueError("thresholds.json and labels.json disagree on the label order")
        self.thresholds = np.asarray(thr["thresholds"], dtype="float32")
        spec = {"inputs": "image", "text": None}
        if inputs_path:
            with open(inputs_path, encoding="utf-8") as f:
                spec = json.load(f)
        from pipeline.features.texts import TextEncoding

        self.inputs = spec["inputs"]
        self.encoding = TextEncoding.from_dict(spec["text"]) if spec.get("text") else None
        shapes = {t.name: t.shape for t in self.model.inputs}
        self.image_size = int(shapes["image"][1]) if "image" in shapes else None

    @property
    def reads_image(self) -> bool:
        return self.inputs != "text"

    @property
    def reads_text(self) -> bool:
        return self.inputs != "image"

    def encode_texts(self, rows) -> np.ndarray:
        """Text ids for index rows (mappings from index column to value), as training encoded them."""
        return self.encoding.encode_rows(rows)

    def predict_inputs(self, images=None, text_ids=None, has_image=None) -> np.ndarray:
        """Probabilities (N, labels): uint8 images N x H x W x 3 of any size and/or text ids, as the model reads.

        An image+text model also predicts without images: ``images=None`` (none
        at all) or ``has_image`` 0 for the rows whose image is missing.
        """
        from training.model import predict_probs

        feed = {}
        if self.inputs == "image+text":
            n = len(text_ids)
            if images is None:
                images = np.zeros((n, self.image_size, self.image_size, 3), dtype="uint8")
                has_image = np.zeros(n, dtype="float32")
            present = np.ones(n, dtype="float32") if has_image is None else np.asarray(has_image, dtype="float32")
            feed["has_image"] = present.reshape(n, 1)
        if self.reads_image:
            if images is None:
                raise ValueError(f"this model reads {self.inputs}: it needs images")
            x = np.asarray(images)
            if x.ndim != 4 or x.shape[-1] != 3:
                raise ValueError(f"expected images N x H x W x 3, got shape {x.shape}")
            from pipeline.features.imaging import preprocess_array

            feed["image"] = preprocess_array(x.astype("uint8", copy=False), self.image_size)
        if self.reads_text:
            if text_ids is None:
                raise ValueError(f"this model reads {self.inputs}: it needs texts")
            feed["text"] = np.asarray(text_ids, dtype="int32")
        return predict_probs(self.model, feed if self.inputs != "image" else feed["image"], self.batch_size)

    def predict_rows(self, pixels: list, texts: list | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities, text ids) for rows of prepared pixels and their texts: the one rule of batch
        inference, the model server and ``predict``.

        ``pixels[i]`` is ``preprocess``'s H x W x 3 at ``image_size``, or None where row i has no image: it
        is fed as a blank with ``has_image`` 0, which an image+text model reads as "words alone" (an
        image model would predict the blank: its callers check first). ``texts[i]`` maps index columns
        to values (missing: no words). The text ids come back for ``has_text``.
        """
        n = len(pixels)
        images = has_image = ids = None
        if self.reads_image:
            blank = np.zeros((self.image_size, self.image_size, 3), dtype="uint8")
            has_image = np.asarray([p is not None for p in pixels], dtype="float32")
            images = np.stack([blank if p is None else p for p in pixels]) if n else blank[np.newaxis][:0]
        if self.reads_text:
            ids = self.encode_texts(texts if texts is not None else [{}] * n)
        return self.predict_inputs(images, ids, has_image), ids

    def predict_arrays(self, x) -> np.ndarray:
        """Probabilities (N, labels) for uint8 images N x H x W x 3 of any size (image models)."""
        return self.predict_inputs(images=x)

    def predicted_labels(self, probs: np.ndarray) -> list[list[str]]:
        hits = probs >= self.thresholds
        return [[self.names[j] for j in np.nonzero(row)[0]] for row in hits]

    def predict(self, context, model_input, params=None):
        import pandas as pd

        if isinstance(model_input, np.ndarray) and model_input.ndim == 4:  # images of any size, no words
            ids = self.encode_texts([{}] * len(model_input)) if self.reads_text else None
            probs = self.predict_inputs(model_input, ids)
        else:
            frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame({"image": list(model_input)})
            if self.reads_image and "image" not in frame.columns and self.inputs == "image":
                raise ValueError(f"input DataFrame needs an 'image' column of encoded bytes, has {list(frame.columns)}")
            column = frame["image"] if "image" in frame.columns else [None] * len(frame)
            # image+text: a row without image bytes is predicted from its words alone
            given = [isinstance(b, (bytes, bytearray, memoryview)) and len(b) > 0 for b in column]
            if self.inputs == "image" and not all(given):
                raise ValueError("this model reads images: every row needs image bytes")
            pixels = [None] * len(frame)
            if self.reads_image:
                from pipeline.features.imaging import preprocess

                pixels = [preprocess(bytes(b), self.image_size) if ok else None for b, ok in zip(column, given)]
            present = [c for c in self.encoding.columns if c in frame.columns] if self.reads_text else []
            texts = frame[present].to_dict("records") if present else None
            probs, _ = self.predict_rows(pixels, texts)
        out = pd.DataFrame({f"p_{s}": probs[:, j].astype("float64") for j, s in enumerate(self.slugs)})
        out["predicted"] = self.predicted_labels(probs)
        return out


def artifacts_for(dir_path: str, model, names, slugs, thresholds, taxonomy: str, inputs: str = "image",
                  encoding=None) -> dict:
    """Write the four artifacts into ``dir_path``; returns the ``artifacts`` dict for log_model."""
    import os

    keras_path = os.path.join(dir_path, "model.keras")
    model.save(keras_path)
    thr_path = os.path.join(dir_path, "thresholds.json")
    with open(thr_path, "w", encoding="utf-8") as f:
        json.dump({"labels": list(names), "thresholds": [float(t) for t in thresholds]}, f, indent=2)
    labels_path = os.path.join(dir_path, "labels.json")
    with open(labels_path, "w", encoding="utf-8") as f:
        json.dump({"taxonomy": taxonomy, "names": list(names), "slugs": list(slugs)}, f, indent=2)
    inputs_path = os.path.join(dir_path, "inputs.json")
    with open(inputs_path, "w", encoding="utf-8") as f:
        json.dump({"inputs": inputs, "text": encoding.as_dict() if inputs != "image" else None}, f, indent=2)
    return {"keras_model": keras_path, "thresholds": thr_path, "labels": labels_path, "inputs": inputs_path}


def signature(slugs, inputs: str = "image", encoding=None):
    """The served model's signature: image bytes and/or the text columns in; probabilities and labels out."""
    from mlflow.models import ModelSignature
    from mlflow.types import DataType
    from mlflow.types.schema import Array, ColSpec, Schema

    cols = []
    if inputs != "text":  # an image+text model also predicts rows without image bytes
        cols.append(ColSpec(DataType.binary, "image", required=inputs == "image"))
    if inputs != "image":
        for c in encoding.columns:
            cols.append(ColSpec(DataType.string if c == "file_title" else Array(DataType.string), c, required=False))
    out = [ColSpec(DataType.double, f"p_{s}") for s in slugs] + [ColSpec(Array(DataType.string), "predicted")]
    return ModelSignature(inputs=Schema(cols), outputs=Schema(out))


# The code a loaded model imports, and nothing else: shipped in the model (``code_paths``), so it loads
# in any environment with the requirements below, without this checkout, Airflow or Spark.
MODEL_CODE = {"pipeline.features": ("imaging.py", "texts.py"), "training": ("pyfunc.py", "model.py", "losses.py")}


def pip_requirements() -> list[str]:
    """What loading the model needs (MLflow's inference would import and run the model to guess).

    Keras and Pillow are pinned: they decide the weights' format and the resize. TensorFlow is
    Keras's backend at any build (``tensorflow``, ``-cpu``, with or without CUDA) that Keras 3 runs on,
    not the training host's.
    """
    from importlib.metadata import PackageNotFoundError, version

    def pin(pkg):
        try:
            return f"{pkg}=={version(pkg)}"
        except PackageNotFoundError:
            return pkg

    return [pin("keras"), pin("pillow"), "tensorflow>=2.16,<3", "numpy>=2", "pandas", "mlflow>=3"]


def code_paths(dir_path: str) -> list[str]:
    """Copy ``MODEL_CODE`` into ``dir_path`` as packages; returns the top-level folders for ``code_paths``."""
    import os
    import shutil

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = []
    for package, modules in MODEL_CODE.items():
        parts = package.split(".")
        for depth in range(1, len(parts) + 1):  # every level a package
            folder = os.path.join(dir_path, "code", *parts[:depth])
            os.makedirs(folder, exist_ok=True)
            open(os.path.join(folder, "__init__.py"), "a").close()
        for module in modules:
            shutil.copyfile(os.path.join(root, *parts, module), os.path.join(dir_path, "code", *parts, module))
        top = os.path.join(dir_path, "code", parts[0])
        if top not in out:
            out.append(top)
    return out


def input_example(inputs: str, image_size: int, encoding=None):
    """One row the model reads: a small PNG (and texts), as ``dataframe_records`` would carry it."""
    import io

    import pandas as pd
    from PIL import Image

    row = {}
    if inputs != "text":
        ramp = np.linspace(0, 255, image_size * image_size * 3).astype("uint8").reshape(image_size, image_size, 3)
        buf = io.BytesIO()
        Image.fromarray(ramp).save(buf, format="PNG")
        row["image"] = buf.getvalue()
    if inputs != "image":
        for c in encoding.columns:
            row[c] = "Lake Turkana.jpg" if c == "file_title" else ["Lake Turkana"]
    return pd.DataFrame([row])


def log_model(name: str, artifacts: dict, model_signature=None, example=None):
    """Log a TopicModel under the active run, with its code and an input example; returns MLflow's ModelInfo."""
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory() as d:
        return mlflow.pyfunc.log_model(
            name=name, python_model=TopicModel(), artifacts=artifacts, pip_requirements=pip_requirements(),
            signature=model_signature, code_paths=code_paths(d), input_example=example,
        )


def load_predictor(model_uri: str, settings=None) -> TopicModel:
    """Load a model as a TopicModel: ``models:/wiki-image-topics/3``, ``models:/wiki-image-topics@champion``,
    a logged model URI or a local directory holding a downloaded model.

    Use ``.predict_arrays(x_uint8)`` for batch inference on plain numpy arrays
    and ``.names`` / ``.slugs`` / ``.thresholds`` for the output columns.
    With ``settings``, ``models:/`` URIs resolve against ``settings.mlflow_uri``
    (otherwise against MLflow's current tracking/registry URI). On Spark, download
    once on the driver (``mlflow.artifacts.download_artifacts(model_uri)``) and
    load that directory on the executors.
    """
    import mlflow
    import mlflow.pyfunc

    if settings is not None:
        mlflow.set_tracking_uri(settings.mlflow_uri)
        mlflow.set_registry_uri(settings.mlflow_uri)
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
