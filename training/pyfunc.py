"""The registered model: a Keras model plus thresholds and label names, as an MLflow pyfunc.

Artifacts: ``keras_model`` (a ``.keras`` file, float32, no optimizer state),
``thresholds`` (JSON ``{"labels": [...], "thresholds": [...]}``),
``labels`` (JSON ``{"taxonomy": ..., "names": [...], "slugs": [...]}``), so a
loaded model needs no taxonomy file, and ``inputs`` (JSON ``{"inputs":
"image" | "text" | "image+text", "text": {fields, vocab, max_tokens}, "backbone":
{fingerprint, dim, ...}}``: ``training.inputs.ModelInputs``, how texts are encoded,
and which stored image features the heads may read; absent in models logged
before texts: image). The model
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
        spec = read_inputs_json(inputs_path)
        from pipeline.features.texts import TextEncoding
        from training.inputs import InputSpec, ModelInputs
        from training.model import parts

        self.inputs = ModelInputs(spec["inputs"])
        self.encoding = TextEncoding.from_dict(spec["text"]) if spec.get("text") else None
        # the image tower's stored features stand in for pixels only where they came from this very tower
        self.backbone = spec.get("backbone")
        self.tower, self.head = parts(self.model)
        shapes = {t.name: t.shape for t in self.model.inputs}
        self.image_size = int(shapes["image"][1]) if "image" in shapes else None
        self.spec = InputSpec(self.image_size or 0, self.encoding, int(self.backbone["dim"]) if self.backbone else 0)

    @property
    def reads_image(self) -> bool:
        return self.inputs.reads_pixels

    @property
    def reads_text(self) -> bool:
        return self.inputs.reads_words

    def encode_texts(self, rows) -> np.ndarray:
        """Text ids for index rows (mappings from index column to value), as training encoded them."""
        return self.encoding.encode_rows(rows)

    def predict_inputs(self, images=None, text_ids=None, has_image=None, features=None) -> np.ndarray:
        """Probabilities (N, labels): uint8 images N x H x W x 3 of any size, or the image tower's features
        (N x dim, as the ``embed`` stage stores them), and/or text ids, as the model reads.

        With ``features`` only the heads run (no tower). A model that reads words also predicts without
        images: ``images=None`` (none at all) or ``has_image`` 0 for the rows whose image is missing.
        """
        from training.model import predict_probs

        if features is not None and self.tower is None:
            raise ValueError(f"this model ({self.inputs}) has no image tower: it reads no image features")
        inputs, model = (self.inputs.heads(), self.head) if features is not None else (self.inputs, self.model)
        n = len(next(x for x in (images, features, text_ids) if x is not None))
        feed = {}
        if inputs.has_image_flag:
            if images is None and features is None:
                feed.update(inputs.blank(n, self.spec))
                feed.pop("text", None)
            else:
                present = np.ones(n, dtype="float32") if has_image is None else np.asarray(has_image, dtype="float32")
                feed["has_image"] = present.reshape(n, 1)
        if inputs.reads_pixels and "image" not in feed:
            if images is None:
                raise ValueError(f"this model reads {self.inputs}: it needs images")
            x = np.asarray(images)
            if x.ndim != 4 or x.shape[-1] != 3:
                raise ValueError(f"expected images N x H x W x 3, got shape {x.shape}")
            from pipeline.features.imaging import preprocess_array

            feed["image"] = preprocess_array(x.astype("uint8", copy=False), self.image_size)
        if inputs.reads_features:
            feed["features"] = np.asarray(features, dtype="float32")
        if inputs.reads_words:
            if text_ids is None:
                raise ValueError(f"this model reads {self.inputs}: it needs texts")
            feed["text"] = np.asarray(text_ids, dtype="int32")
        return predict_probs(model, feed, self.batch_size)

    def predict_rows(self, pixels: list, texts: list | None = None, features: list | None = None
                     ) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities, text ids) for rows of prepared pixels and their texts: the one rule of batch
        inference, the model server and ``predict``.

        ``pixels[i]`` is ``preprocess``'s H x W x 3 at ``image_size``, or None where row i has no image: it
        is fed as a blank with ``has_image`` 0, which an image+text model reads as "words alone" (an
        image model would predict the blank: its callers check first). ``features[i]``, where given, is
        row i's stored image features: the heads read them instead of the tower reading its pixels.
        ``texts[i]`` maps index columns to values (missing: no words). The text ids come back for ``has_text``.
        """
        n = len(pixels)
        ids = self.encode_texts(texts if texts is not None else [{}] * n) if self.reads_text else None
        probs = np.empty((n, len(self.names)), dtype="float32")
        stored = np.asarray([features is not None and features[i] is not None for i in range(n)], dtype=bool)
        if stored.any():
            rows = np.nonzero(stored)[0]
            probs[rows] = self.predict_inputs(text_ids=None if ids is None else ids[rows],
                                              features=np.stack([features[i] for i in rows]))
        rows = np.nonzero(~stored)[0]
        if len(rows) or n == 0:
            images = has_image = None
            if self.reads_image:
                blank = np.zeros((self.image_size, self.image_size, 3), dtype="uint8")
                has_image = np.asarray([pixels[i] is not None for i in rows], dtype="float32")
                images = np.stack([blank if pixels[i] is None else pixels[i] for i in rows]) if len(rows) \
                    else blank[np.newaxis][:0]
            probs[rows] = self.predict_inputs(images, None if ids is None else ids[rows], has_image)
        return probs, ids

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
            if self.inputs.image_required and "image" not in frame.columns:
                raise ValueError(f"input DataFrame needs an 'image' column of encoded bytes, has {list(frame.columns)}")
            column = frame["image"] if "image" in frame.columns else [None] * len(frame)
            # image+text: a row without image bytes is predicted from its words alone
            given = [isinstance(b, (bytes, bytearray, memoryview)) and len(b) > 0 for b in column]
            if self.inputs.image_required and not all(given):
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


def read_inputs_json(path: str | None) -> dict:
    """A logged model's ``inputs.json`` (absent in models logged before texts: an image model)."""
    if not path or not __import__("os").path.exists(path):
        return {"inputs": "image", "text": None, "backbone": None}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def artifacts_for(dir_path: str, model, names, slugs, thresholds, taxonomy: str, inputs, encoding=None,
                  backbone: dict | None = None) -> dict:
    """Write the four artifacts into ``dir_path``; returns the ``artifacts`` dict for log_model.

    ``backbone`` (the image tower's fingerprint, width and where it came from) says which stored
    features (``pipeline.features.embeddings``) the model's heads may read instead of pixels.
    """
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
        json.dump({"inputs": str(inputs), "text": encoding.as_dict() if inputs.reads_words else None,
                   "backbone": backbone}, f, indent=2)
    return {"keras_model": keras_path, "thresholds": thr_path, "labels": labels_path, "inputs": inputs_path}


# The code a loaded model imports, and nothing else: shipped in the model (``code_paths``), so it loads
# in any environment with the requirements below, without this checkout, Airflow or Spark.
MODEL_CODE = {"pipeline.features": ("imaging.py", "texts.py"),
              "training": ("pyfunc.py", "model.py", "inputs.py", "losses.py")}


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
