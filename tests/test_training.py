"""The train stage end to end on synthetic label-dependent shards (CPU, 32x32, B0 from scratch)."""

import io
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from devtools import synthetic
from pipeline.config import load_settings
from pipeline.errors import StageError
from pipeline.labels.taxonomy import Taxonomy
from pipeline.lake.layout import Layout
from pipeline.orchestration import tracking
from training import data
from training.pyfunc import load_predictor

REPO = Path(__file__).resolve().parents[1]
from training.inputs import InputSpec, ModelInputs  # noqa: E402

IMAGE, PIXELS32 = ModelInputs("image"), InputSpec(32)
SIZES = {"train": 1024, "validation": 64, "threshold": 96, "test": 128}
# What B0 from scratch needs to beat chance on CPU in one epoch: ~64 optimizer steps
# (1024 images, batch 16, lr 2e-3). With 16 steps (512 images, batch 32) the BatchNorm
# moving statistics are still near their initial values and validation/test scores are noise.
TRAIN = {
    "train.image_size": "32",
    "train.backbone": "B0",
    "train.weights": "none",
    "train.epochs": "1",
    "train.batch_size": "16",
    "train.learning_rate": "2e-3",
    "train.workers": "1",
    "train.loss": "weighted_bce",
}


def _settings(root: Path, **extra):
    return load_settings(
        {"paths.data_root": str(root / "data"), "paths.state_dir": str(root / "state"), **TRAIN, **extra}, environ={}
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    s = _settings(root)
    synthetic.write_images(s, SIZES, shard_size=100, unlabeled_every=10)
    from training import train

    summary = train.run(s)
    return root, s, summary


# ---------------------------------------------------------------- data loader


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    s = _settings(root)
    synthetic.write_images(s, {"train": 50, "test": 7}, shard_size=20, unlabeled_every=5)
    return s


def test_index_skips_unlabeled_and_picks_target(small_shards):
    tax = Taxonomy.load("v1.3")
    flat = data.split_index(small_shards, "train", len(tax.names), hierarchical=False)
    hier = data.split_index(small_shards, "train", len(tax.names), hierarchical=True)
    assert len(flat) == 40 and flat.unlabeled == 10 and len(flat.paths) == 3
    # hierarchical targets are the flat ones closed under ancestors
    for row_flat, row_hier in zip(flat.y, hier.y):
        labels = [n for n, v in zip(tax.names, row_flat) if v]
        assert row_hier.tolist() == tax.multi_hot(tax.with_ancestors(labels))
    assert (hier.y.sum(1) > flat.y.sum(1)).all()


def test_batches_shapes_shuffle_and_determinism(small_shards):
    tax = Taxonomy.load("v1.3")
    index = data.split_index(small_shards, "train", len(tax.names))
    ds = data.ShardBatches(index, 16, PIXELS32, IMAGE, seed=3)
    assert len(ds) == 3
    x, y = ds[0]
    assert x.shape == (16, 32, 32, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 255
    assert y.shape == (16, len(tax.names)) and y.dtype == np.float32
    assert len({index.shard[r] for r in ds.order[:16]}) > 1  # shuffled across shards
    first = ds.order.copy()
    assert np.array_equal(first, data.ShardBatches(index, 16, PIXELS32, IMAGE, seed=3).order)
    ds.on_epoch_end()
    assert not np.array_equal(first, ds.order) and sorted(first) == sorted(ds.order)
    # targets follow their images
    rows = ds.order[:16]
    x2, y2 = ds[0]
    assert np.array_equal(y2, index.y[rows])
    assert np.array_equal(x2, data.read_images(index, rows, 32).astype("float32"))
    # concurrent loader threads read the same shards without mixing up bytes
    from concurrent.futures import ThreadPoolExecutor

    small = data.ShardBatches(index, 4, PIXELS32, IMAGE, seed=5)
    expected = [small[i][0] for i in range(len(small))]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: small[i][0], list(range(len(small))) * 3))
    for i, x_i in enumerate(got):
        assert np.array_equal(x_i, expected[i % len(small)])
    # (the race is rare under the GIL, so also check that each thread gets its own file object)
    from pipeline.inputs import store

    def handle(_):
        store.read_payload(index.paths[0], int(index.offset[0]), int(index.size[0]))
        return threading.get_ident(), id(store._handles()[index.paths[0]])

    with ThreadPoolExecutor(2) as pool:
        handles = list(pool.map(handle, range(50)))
    assert len({h for _, h in handles}) == len({t for t, _ in handles})
    # batch size is clipped to the split size
    assert len(data.ShardBatches(index, 10_000, PIXELS32, IMAGE)) == 1
    # training batches leave out each epoch's partial batch: one shape, a different remainder each epoch
    train = data.ShardBatches(index, 16, PIXELS32, IMAGE, seed=3, drop_remainder=True)
    assert len(train) == 2 and all(len(train[i][1]) == 16 for i in range(2))
    left_out = [set(train.order[32:])]
    train.on_epoch_end()
    left_out.append(set(train.order[32:]))
    assert left_out[0] != left_out[1]
    assert len(data.ShardBatches(index, 10_000, PIXELS32, IMAGE, drop_remainder=True)) == 1


def test_empty_and_missing_splits_are_clear_errors(small_shards, tmp_path):
    with pytest.raises(StageError, match="no labeled, stored images"):
        data.split_index(small_shards, "validation", 31)
    with pytest.raises(StageError, match="missing image index"):
        data.split_index(_settings(tmp_path / "empty"), "train", 31)
    # a split with only unlabeled samples
    s2 = _settings(tmp_path)
    synthetic.write_images(s2, {"test": 4}, unlabeled_every=1)
    with pytest.raises(StageError, match=r"\(4 unlabeled, 0 without bytes\)"):
        data.split_index(s2, "test", 31)


def test_wrong_label_count_and_truncated_shard_name_the_file(small_shards, tmp_path):
    with pytest.raises(StageError, match="the taxonomy has 30") as e:
        data.split_index(small_shards, "train", 30)
    assert Layout.from_settings(small_shards).image_index in str(e.value)
    s2 = _settings(tmp_path)
    out = synthetic.write_images(s2, {"train": 6}, shard_size=10)
    index = data.split_index(s2, "train", 31)
    with open(out["shards"][0], "r+b") as f:
        f.truncate(int(index.offset[-1]) + 10)  # the last image is cut
    data.close_handles()
    with pytest.raises(StageError, match="truncated shard") as e:
        data.read_images(index, np.arange(len(index)), 32)
    assert out["shards"][0] in str(e.value)


def test_changing_the_image_size_reads_the_same_store(small_shards):
    index = data.split_index(small_shards, "train", 31)
    small, big = data.read_images(index, [0, 1], 16), data.read_images(index, [0, 1], 48)
    assert small.shape == (2, 16, 16, 3) and big.shape == (2, 48, 48, 3)


# ---------------------------------------------------------------- training


def test_training_beats_chance_and_logs_everything(trained):
    root, s, summary = trained
    assert summary["n_train"] == SIZES["train"] - SIZES["train"] // 10 and summary["n_train_unlabeled"] == SIZES["train"] // 10
    assert summary["beats_chance"], summary
    assert summary["test_macro_auc_pr"] >= 2 * summary["test_mean_prevalence_positive_labels"]
    assert summary["model_uri"] == "models:/wiki-image-topics-v1.3/1" and summary["model_version"] == "1"
    assert sorted(summary["aliases"]) == ["challenger", "champion"]
    assert summary["train_images_per_s"] > 0 and summary["predict_images_per_s"] > 0

    c = tracking.client(s)
    run = c.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith((root / "state" / "mlartifacts").as_uri())
    assert len(c.get_metric_history(summary["run_id"], "val_loss")) == 1
    assert run.data.metrics["test_macro_auc_pr"] == pytest.approx(summary["test_macro_auc_pr"])
    assert run.data.params["train.backbone"] == "B0"
    files = {f.path for f in c.list_artifacts(summary["run_id"])}
    files |= {f.path for d in ("plots", "taxonomy") for f in c.list_artifacts(summary["run_id"], d)}
    for name in ("thresholds.json", "per_label.csv", "summary.json", "history.json",
                 "plots/pr_curves.png", "plots/thresholds.png", "taxonomy/v1.3.yaml", "taxonomy/taxonomy_version.txt"):
        assert name in files, files
    mv = c.get_model_version("wiki-image-topics-v1.3", "1")
    assert mv.tags["test_fingerprint"] == summary["test_fingerprint"]


def test_pyfunc_predicts_from_bytes_and_arrays(trained):
    import mlflow.pyfunc
    import pandas as pd

    root, s, summary = trained
    tracking.configure(s)
    tax = Taxonomy.load("v1.3")
    predictor = load_predictor("models:/wiki-image-topics-v1.3@champion")
    assert predictor.names == tax.names and predictor.image_size == 32

    index = data.split_index(s, "test", len(tax.names))
    x = data.read_images(index, np.arange(len(index)), 32)
    probs = predictor.predict_arrays(x[:20])
    assert probs.shape == (20, len(tax.names)) and probs.dtype == np.float32
    assert ((probs >= 0) & (probs <= 1)).all()
    # any size is resized to the model's: same answer as resizing ourselves
    big = np.stack([np.asarray(Image.fromarray(im).resize((48, 48))) for im in x[:4]])
    assert predictor.predict_arrays(big).shape == (4, len(tax.names))

    model = mlflow.pyfunc.load_model(summary["model_uri"])
    encoded = []
    for im in x[:5]:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="PNG")
        encoded.append(buf.getvalue())
    out = model.predict(pd.DataFrame({"image": encoded}))
    assert list(out.columns) == [f"p_{slug}" for slug in tax.slugs] + ["predicted"]
    np.testing.assert_allclose(out.iloc[:, :-1].to_numpy(), probs[:5], atol=1e-5)  # PNG is lossless
    for row, p in zip(out["predicted"], out.iloc[:, :-1].to_numpy()):
        assert row == [n for n, v, t in zip(tax.names, p, predictor.thresholds) if v >= t]
    out2 = model.unwrap_python_model().predict(None, x[:5])
    np.testing.assert_allclose(out2.iloc[:, :-1].to_numpy(), probs[:5], atol=1e-5)
    # a non-square image is center-cropped, as in training (no train/serve skew)
    from pipeline.features.imaging import preprocess

    wide = np.zeros((40, 80, 3), dtype="uint8")
    wide[:, 20:60] = x[0, 0, 0]
    buf = io.BytesIO()
    Image.fromarray(wide).save(buf, format="PNG")
    served = model.predict(pd.DataFrame({"image": [buf.getvalue()]})).iloc[:, :-1].to_numpy()
    trained_view = predictor.predict_arrays(preprocess(buf.getvalue(), 32)[None])
    np.testing.assert_allclose(served, trained_view, atol=1e-5)
    seen = preprocess(buf.getvalue(), 32).astype(int)  # only the middle square is seen, not squashed
    assert (abs(seen[2:-2, 2:-2] - x[0, 0, 0].astype(int)) <= 2).all()


def test_sigterm_ends_run_failed_and_moves_no_alias(trained, tmp_path):
    root, s, summary = trained
    c = tracking.client(s)
    before = dict(c.get_registered_model("wiki-image-topics-v1.3").aliases)
    args = [f"--set={k}={v}" for k, v in {**TRAIN, "train.epochs": "50"}.items()]
    args += [f"--set=paths.data_root={root / 'data'}", f"--set=paths.state_dir={root / 'state'}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "training.train", *args],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    watchdog = threading.Timer(600, proc.kill)  # building the model takes minutes beside the other workers
    watchdog.start()
    log = []
    try:
        for line in proc.stdout:
            log.append(line)
            # Inside fit (tracing the train step takes a minute here): the run is mid-training.
            if "Epoch 1/" in line:
                threading.Timer(3, proc.send_signal, (signal.SIGTERM,)).start()
        rc = proc.wait()
    finally:
        watchdog.cancel()
    assert rc == 128 + signal.SIGTERM, "".join(log[-30:])
    runs = c.search_runs([run_id_exp(c, s)], order_by=["attributes.start_time DESC"], max_results=1)
    killed = runs[0]
    assert killed.info.run_id != summary["run_id"]
    assert killed.info.status == "FAILED"
    assert "signal 15" in killed.data.tags["failure"]
    assert dict(c.get_registered_model("wiki-image-topics-v1.3").aliases) == before
    assert len(c.search_model_versions("name='wiki-image-topics-v1.3'")) == 1
    assert not (tmp_path / "mlruns").exists()


def run_id_exp(client, s):
    return client.get_experiment_by_name(s.tracking.experiment).experiment_id


# ---------------------------------------------------------------- model


def test_model_options_head_and_roundtrip(tmp_path):
    import keras

    from training.model import build_model, predict_probs

    tax = Taxonomy.load("v1.3")
    r = tax.ancestor_matrix()
    partial = build_model(31, "B0", "none", 32, trainable=5)
    base = partial.get_layer("image_tower").layers[1]  # the EfficientNet inside the image tower
    assert [layer.trainable for layer in base.layers[-5:]] == [True] * 5
    assert not any(layer.trainable for layer in base.layers[:-5])
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model(31, "B9", "none", 32)

    model = build_model(31, "B0", "none", 32, hierarchical_head=True, ancestor_matrix=r)
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("uint8")
    p = predict_probs(model, x)
    for child in tax.names:
        for anc in tax.ancestors(child):  # a parent is never less likely than its child
            assert (p[:, tax.names.index(anc)] >= p[:, tax.names.index(child)] - 1e-7).all()
    path = str(tmp_path / "m.keras")
    model.save(path)
    again = keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(predict_probs(again, x), p, atol=1e-6)
    weights = str(tmp_path / "w.weights.h5")
    model.save_weights(weights)
    from_file = build_model(31, "B0", weights, 32, hierarchical_head=True, ancestor_matrix=r)
    np.testing.assert_allclose(predict_probs(from_file, x), p, atol=1e-6)
    # in batches of 3, the last (one image) padded to 3 and its padding dropped: the same rows
    np.testing.assert_allclose(predict_probs(model, x, batch_size=3), p, atol=1e-6)
