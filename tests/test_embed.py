"""Image features computed once (the ``embed`` stage), heads trained on them, inference from them.

One synthetic store: a fine-tuned model becomes champion; ``embed`` stores its
tower's features; ``train`` in ``auto`` then trains heads only; ``infer`` from
the stored features equals ``infer`` from pixels.
"""

import shutil

import numpy as np
import pandas as pd
import pytest

from devtools import synthetic
from pipeline.config import load_settings
from pipeline.errors import StageError
from pipeline.features import embeddings
from pipeline.labels.taxonomy import Taxonomy
from pipeline.orchestration import tracking
from tests.test_training import TRAIN
from training import data
from training.inputs import SUPPORTED, ModelInputs
from training.pyfunc import load_predictor

SIZES = {"train": 384, "validation": 64, "threshold": 64, "test": 96}
HEADS = {"train.epochs": "3", "train.heads_batch_size": "64"}


def _settings(root, **extra):
    return load_settings({"paths.data_root": str(root / "data"), "paths.state_dir": str(root / "state"),
                          **TRAIN, **HEADS, **extra}, environ={})


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    from training import embed, train

    root = tmp_path_factory.mktemp("embed")
    s = _settings(root)
    made = synthetic.write_images(s, SIZES, shard_size=200)
    before = embed.run(s)  # no champion yet: nothing to embed with
    finetune = train.run(s)
    first = embed.run(s)
    again = embed.run(s)
    heads = train.run(s)
    return {"root": root, "settings": s, "store": made["store"], "shards": made["shards"], "before": before,
            "finetune": finetune, "first": first, "again": again, "heads": heads}


def test_embed_covers_every_stored_image_once(night):
    assert night["before"]["images_embedded"] == 0 and night["before"]["backbone"] is None
    assert night["finetune"]["train_mode"] == "finetune"
    first, again = night["first"], night["again"]
    assert first["images_embedded"] == sum(SIZES.values())
    assert first["shards_embedded"] == len(night["shards"]) == first["shards"]
    assert again["images_embedded"] == 0 and again["shards_embedded"] == 0
    backbone = first["backbone"]
    assert backbone["fingerprint"] == night["finetune"]["backbone"]["fingerprint"]
    assert backbone["model_uri"] == night["finetune"]["model_uri"]
    root = first["features"]
    assert embeddings.read_backbone(root)["version"] == night["finetune"]["model_version"]
    keys, values = embeddings.read_batch(embeddings.batch_file(root, "shards/shard-000000.tar"),
                                         backbone["fingerprint"], "test")
    assert len(keys) == 200 and values.shape == (200, backbone["dim"]) and values.dtype == np.float32
    # stored as fp16: the values are exactly representable in it
    assert np.array_equal(values, values.astype("float16").astype("float32"))


def test_auto_trains_heads_on_the_stored_features(night):
    heads = night["heads"]
    assert heads["train_mode"] == "heads", heads["train_mode_reason"]
    assert heads["backbone"]["fingerprint"] == night["first"]["backbone"]["fingerprint"]
    assert heads["test_fingerprint"] == night["finetune"]["test_fingerprint"]  # the gate compares on one split
    # a backbone of one epoch from scratch: its frozen features carry less than the fine-tuned model's
    assert heads["test_macro_auc_pr"] > heads["test_mean_prevalence_positive_labels"], heads
    client = tracking.client(night["settings"])
    v = client.get_model_version(heads["model_name"], heads["model_version"])
    assert v.tags["train_mode"] == "heads" and v.tags["backbone_fingerprint"] == heads["backbone"]["fingerprint"]


def test_the_logged_heads_model_reads_pixels_and_equals_its_heads_on_features(night):
    s, heads = night["settings"], night["heads"]
    model = load_predictor(heads["model_uri"], s)
    assert model.inputs == "image" and model.tower is not None
    index = data.split_index(s, "test", len(Taxonomy.load("v1.3").names))
    data.attach_features(index, night["first"]["features"], heads["backbone"]["fingerprint"])
    rows = np.arange(40)
    from_pixels = model.predict_inputs(images=data.read_images(index, rows, model.image_size))
    from_features = model.predict_inputs(features=index.features.read(rows))
    np.testing.assert_allclose(from_pixels, from_features, atol=1e-5)


def test_heads_without_features_says_which_stage_to_run(night):
    from training import train

    s = _settings(night["root"], **{"train.mode": "heads", "tracking.model_name": "no-such-model"})
    with pytest.raises(StageError, match="python -m pipeline embed"):
        train.run(s)


def test_infer_from_features_equals_infer_from_pixels(night):
    from spark_jobs import batch_inference
    from pipeline.lake.layout import Layout

    s = night["settings"]
    out = Layout.from_settings(s).predictions
    featured = batch_inference.run(s)
    assert featured["image_source"] == "features", featured
    assert featured["rows_from_features"] == sum(SIZES.values())
    a = pd.read_parquet(out).sort_values("image_key").reset_index(drop=True)
    # the features of another backbone are never read: here, none of the champion's own
    root = night["first"]["features"]
    shutil.move(root, root + ".away")
    try:
        plain = batch_inference.run(s)
    finally:
        shutil.move(root + ".away", root)
    assert plain["image_source"] == "pixels" and "embed" in plain["image_source_reason"], plain
    b = pd.read_parquet(out).sort_values("image_key").reset_index(drop=True)
    assert list(a.columns) == list(b.columns)
    p = [c for c in a.columns if c.startswith("p_")]
    np.testing.assert_allclose(a[p].to_numpy(), b[p].to_numpy(), atol=1e-5)
    assert (a["predicted"].map(list) == b["predicted"].map(list)).mean() > 0.99


def test_a_truncated_or_missing_features_file_is_an_error_naming_it(tmp_path):
    path = str(tmp_path / "batch-000000.parquet")
    embeddings.write_batch(path, ["a", "b"], np.ones((2, 8), "float32"), "fp")
    keys, values = embeddings.read_batch(path, "fp", "embed")
    assert keys == ["a", "b"] and values.sum() == 16
    with pytest.raises(StageError, match="expected 'other'"):
        embeddings.read_batch(path, "other", "embed")
    data_ = open(path, "rb").read()
    open(path, "wb").write(data_[: len(data_) // 2])
    with pytest.raises(StageError, match=r"batch-000000\.parquet.*truncated"):
        embeddings.read_batch(path, "fp", "embed")
    with pytest.raises(StageError, match="missing"):
        embeddings.read_batch(str(tmp_path / "batch-000001.parquet"), "fp", "embed")


def test_model_inputs_refuse_what_no_model_is_built_for():
    assert [str(ModelInputs(v)) for v in SUPPORTED] == list(SUPPORTED)
    assert ModelInputs("image+text").heads() == "features+text"
    assert ModelInputs("features+text").with_pixels() == "image+text"
    for bad in ("pixels", "image+features", "text+image+text", ""):
        with pytest.raises(ValueError, match="train.inputs must be one of"):
            ModelInputs(bad)
    with pytest.raises(ValueError, match="train.mode"):
        load_settings({"train.mode": "linear-probe"}, environ={})
