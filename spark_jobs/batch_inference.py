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
from training.inputs import ModelInputs
from training.pyfunc import read_inputs_json

STAGE = "infer"
BATCH = 256

_PREDICTORS: dict[str, object] = {}


def resolve_model(settings) -> tuple[str, str]:
    """(exact model URI, version) of the model to use: an alias is resolved once, here, to one version."""
    from pipeline.orchestration import tracking

    uri = settings.tracking.model_uri or f"models:/{tracking.model_name(settings)}@champion"
    try:
        return tracking.resolve_version(settings, uri)
    except LookupError as e:
        raise StageError(STAGE, uri, f"{e}; has `train` registered one?") from e


def model_inputs(settings) -> dict:
    """What the predictions depend on beyond the images: the exact model version (for ``pipeline.orchestration.lineage``)."""
    return {"model_uri": resolve_model(settings)[0]}


def _predictor(local_dir: str):
    if local_dir not in _PREDICTORS:
        from training.pyfunc import load_predictor

        _PREDICTORS[local_dir] = load_predictor(local_dir)
    return _PREDICTORS[local_dir]


class _StoredFeatures:
    """The stored features of one task's shards, one batch file decoded at a time (rows come in shard order)."""

    def __init__(self, root: str | None, fingerprint: str | None, shards: set):
        self.root, self.fingerprint, self.shards = root, fingerprint, shards
        self.shard, self.rows = None, {}

    def get(self, shard: str, key: str):
        """Row ``key``'s features, or None where its shard has none (then its pixels are read)."""
        from pipeline.features.embeddings import batch_file, read_batch

        if self.root is None or shard not in self.shards:
            return None
        if shard != self.shard:
            path = batch_file(self.root, shard)
            keys, values = read_batch(path, self.fingerprint, STAGE)
            self.shard, self.path, self.rows = shard, path, dict(zip(keys, values))
        if key not in self.rows:
            raise StageError(STAGE, self.path, f"no features for image {key!r} of {shard}")
        return self.rows[key]


def predict_rows(batches, model_name: str, slugs: list[str], store: str, features_root: str | None = None,
                 fingerprint: str | None = None, featured: tuple = ()):
    """mapInPandas body: index rows (key, shard, offset, size, texts) in, one row of probabilities per image out.

    Rows arrive grouped by shard and in offset order, so each task reads its
    tars (or its features files) front to back. Where the model's own image tower
    made the stored features of a row's shard (``featured``), the model's heads
    read them and no image is decoded; otherwise images go through
    ``pipeline.features.imaging.preprocess`` at the model's own input size,
    whatever the settings say. Texts go through the model's own text encoding
    (``pipeline.features.texts``), as in training.
    """
    import pandas as pd
    from pyspark import SparkFiles

    from pipeline.features.imaging import ImageError, preprocess
    from pipeline.features.texts import has_text
    from pipeline.inputs.store import read_payload

    predictor = _predictor(SparkFiles.get(model_name))
    stored = _StoredFeatures(features_root, fingerprint, set(featured))
    for pdf in batches:
        pdf = pdf.sort_values(["shard", "offset"])
        for start in range(0, len(pdf), BATCH):
            chunk = pdf.iloc[start:start + BATCH]
            pixels, features = [None] * len(chunk), [None] * len(chunk)
            if predictor.reads_image:
                # only a model that reads words gets rows without bytes: it reads their words alone
                for i, r in enumerate(chunk.itertuples(index=False)):
                    if r.status != "ok":
                        continue
                    features[i] = stored.get(r.shard, r.image_key)
                    if features[i] is not None:
                        continue
                    path = f"{store.rstrip('/')}/{r.shard}"
                    try:
                        pixels[i] = preprocess(read_payload(path, r.offset, r.size), predictor.image_size)
                    except ImageError as e:
                        raise StageError(STAGE, path, f"image {r.image_key!r} at byte {r.offset}: {e}") from e
            texts = chunk[predictor.encoding.columns].to_dict("records") if predictor.reads_text else None
            probs, ids = predictor.predict_rows(pixels, texts, features)
            probs = probs.astype("float64")
            out = pd.DataFrame({"image_key": chunk["image_key"].to_numpy()})
            for j, s in enumerate(slugs):
                out[f"p_{s}"] = probs[:, j]
            out["predicted"] = predictor.predicted_labels(probs)
            out["has_text"] = has_text(ids) if ids is not None else None
            yield out


def features_for(store: str, spec: dict) -> tuple[str | None, str]:
    """(features folder, why): the stored features the model's heads may read, or None and why not.

    Only features of the model's own image tower (its fingerprint) are ever used.
    """
    from pipeline.features.embeddings import features_root, read_backbone

    backbone = spec.get("backbone")
    if not backbone:
        return None, "the model has no image tower, or was logged before image features"
    root = features_root(store, backbone["fingerprint"])
    if read_backbone(root) is None:
        return None, f"no features of the model's backbone {backbone['fingerprint']} (run the embed stage)"
    return root, f"features of the model's backbone {backbone['fingerprint']}"


def run(settings) -> dict:
    import mlflow

    layout = Layout.from_settings(settings)
    taxonomy = Taxonomy.load(settings.label.taxonomy)
    index_path = require_input(STAGE, layout.image_index, "image index (from the shard stage)")
    model_uri, version = resolve_model(settings)

    local_model = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=None)
    model_inputs = read_inputs_json(os.path.join(local_model, "artifacts", "inputs.json"))
    # Spark ships a directory only in local mode; an archive it ships and unpacks on every executor
    # (SparkFiles.get(name) is the unpacked folder), in local mode and on a cluster alike.
    with tempfile.TemporaryDirectory(prefix="infer-model-") as tmp:
        model_zip = shutil.make_archive(os.path.join(tmp, f"model-{version or 'given'}"), "zip", root_dir=local_model)
        return _predict(settings, layout, taxonomy, index_path, model_uri, version, model_zip, model_inputs)


def _predict(settings, layout, taxonomy, index_path, model_uri, version, model_zip, spec) -> dict:
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from pipeline.features.embeddings import batch_file

    inputs = ModelInputs(spec["inputs"])
    store = store_root(settings)
    root, why = features_for(store, spec) if inputs.reads_pixels else (None, "the model reads no image")
    model_name = os.path.basename(model_zip)
    spark = get_spark(settings, STAGE)
    spark.sparkContext.addArchive(model_zip)
    index = spark.read.parquet(index_path)
    texts = [c for c in ("file_title", *TEXT_COLUMNS) if c in index.columns]  # an older index has none
    # A model that reads words predicts every image, with or without bytes; an image model the stored ones.
    todo = index.where(F.col("status") == "ok") if inputs.image_required else index
    todo = todo.select("image_key", "status", "shard", "offset", "size", *texts)
    shards = [r["shard"] for r in index.where(F.col("status") == "ok").select("shard").distinct().collect()]
    n_shards = len(shards)  # one per thousand images: small
    if n_shards == 0 and inputs.image_required:
        raise StageError(STAGE, index_path, "no image of this run has bytes in the image store")
    featured = tuple(s for s in shards if root and os.path.exists(batch_file(root, s)))

    slugs = taxonomy.slugs
    schema = T.StructType(
        [T.StructField("image_key", T.StringType())]
        + [T.StructField(f"p_{s}", T.DoubleType()) for s in slugs]
        + [T.StructField("predicted", T.ArrayType(T.StringType())), T.StructField("has_text", T.BooleanType())]
    )
    fingerprint = (spec.get("backbone") or {}).get("fingerprint")
    predictions = todo.repartition(max(1, n_shards), "shard").mapInPandas(
        lambda it: predict_rows(it, model_name, slugs, store, root, fingerprint, featured), schema
    )
    result = (
        index.select("image_key", "file_title", "split", "labeled", "status")
        .join(predictions, "image_key", "left")
        .withColumn("model_uri", F.lit(model_uri))
        .withColumn("model_version", F.lit(version))
        .withColumn("model_inputs", F.lit(str(inputs)))
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
    from_features = index.where((F.col("status") == "ok") & F.col("shard").isin(list(featured))).count() \
        if featured and inputs.reads_pixels else 0
    return {
        "predictions": layout.predictions,
        "model_uri": model_uri,
        "model_version": version,
        "rows": counts["rows"],
        "rows_with_probabilities": counts["predicted"],
        "labeled_rows": counts["labeled"],
        "model_inputs": str(inputs),
        # where the images were read from: the stored features of the model's own tower, else pixels
        "image_source": ("features" if featured and len(featured) == n_shards else
                         "features+pixels" if featured else "pixels" if inputs.reads_pixels else None),
        "image_source_reason": why if not featured or len(featured) == n_shards else
        f"{why}; {n_shards - len(featured)} shards without them read pixels",
        "rows_from_features": from_features,
        # images the model read no word about (null for a model that reads no text)
        "rows_without_text": counts["without_text"],
        "shards": n_shards,
    }
