"""Stage `infer`: topic distributions for every image, labeled or not.

The model (an MLflow pyfunc; by default the registered model's `champion`
alias, or the exact version the DAG's train task just produced) is downloaded
once by the driver and shipped to executors with ``SparkContext.addFile``.
Each task reads whole WebDataset shards and predicts in batches; the driver
only ever sees the list of shard paths. Images whose download failed get a row
too, with null probabilities and their manifest status, so the output has one
row per image of the WIT stage.
"""

from __future__ import annotations

import io
import os

from pipeline.atomic import write_spark
from pipeline.errors import StageError, require_input
from pipeline.layout import Layout, join
from pipeline.spark import get_spark
from pipeline.taxonomy import Taxonomy

STAGE = "infer"
BATCH = 256

_PREDICTORS: dict[str, object] = {}


def resolve_model(settings) -> tuple[str, str]:
    """(model URI, version) of the model to use, asking the registry about aliases."""
    from mlflow import MlflowClient

    from pipeline import tracking

    tracking.configure(settings)
    uri = settings.tracking.model_uri or f"models:/{settings.tracking.model_name}@champion"
    client = MlflowClient()
    rest = uri[len("models:/"):] if uri.startswith("models:/") else None
    try:
        if rest and "@" in rest:
            name, alias = rest.split("@", 1)
            return uri, str(client.get_model_version_by_alias(name, alias).version)
        if rest and "/" in rest:
            return uri, rest.split("/", 1)[1]
    except Exception as e:  # noqa: BLE001 - the registry's own error says why
        raise StageError(STAGE, uri, f"cannot resolve the model ({e}); has `train` registered one?") from e
    return uri, ""


def _predictor(local_dir: str):
    if local_dir not in _PREDICTORS:
        from training.pyfunc import load_predictor

        _PREDICTORS[local_dir] = load_predictor(local_dir)
    return _PREDICTORS[local_dir]


def _decode(jpeg: bytes, size: int):
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size))
        return np.asarray(im, dtype="uint8")


def predict_shards(batches, model_name: str, slugs: list[str], size: int, shards_root: str):
    """mapInPandas body: shard paths in, one row of probabilities per sample out."""
    import fsspec
    import numpy as np
    import pandas as pd
    from pyspark import SparkFiles

    predictor = _predictor(SparkFiles.get(model_name))
    for paths in batches:
        for shard in paths["shard"]:
            keys, meta, images = [], [], []

            def flush():
                if not images:
                    return None
                probs = predictor.predict_arrays(np.stack(images)).astype("float64")
                out = pd.DataFrame(meta)
                out["image_key"] = keys
                for j, s in enumerate(slugs):
                    out[f"p_{s}"] = probs[:, j]
                out["predicted"] = predictor.predicted_labels(probs)
                keys.clear(), meta.clear(), images.clear()
                return out

            with fsspec.open(join(shards_root, shard), "rb") as f:
                for sample in _samples(f):
                    keys.append(sample["__key__"])
                    meta.append({"shard": shard})
                    images.append(_decode(sample["jpg"], size))
                    if len(images) >= BATCH:
                        yield flush()
            out = flush()
            if out is not None:
                yield out


def _samples(stream):
    """Group the members of a WebDataset tar stream into samples by key."""
    import tarfile

    current: dict = {}
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            if current and current["__key__"] != key:
                yield current
                current = {}
            current["__key__"] = key
            current[ext] = tar.extractfile(member).read()
    if current:
        yield current


def run(settings) -> dict:
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    import mlflow

    layout = Layout.from_settings(settings)
    taxonomy = Taxonomy.load(settings.label.taxonomy)
    manifest_path = require_input(STAGE, layout.shard_manifest, "shard manifest")
    model_uri, version = resolve_model(settings)

    local_model = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=None)
    model_name = os.path.basename(local_model.rstrip("/"))

    spark = get_spark(settings, STAGE)
    spark.sparkContext.addFile(local_model, recursive=True)
    manifest = spark.read.parquet(manifest_path)
    shards = manifest.where(F.col("status") == "ok").select("shard").distinct().orderBy("shard")
    n_shards = shards.count()
    if n_shards == 0:
        raise StageError(STAGE, manifest_path, "no shard holds an image with status ok")

    slugs = taxonomy.slugs
    schema = T.StructType(
        [T.StructField("shard", T.StringType()), T.StructField("image_key", T.StringType())]
        + [T.StructField(f"p_{s}", T.DoubleType()) for s in slugs]
        + [T.StructField("predicted", T.ArrayType(T.StringType()))]
    )
    size, root = settings.shard.image_size, layout.shards
    predictions = shards.repartition(n_shards, "shard").mapInPandas(
        lambda it: predict_shards(it, model_name, slugs, size, root), schema
    )
    result = (
        manifest.select("image_key", "file_title", "split", "status")
        .join(predictions.drop("shard"), "image_key", "left")
        .join(spark.read.parquet(layout.wit_images).select("image_key", "labeled"), "image_key", "left")
        .withColumn("model_uri", F.lit(model_uri))
        .withColumn("model_version", F.lit(version))
        .select(
            "image_key", "file_title", "split", "labeled", "status", "model_uri", "model_version",
            *[f"p_{s}" for s in slugs], "predicted",
        )
        .orderBy("image_key")
    )
    write_spark(result, layout.predictions)
    written = spark.read.parquet(layout.predictions)
    counts = written.agg(
        F.count("*").alias("rows"),
        F.count(f"p_{slugs[0]}").alias("predicted"),
        F.sum(F.col("labeled").cast("int")).alias("labeled"),
    ).first()
    return {
        "predictions": layout.predictions,
        "model_uri": model_uri,
        "model_version": version,
        "rows": counts["rows"],
        "rows_with_probabilities": counts["predicted"],
        "labeled_rows": counts["labeled"],
        "shards": n_shards,
    }
