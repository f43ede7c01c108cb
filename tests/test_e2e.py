"""The whole Airflow DAG on a tiny sample, asserting on the real outputs it leaves."""

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from pipeline.demo import run_demo

    root = tmp_path_factory.mktemp("e2e")
    # The sample's truth.json holds the labels of the plain depth rule; headJ is tested on its own.
    overrides = {"paths.data_root": str(root / "data"), "paths.state_dir": str(root / "state"),
                 "label.heuristics": "depth"}
    result = run_demo(overrides=overrides, images=400, categories=400, seed=3, epochs=3)
    return root, result


def test_dag_run_produces_every_output(demo):
    root, result = demo
    for key in ["ingest", "graph", "labels", "wit_images", "shards", "manifest", "predictions", "report"]:
        assert Path(result[key]).exists(), key
    assert result["mlflow_run_id"]


def test_tables_and_labels_of_fixture_files(demo):
    import pyarrow.parquet as pq

    root, result = demo
    truth = json.loads((root / "data" / "sample" / "truth.json").read_text())
    labels = pq.read_table(result["labels"]).to_pandas()
    by_title = {r.file_title: list(r.labels_hier) for r in labels.itertuples()}
    files = truth["files"]
    assert len(files) >= 10
    for f in files:  # a file redirect carries its target's labels
        title = f.get("redirect_to") or f["title"]
        assert by_title.get(title, []) == f["labels_hier_v1.3"], f["title"]
    images = pq.read_table(result["wit_images"]).to_pandas()
    redirected = [f["redirect_to"] for f in files if f.get("redirect_to") and f.get("in_wit", True)]
    assert set(redirected) & set(images["file_title"]), "WIT rows naming a redirect reach the target file"
    depth = pq.read_table(result["graph"]).to_pandas().set_index("title")["depth"]
    assert depth["CommonsRoot"] == 1


def test_shards_are_readable_with_webdataset(demo):
    import webdataset as wds

    _, result = demo
    tars = sorted(Path(result["shards"]).glob("*/shard-*.tar"))
    assert tars
    samples = list(wds.WebDataset([str(t) for t in tars], shardshuffle=False).decode("rgb8"))
    assert samples
    meta = samples[0]["json"]
    assert samples[0]["jpg"].shape == (64, 64, 3)
    assert len(meta["multi_hot"]) == 31 and set(meta) >= {"file_title", "labels", "split"}


def test_mlflow_run_has_test_metrics_and_model(demo):
    import mlflow

    root, result = demo
    client = mlflow.MlflowClient(tracking_uri=result["mlflow_tracking_uri"])
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert "test_macro_auc_pr" in run.data.metrics
    version = client.get_model_version_by_alias("wiki-image-topics", "challenger")
    assert version.run_id == run.info.run_id


def test_predictions_cover_every_image(demo):
    import pyarrow.parquet as pq

    from pipeline.taxonomy import Taxonomy

    _, result = demo
    predictions = pq.read_table(result["predictions"]).to_pandas()
    images = pq.read_table(result["wit_images"]).to_pandas()
    assert len(predictions) == len(images) == predictions["image_key"].nunique()
    assert set(predictions["image_key"]) == set(images["image_key"])
    for s in Taxonomy.load("v1.3").slugs:
        assert f"p_{s}" in predictions.columns
    ok = predictions[predictions["status"] == "ok"]
    assert len(ok) > 0.8 * len(predictions)
    assert ok["p_stem"].between(0, 1).all()
    assert (~predictions["labeled"]).any(), "unlabeled images are predicted too"


def test_every_data_stage_is_tracked_in_mlflow(demo):
    import mlflow

    _, result = demo
    client = mlflow.MlflowClient(tracking_uri=result["mlflow_tracking_uri"])
    experiment = client.get_experiment_by_name("wiki-image-topics")
    runs = client.search_runs([experiment.experiment_id])
    by_stage = {r.data.tags.get("stage"): r for r in runs if r.data.tags.get("stage")}
    assert set(by_stage) >= {"ingest", "graph", "label", "wit", "shard", "infer", "report"}
    assert all(r.info.status == "FINISHED" for r in runs)
    assert by_stage["shard"].data.metrics["ok"] > 0
    assert by_stage["graph"].data.metrics["categories"] == 400
    artifacts = [a.path for a in client.list_artifacts(by_stage["label"].info.run_id, "label")]
    assert "label/stats.json" in artifacts
