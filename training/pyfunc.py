"""The registered model: a Keras model plus thresholds and label names, as an MLflow pyfunc.

Artifacts: ``keras_model`` (a ``.keras`` file, float32, no optimizer state),
``thresholds`` (JSON ``{"labels": [...], "thresholds": [...]}``) and
``labels`` (JSON ``{"taxonomy": ..., "names": [...], "slugs": [...]}``), so a
loaded model needs no taxonomy file. The class lives in ``training.pyfunc``,
which must be importable where the model is loaded (it is, in this repo's venv
and on the Spark executors that share it).
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
    """pyfunc: DataFrame with ``image`` bytes (or uint8 N x H x W x 3) -> ``p_<slug>`` columns + ``predicted``.

    Images go through ``pipeline.imaging.preprocess`` (center crop, resize), the
    same function the training loader and batch inference use.
    """

    batch_size = 256

    def load_context(self, context):
        self._load(context.artifacts["keras_model"], context.artifacts["thresholds"], context.artifacts["labels"])

    def _load(self, keras_path: str, thresholds_path: str, labels_path: str):
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
        self.image_size = int(self.model.input_shape[1])

    def predict_arrays(self, x) -> np.ndarray:
        """Probabilities (N, labels) for uint8 images N x H x W x 3 of any size: the fast path for batch inference."""
        from training.model import predict_probs

        x = np.asarray(x)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected images N x H x W x 3, got shape {x.shape}")
        from pipeline.imaging import preprocess_array

        return predict_probs(self.model, preprocess_array(x.astype("uint8", copy=False), self.image_size),
                             self.batch_size)

    def predicted_labels(self, probs: np.ndarray) -> list[list[str]]:
        hits = probs >= self.thresholds
        return [[self.names[j] for j in np.nonzero(row)[0]] for row in hits]

    def predict(self, context, model_input, params=None):
        import pandas as pd

        if isinstance(model_input, np.ndarray) and model_input.ndim == 4:
            x = model_input
        else:
            if isinstance(model_input, pd.DataFrame):
                if "image" not in model_input.columns:
                    raise ValueError(f"input DataFrame needs an 'image' column of encoded bytes, has {list(model_input.columns)}")
                column = model_input["image"]
            else:
                column = pd.Series(list(model_input))
            from pipeline.imaging import preprocess

            x = (
                np.stack([preprocess(bytes(b), self.image_size) for b in column])
                if len(column)
                else np.zeros((0, self.image_size, self.image_size, 3), dtype="uint8")
            )
        probs = self.predict_arrays(x)
        out = pd.DataFrame({f"p_{s}": probs[:, j].astype("float64") for j, s in enumerate(self.slugs)})
        out["predicted"] = self.predicted_labels(probs)
        return out


def artifacts_for(dir_path: str, model, names, slugs, thresholds, taxonomy: str) -> dict:
    """Write the three artifacts into ``dir_path``; returns the ``artifacts`` dict for log_model."""
    import os

    keras_path = os.path.join(dir_path, "model.keras")
    model.save(keras_path)
    thr_path = os.path.join(dir_path, "thresholds.json")
    with open(thr_path, "w", encoding="utf-8") as f:
        json.dump({"labels": list(names), "thresholds": [float(t) for t in thresholds]}, f, indent=2)
    labels_path = os.path.join(dir_path, "labels.json")
    with open(labels_path, "w", encoding="utf-8") as f:
        json.dump({"taxonomy": taxonomy, "names": list(names), "slugs": list(slugs)}, f, indent=2)
    return {"keras_model": keras_path, "thresholds": thr_path, "labels": labels_path}


def pip_requirements() -> list[str]:
    """Explicit requirements (MLflow's inference would import and run the model to guess them)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("keras", "tensorflow-cpu", "tensorflow", "jax", "torch", "numpy", "pandas", "pillow", "mlflow"):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            pass
    return reqs


def log_model(name: str, artifacts: dict):
    """Log a TopicModel under the active run; returns MLflow's ModelInfo."""
    import mlflow

    return mlflow.pyfunc.log_model(
        name=name, python_model=TopicModel(), artifacts=artifacts, pip_requirements=pip_requirements()
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
