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
    result = run_demo(overrides=overrides, images=400, categories=400, seed=3, epochs=1)
    return root, result


def test_dag_run_produces_every_output(demo):
    root, result = demo
    for key in ["ingest", "graph", "labels", "wit_images", "image_store", "image_index", "predictions", "report"]:
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


def test_store_is_webdataset_without_labels_and_the_index_has_them(demo):
    import pyarrow.parquet as pq
    import webdataset as wds

    _, result = demo
    tars = sorted(Path(result["image_store"]).glob("shards/shard-*.tar"))
    assert tars
    samples = list(wds.WebDataset([str(t) for t in tars], shardshuffle=False).decode("rgb8"))
    statuses = pq.read_table(result["image_index"], columns=["status"]).column("status").to_pylist()
    assert len(samples) == statuses.count("ok") and result["images_downloaded"] == len(statuses)
    image = samples[0].get("jpg", samples[0].get("png"))
    assert image.shape[1] <= 120  # the fetched thumbnail, not resized for the model
    meta = samples[0]["json"]
    assert "labels" not in meta and "split" not in meta and meta["image_key"] == samples[0]["__key__"]
    index = pq.read_table(result["image_index"]).to_pandas()
    assert len(index["multi_hot"].iloc[0]) == 31 and {"labels", "split", "shard", "offset"} <= set(index.columns)


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
    assert set(by_stage) >= {"fetch", "ingest", "graph", "label", "wit", "shard", "infer", "report"}
    assert all(r.info.status == "FINISHED" for r in runs)
    assert by_stage["shard"].data.metrics["ok"] > 0
    assert by_stage["graph"].data.metrics["categories"] == 400
    artifacts = [a.path for a in client.list_artifacts(by_stage["label"].info.run_id, "label")]
    assert "label/stats.json" in artifacts


def test_dag_fetched_the_newest_complete_dump_from_the_local_publishers(demo):
    root, result = demo
    # the demo's dumps server also shows a newer run still in progress: the logical date (today)
    # maps to the newest *complete* dump, whose 5 tables and 2 WIT files were downloaded
    assert result["dump_date"] == "20260101"
    assert result["fetched_files"] == 7
    assert result["dumps_server_file_requests"] == 7
    fetched = sorted(p.name for p in (root / "data" / "dumps").glob("*.sql.gz"))
    assert fetched == [f"commonswiki-20260101-{t}.sql.gz"
                       for t in sorted(["page", "categorylinks", "linktarget", "page_props", "redirect"])]
    assert not list((root / "data").glob("20260115"))


def test_a_later_night_on_the_same_dump_skips_every_stage(demo):
    """A second logical date resolving to the dump already processed with the same settings does nothing."""
    import sqlite3

    from pipeline.demo import run_demo

    root, first = demo
    overrides = {"paths.data_root": str(root / "data"), "paths.state_dir": str(root / "state"),
                 "label.heuristics": "depth"}
    again = run_demo(overrides=overrides, images=400, categories=400, seed=3, epochs=1, logical_date="2030-01-02")
    assert again["dumps_server_file_requests"] == 0
    assert again["mlflow_run_id"] == first["mlflow_run_id"]  # nothing was trained
    db = sqlite3.connect(root / "state" / "airflow" / "airflow.db")
    (run_id,) = db.execute("SELECT run_id FROM dag_run WHERE dag_id='wiki_topics' "
                           "AND logical_date LIKE '2030-01-02%'").fetchone()
    states = dict(db.execute("SELECT task_id, state FROM task_instance WHERE dag_id='wiki_topics' AND run_id=?",
                             (run_id,)).fetchall())
    assert states.pop("resolve_dump") == "success"
    assert set(states.values()) == {"skipped"} and "train" in states and "fetch" in states


def test_a_new_dump_of_the_same_sample_downloads_no_image(demo):
    """Night 2: a new dump date, the same WIT: the whole DAG runs, and not one image is fetched again."""
    import pyarrow.parquet as pq

    from pipeline.demo import run_demo

    root, first = demo
    overrides = {"paths.data_root": str(root / "data"), "paths.state_dir": str(root / "state"),
                 "label.heuristics": "depth"}
    night2 = run_demo(overrides=overrides, images=400, categories=400, seed=3, epochs=1,
                      logical_date="2026-03-02", extra_dump_dates=("20260301",))
    assert night2["dump_date"] == "20260301"
    assert night2["image_server_requests"] == 0 and night2["images_downloaded"] == 0
    assert night2["dumps_server_file_requests"] == 5  # the new dump's tables; WIT is verified, not fetched
    assert night2["mlflow_run_id"] != first["mlflow_run_id"]  # it trained, on the same store
    assert night2["image_store"] == first["image_store"]
    predictions = pq.read_table(night2["predictions"]).to_pandas()
    assert predictions["p_stem"].notna().sum() > 0.8 * len(predictions)
