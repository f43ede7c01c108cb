"""Stage `infer`: topic distributions for every image, labeled or not.

The model (an MLflow pyfunc; by default the registered model's `champion`
alias, resolved once to one version; the DAG passes the version the gate left
as champion) is downloaded once by the driver and shipped to executors as a zip with ``SparkContext.addArchive``.
It reads the run's image index (``Layout.image_index``); each task takes the
images of some store shards, reads their bytes by offset, preprocesses them
as training did (``pipeline.features.imaging.preprocess``, at the model's input size),
encodes their texts as training did (``pipeline.features.texts``, when the model reads
them) and predicts in batches; the driver only counts. Images without bytes (their
download failed) get a row too, with their status and null probabilities, or,
for a model that reads words, probabilities from the words alone; so the
output has one row per image of the WIT stage.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from pipeline.errors import StageError
from pipeline.features.texts import TEXT_COLUMNS
from pipeline.inputs.store import store_root
from pipeline.labels.taxonomy import Taxonomy
from pipeline.lake.atomic import require_input, write_spark
from pipeline.lake.layout import Layout
from pipeline.orchestration.spark import get_spark

STAGE = "infer"
BATCH = 256

_PREDICTORS: dict[str, object] = {}


def resolve_model(settings) -> tuple[str, str]:
    """(exact model URI, version) of the model to use: an alias is resolved once, here, to one version."""
    from mlflow import MlflowClient

    from pipeline.orchestration import tracking

    tracking.configure(settings)
    uri = settings.tracking.model_uri or f"models:/{tracking.model_name(settings)}@champion"
    client = MlflowClient()
    rest = uri[len("models:/"):] if uri.startswith("models:/") else None
    try:
        if rest and "@" in rest:
            name, alias = rest.split("@", 1)
            version = str(client.get_model_version_by_alias(name, alias).version)
            return f"models:/{name}/{version}", version
        if rest and "/" in rest:
            return uri, rest.split("/", 1)[1]
    except Exception as e:  # noqa: BLE001 - the registry's own error says why
        raise StageError(STAGE, uri, f"cannot resolve the model ({e}); has `train` registered one?") from e
    return uri, ""


def model_inputs(settings) -> dict:
    """What the predictions depend on beyond the images: the exact model version (for ``pipeline.orchestration.lineage``)."""
    return {"model_uri": resolve_model(settings)[0]}


def _predictor(local_dir: str):
    if local_dir not in _PREDICTORS:
        from training.pyfunc import load_predictor

        _PREDICTORS[local_dir] = load_predictor(local_dir)
    return _PREDICTORS[local_dir]


def predict_rows(batches, model_name: str, slugs: list[str], store: str):
    """mapInPandas body: index rows (key, shard, offset, size, texts) in, one row of probabilities per image out.

    Rows arrive grouped by shard and in offset order, so each task reads its
    tars front to back; images go through ``pipeline.features.imaging.preprocess`` at the
    model's own input size, whatever the settings say, and texts through the
    model's own text encoding (``pipeline.features.texts``), as in training.
    """
    import pandas as pd
    from pyspark import SparkFiles

    from pipeline.features.imaging import ImageError, preprocess
    from pipeline.features.texts import has_text
    from pipeline.inputs.store import read_payload

    predictor = _predictor(SparkFiles.get(model_name))
    for pdf in batches:
        pdf = pdf.sort_values(["shard", "offset"])
        for start in range(0, len(pdf), BATCH):
            chunk = pdf.iloc[start:start + BATCH]
            pixels = [None] * len(chunk)
            if predictor.reads_image:
                # only an image+text model gets rows without bytes: it reads their words alone
                for i, r in enumerate(chunk.itertuples(index=False)):
                    if r.status != "ok":
                        continue
                    path = f"{store.rstrip('/')}/{r.shard}"
                    try:
                        pixels[i] = preprocess(read_payload(path, r.offset, r.size), predictor.image_size)
                    except ImageError as e:
                        raise StageError(STAGE, path, f"image {r.image_key!r} at byte {r.offset}: {e}") from e
            texts = chunk[predictor.encoding.columns].to_dict("records") if predictor.reads_text else None
            probs, ids = predictor.predict_rows(pixels, texts)
            probs = probs.astype("float64")
            out = pd.DataFrame({"image_key": chunk["image_key"].to_numpy()})
            for j, s in enumerate(slugs):
                out[f"p_{s}"] = probs[:, j]
            out["predicted"] = predictor.predicted_labels(probs)
            out["has_text"] = has_text(ids) if ids is not None else None
            yield out


def run(settings) -> dict:
    import mlflow

    layout = Layout.from_settings(settings)
    taxonomy = Taxonomy.load(settings.label.taxonomy)
    index_path = require_input(STAGE, layout.image_index, "image index (from the shard stage)")
    model_uri, version = resolve_model(settings)

    local_model = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=None)
    model_inputs = _model_inputs(local_model)
    # Spark ships a directory only in local mode; an archive it ships and unpacks on every executor
    # (SparkFiles.get(name) is the unpacked folder), in local mode and on a cluster alike.
    with tempfile.TemporaryDirectory(prefix="infer-model-") as tmp:
        model_zip = shutil.make_archive(os.path.join(tmp, f"model-{version or 'given'}"), "zip", root_dir=local_model)
        return _predict(settings, layout, taxonomy, index_path, model_uri, version, model_zip, model_inputs)


def _model_inputs(local_model: str) -> str:
    """What a downloaded model reads (``training.pyfunc``'s inputs artifact; none: an image model)."""
    import json

    path = os.path.join(local_model, "artifacts", "inputs.json")
    if not os.path.exists(path):
        return "image"
    with open(path, encoding="utf-8") as f:
        return json.load(f)["inputs"]


def _predict(settings, layout, taxonomy, index_path, model_uri, version, model_zip, model_inputs) -> dict:
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    model_name = os.path.basename(model_zip)
    spark = get_spark(settings, STAGE)
    spark.sparkContext.addArchive(model_zip)
    index = spark.read.parquet(index_path)
    texts = [c for c in ("file_title", *TEXT_COLUMNS) if c in index.columns]  # an older index has none
    # A model that reads words predicts every image, with or without bytes; an image model the stored ones.
    todo = index if model_inputs != "image" else index.where(F.col("status") == "ok")
    todo = todo.select("image_key", "status", "shard", "offset", "size", *texts)
    n_shards = index.where(F.col("status") == "ok").select("shard").distinct().count()
    if n_shards == 0 and model_inputs == "image":
        raise StageError(STAGE, index_path, "no image of this run has bytes in the image store")

    slugs = taxonomy.slugs
    schema = T.StructType(
        [T.StructField("image_key", T.StringType())]
        + [T.StructField(f"p_{s}", T.DoubleType()) for s in slugs]
        + [T.StructField("predicted", T.ArrayType(T.StringType())), T.StructField("has_text", T.BooleanType())]
    )
    store = store_root(settings)
    predictions = todo.repartition(max(1, n_shards), "shard").mapInPandas(
        lambda it: predict_rows(it, model_name, slugs, store), schema
    )
    result = (
        index.select("image_key", "file_title", "split", "labeled", "status")
        .join(predictions, "image_key", "left")
        .withColumn("model_uri", F.lit(model_uri))
        .withColumn("model_version", F.lit(version))
        .withColumn("model_inputs", F.lit(model_inputs))
        .select(
            "image_key", "file_title", "split", "labeled", "status", "model_uri", "model_version", "model_inputs",
            *[f"p_{s}" for s in slugs], "predicted", "has_text",
        )
        .orderBy("image_key")
    )
    write_spark(result, layout.predictions)
    written = spark.read.parquet(layout.predictions)
    counts = written.agg(
        F.count("*").alias("rows"),
        F.count(f"p_{slugs[0]}").alias("predicted"),
        F.sum(F.col("labeled").cast("int")).alias("labeled"),
        F.sum((~F.col("has_text")).cast("int")).alias("without_text"),
    ).first()
    return {
        "predictions": layout.predictions,
        "model_uri": model_uri,
        "model_version": version,
        "rows": counts["rows"],
        "rows_with_probabilities": counts["predicted"],
        "labeled_rows": counts["labeled"],
        "model_inputs": model_inputs,
        # images the model read no word about (null for a model that reads no text)
        "rows_without_text": counts["without_text"],
        "shards": n_shards,
    }
