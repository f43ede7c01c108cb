"""What the words add: image-only, text-only and image+text models trained on the same split.

The synthetic store shows each of an image's labels in its pixels only, in its
texts only, or in both (``devtools.synthetic``, ``complementary=True``), so
each input alone misses labels the other has.
"""

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from devtools import synthetic
from pipeline.config import load_settings
from pipeline.features.texts import TEXT_COLUMNS
from pipeline.labels.taxonomy import Taxonomy
from pipeline.orchestration import tracking
from tests.test_training import TRAIN as TRAIN_STAGE
from training import data
from training.pyfunc import load_predictor

SIZES = {"train": 1024, "validation": 64, "threshold": 128, "test": 192}
TRAIN = {**TRAIN_STAGE, "train.text_vocab": "4096"}  # one epoch of B0 at 32 px, as the train stage's tests
MODES = ("image", "text", "image+text")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from training import train

    root = tmp_path_factory.mktemp("modes")
    base = {"paths.data_root": str(root / "data"), "paths.state_dir": str(root / "state"), **TRAIN}
    synthetic.write_images(load_settings(base, environ={}), SIZES, shard_size=200, complementary=True)
    out = {}
    for mode in MODES:
        s = load_settings({**base, "train.inputs": mode}, environ={})
        out[mode] = (s, train.run(s))
    return out


def _auc(runs, mode):
    return runs[mode][1]["test_macro_auc_pr"]


def test_text_alone_beats_chance_and_stays_far_from_perfect(runs):
    s, summary = runs["text"]
    assert summary["model_inputs"] == "text"
    assert summary["beats_chance"], summary
    assert summary["test_macro_auc_pr"] <= 0.8, summary


def test_image_and_text_beats_each_alone_on_the_same_split(runs):
    fingerprints = {runs[m][1]["test_fingerprint"] for m in MODES}
    assert len(fingerprints) == 1
    assert _auc(runs, "image+text") > _auc(runs, "image"), {m: _auc(runs, m) for m in MODES}
    assert _auc(runs, "image+text") > _auc(runs, "text"), {m: _auc(runs, m) for m in MODES}


def test_the_gate_compares_a_champion_of_another_mode_on_the_same_split(runs):
    first, second, third = (runs[m][1] for m in MODES)
    assert first["champion_before"] is None
    # each later run scored the champion of its time (another mode) on its own test split
    for later in (second, third):
        assert later["champion_before"] is not None
        c = tracking.client(runs["text"][0])
        run = c.get_run(later["run_id"])
        assert run.data.tags["champion_compared"] == str(later["champion_before"])
        assert "champion_comparison_error" not in run.data.tags, run.data.tags
        assert np.isfinite(run.data.metrics["champion_test_macro_auc_pr"])


def _image_text_model(runs, n: int):
    """The image+text run's summary, its registered model, the test index and its first ``n`` images."""
    s, summary = runs["image+text"]
    tracking.configure(s)
    model = load_predictor(f"models:/wiki-image-topics-v1.3/{summary['model_version']}")
    index = data.split_index(s, "test", len(model.names))
    return summary, model, index, data.read_images(index, np.arange(n), model.image_size)


def test_image_and_text_model_predicts_without_text(runs):
    summary, model, index, x = _image_text_model(runs, 8)
    assert np.isfinite(summary["test_macro_auc_pr_text_removed"])
    blank = model.predict(None, pd.DataFrame({"image": [_png(im) for im in x]}))  # no text column at all
    empty = model.predict(None, pd.DataFrame({"image": [_png(im) for im in x], "page_titles": [[]] * 8}))
    assert np.isfinite(blank.iloc[:, :-1].to_numpy()).all()
    np.testing.assert_allclose(blank.iloc[:, :-1].to_numpy(), empty.iloc[:, :-1].to_numpy(), atol=1e-6)
    with_text = model.predict_inputs(x, model.encode_texts(_rows(index, range(8))))
    assert not np.allclose(blank.iloc[:, :-1].to_numpy(), with_text, atol=1e-4)


def test_image_and_text_model_predicts_from_the_words_where_the_image_is_missing(runs):
    summary, model, index, x = _image_text_model(runs, 6)
    assert np.isfinite(summary["test_macro_auc_pr_image_removed"])
    texts = pd.DataFrame(_rows(index, range(6)))
    ids = model.encode_texts(_rows(index, range(6)))
    words_only = model.predict_inputs(None, ids)
    # rows whose bytes are missing (None, empty) are predicted from their words, the others as usual
    mixed = model.predict(None, texts.assign(image=[None, b"", *[_png(im) for im in x[2:]]]))
    np.testing.assert_allclose(mixed.iloc[:2, :-1].to_numpy(), words_only[:2], atol=1e-5)
    np.testing.assert_allclose(mixed.iloc[2:, :-1].to_numpy(), model.predict_inputs(x[2:], ids[2:]), atol=1e-5)
    assert not np.allclose(words_only[2:], model.predict_inputs(x[2:], ids[2:]), atol=1e-4)
    with pytest.raises(ValueError, match="image bytes"):
        load_predictor(f"models:/wiki-image-topics-v1.3/{runs['image'][1]['model_version']}").predict(
            None, texts.assign(image=[None, *[_png(im) for im in x[1:]]]))


def _png(im) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(im).save(buf, format="PNG")
    return buf.getvalue()


def _rows(index, rows):
    return data._text_table(index).take(list(rows)).to_pylist()


@pytest.mark.parametrize("mode", MODES)
def test_served_equals_what_training_measured(runs, mode):
    """The registered pyfunc, fed image bytes and text columns, gives what the loader's arrays give."""
    import mlflow.pyfunc

    s, summary = runs[mode]
    tracking.configure(s)
    uri = f"models:/wiki-image-topics-v1.3/{summary['model_version']}"
    unwrapped = load_predictor(uri)
    assert unwrapped.inputs == mode
    index = data.split_index(s, "test", len(Taxonomy.load("v1.3").names))
    rows = np.arange(12)
    x = data.read_inputs(index, rows, unwrapped.inputs, unwrapped.spec)
    direct = unwrapped.predict_inputs(x.get("image"), x.get("text"))

    frame = pd.DataFrame(_rows(index, rows))
    if mode != "text":
        frame["image"] = [_png(im) for im in x["image"]]
    served = mlflow.pyfunc.load_model(uri).predict(frame)
    np.testing.assert_allclose(served.iloc[:, :-1].to_numpy(), direct, atol=1e-5)
    assert list(served.columns)[-1] == "predicted"


def _index_with_failed_downloads(s, root, n: int):
    """A copy of the run's data root whose image index marks the first ``n`` test images' downloads
    failed (HTTP 404, no bytes): the settings that read it, the index and which rows were marked."""
    import dataclasses
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.lake.layout import Layout

    shutil.copytree(s.paths.data_root, root / "data")
    s = dataclasses.replace(s, paths=dataclasses.replace(s.paths, data_root=str(root / "data")))
    index_dir = Layout.from_settings(s).image_index
    table = pq.read_table(index_dir)
    failed = set(table.filter(pa.compute.equal(table["split"], "test"))["image_key"].to_pylist()[:n])
    marked = pa.array([k in failed for k in table["image_key"].to_pylist()])
    table = table.set_column(table.schema.get_field_index("status"), "status",
                             pa.compute.if_else(marked, "http_404", table["status"]))
    for c in ("shard", "offset", "size"):
        table = table.set_column(table.schema.get_field_index(c), c,
                                 pa.compute.if_else(marked, pa.scalar(None, table[c].type), table[c]))
    shutil.rmtree(index_dir)
    (root / "idx").mkdir()
    pq.write_table(table, root / "idx" / "part-0.parquet")
    shutil.copytree(root / "idx", index_dir)
    return s, table, marked


# The text-only model is served above; `infer` runs the two models that read pixels (each run is a
# Spark job that loads the model in its Python workers: about a minute here).
@pytest.mark.parametrize("mode", ["image", "image+text"])
def test_batch_inference_on_spark_equals_the_served_model(runs, mode, tmp_path):
    """`infer` (Spark, the model shipped to executors) gives what the registered pyfunc serves, and says
    which inputs the model read and whether each image had text. Images whose download failed get no
    probabilities from an image model, and from an image+text model what the pyfunc serves for a row
    without image bytes: a prediction from their words."""
    import dataclasses

    import mlflow.pyfunc
    import pyarrow.parquet as pq

    from pipeline.lake.layout import Layout
    from spark_jobs import batch_inference

    s, summary = runs[mode]
    uri = f"models:/wiki-image-topics-v1.3/{summary['model_version']}"
    s, table, marked = _index_with_failed_downloads(s, tmp_path, 3)
    s = dataclasses.replace(s, tracking=dataclasses.replace(s.tracking, model_uri=uri))
    out = batch_inference.run(s)
    assert out["model_inputs"] == mode
    assert out["rows"] == len(table)
    assert out["rows_with_probabilities"] == len(table) - (3 if mode == "image" else 0)
    assert out["rows_without_text"] == (0 if mode != "image" else None)
    predictions = pq.read_table(Layout.from_settings(s).predictions).to_pandas().set_index("image_key")
    assert set(predictions["model_inputs"]) == {mode}
    tracking.configure(s)
    served_model = mlflow.pyfunc.load_model(uri)

    index = data.split_index(s, "test", len(Taxonomy.load("v1.3").names))
    rows = np.arange(10)
    frame = pd.DataFrame(_rows(index, rows))
    frame["image"] = [_png(im) for im in data.read_images(index, rows, 32)]
    served = served_model.predict(frame)
    cols = [c for c in served.columns if c.startswith("p_")]
    batch = predictions.loc[[index.keys[r] for r in rows]]
    np.testing.assert_allclose(batch[cols].to_numpy(), served[cols].to_numpy(), atol=1e-5)
    assert [list(p) for p in batch["predicted"]] == [list(p) for p in served["predicted"]]

    failed = table.filter(marked).select(["image_key", "file_title", *TEXT_COLUMNS]).to_pylist()
    got = predictions.loc[[r["image_key"] for r in failed]]
    assert (got["status"] == "http_404").all()
    if mode == "image":
        assert got[cols].isna().all().all() and predictions["has_text"].isna().all()
    else:
        assert predictions["has_text"].all()
        words = served_model.predict(pd.DataFrame(failed).drop(columns=["image_key"]))
        np.testing.assert_allclose(got[cols].to_numpy(), words[cols].to_numpy(), atol=1e-5)
