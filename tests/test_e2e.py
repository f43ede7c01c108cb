"""The whole Airflow DAG on a tiny sample, three nights as the nightly loop runs them, asserting on the
real outputs it leaves: night 1 on the first dump, night 2 on a second dump of the same wiki (files
recategorized, new images), night 3 on that dump again."""

import json
from pathlib import Path

import pytest

# Three nights of the whole DAG in one fixture: longer than the suite's per-test timeout.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2700)]


EPOCHS = 1


def _overrides(root: Path) -> dict[str, str]:
    # The sample's truth.json holds the labels of the plain depth rule; headJ is tested on its own.
    return {"paths.data_root": str(root / "data"), "paths.state_dir": str(root / "state"),
            "label.heuristics": "depth"}


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    from devtools.demo import run_demo

    root = tmp_path_factory.mktemp("e2e")
    result = run_demo(overrides=_overrides(root), images=250, categories=300, seed=3, epochs=EPOCHS, runs=3)
    return root, result["night_outputs"] + [result], result["nights"]


@pytest.fixture(scope="module")
def demo(nights):
    root, outputs, _ = nights
    return root, outputs[0]


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


def test_store_is_webdataset_without_labels_and_the_index_has_them(nights):
    import pyarrow.parquet as pq
    import webdataset as wds

    _, outputs, _ = nights
    result, latest = outputs[0], outputs[1]  # night 2's index covers every image the store holds
    tars = sorted(Path(result["image_store"]).glob("shards/shard-*.tar"))
    assert tars
    samples = list(wds.WebDataset([str(t) for t in tars], shardshuffle=False).decode("rgb8"))
    statuses = pq.read_table(latest["image_index"], columns=["status"]).column("status").to_pylist()
    assert len(samples) == statuses.count("ok")
    first = pq.read_table(result["image_index"], columns=["status"]).column("status").to_pylist()
    assert result["images_downloaded"] == len(first)
    image = samples[0].get("jpg", samples[0].get("png"))
    assert image.shape[1] <= 120  # the fetched thumbnail, not resized for the model
    meta = samples[0]["json"]
    assert "labels" not in meta and "split" not in meta and meta["image_key"] == samples[0]["__key__"]
    index = pq.read_table(result["image_index"]).to_pandas()
    assert len(index["multi_hot"].iloc[0]) == 31 and {"labels", "split", "shard", "offset"} <= set(index.columns)


def test_no_category_of_a_file_reaches_the_models_text_input(demo):
    """The model reads the image index's texts (``pipeline.features.texts``): the WIT captions, article and
    section titles and the file name, never the category links the labels come from. On the sample no
    generated file's text names one of its categories; the hand-written fixture files may, in their
    own name and articles, as real ones do ("Kasteel van Gaasbeek 2019.jpg" in Kasteel van Gaasbeek)."""
    import pyarrow.parquet as pq

    from devtools.sample.generator import FIXTURE_FILES
    from pipeline.features import texts

    root, result = demo
    fixtures = {t for t, *_ in FIXTURE_FILES}
    links = pq.read_table(str(Path(result["ingest"]) / "file_links"), columns=["file_title", "category"])
    categories = {}
    for r in links.to_pylist():  # every category link of every file in the dump, as ingested
        if r["file_title"] not in fixtures:
            categories.setdefault(r["file_title"], []).append(r["category"])
    index = pq.read_table(result["image_index"]).to_pylist()
    checked = 0
    for row in index:
        if row["file_title"] not in categories:
            continue
        words = "\n".join(texts.row_texts(row, texts.FIELDS)).lower()
        for cat in categories[row["file_title"]]:
            assert cat.lower() not in words, (row["file_title"], cat, words)
        checked += bool(categories[row["file_title"]])
    assert checked > 50
    with_words = sum(any(texts.row_texts(r, texts.FIELDS)[1:]) for r in index)
    assert 0 < with_words <= len(index)


def test_mlflow_run_has_test_metrics_and_model(demo):
    import mlflow

    root, result = demo
    client = mlflow.MlflowClient(tracking_uri=result["mlflow_tracking_uri"])
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert "test_macro_auc_pr" in run.data.metrics
    version = client.get_model_version("wiki-image-topics-v1.3", "1")  # night 1 registered the first version
    assert version.run_id == run.info.run_id


def test_predictions_cover_every_image(demo):
    import pyarrow.parquet as pq

    from pipeline.labels.taxonomy import Taxonomy

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
    assert by_stage["graph"].data.metrics["categories"] == 300
    artifacts = [a.path for a in client.list_artifacts(by_stage["label"].info.run_id, "label")]
    assert "label/stats.json" in artifacts


def test_dag_fetched_the_newest_complete_dump_from_the_local_publishers(demo):
    root, result = demo
    # the demo's dumps server also shows a newer run still in progress: the logical date
    # maps to the newest *complete* dump, whose 5 tables and 2 WIT files were downloaded
    assert result["dump_date"] == "20260101"
    assert result["fetched_files"] == 7
    assert result["dumps_server_file_requests"] == 7
    fetched = sorted(p.name for p in (root / "data" / "dumps").glob("commonswiki-20260101-*.sql.gz"))
    assert fetched == [f"commonswiki-20260101-{t}.sql.gz"
                       for t in sorted(["page", "categorylinks", "linktarget", "page_props", "redirect"])]
    assert not list((root / "data").glob("20260115"))


def test_night_2_downloads_exactly_the_new_images_and_relabels_the_recategorized_files(nights):
    import pyarrow.parquet as pq

    root, outputs, table = nights
    first, second = outputs[0], outputs[1]
    revision = json.loads((root / "data" / "sample-next" / "truth.json").read_text())["revision"]
    added, moved = set(revision["added_files"]), set(revision["recategorized_files"])
    assert added and moved
    assert second["dump_date"] == "20260301" and table[1]["dump_date"] == "20260301"
    # the new images, and not one image fetched again
    assert second["image_server_requests"] == len(added) == second["images_downloaded"]
    assert table[1]["images_downloaded"] == len(added)
    assert second["dumps_server_file_requests"] == 6  # the new dump's 5 tables and the new WIT file
    assert second["image_store"] == first["image_store"]

    def labels(result):
        frame = pq.read_table(result["labels"], columns=["file_title", "labels_hier"]).to_pandas()
        return {r.file_title: tuple(r.labels_hier) for r in frame.itertuples()}

    before, after = labels(first), labels(second)
    assert added <= set(after) and not added & set(before)
    changed = {t for t in before if before[t] != after.get(t)}
    assert changed and changed <= moved, changed - moved  # only the recategorized files changed labels
    assert set(table[1]["stages_run"]) == {"fetch", "ingest", "graph", "label", "wit", "shard", "embed", "train",
                                           "infer", "report"}


def test_night_2_embeds_the_stored_images_once_and_trains_heads_on_them(nights):
    """Night 1 fine-tunes (no backbone yet); night 2 embeds every stored image with the champion's tower,
    trains only the heads on the features, and infers from them without decoding an image."""
    root, outputs, table = nights
    first, second = outputs[0]["summaries"], outputs[1]["summaries"]
    assert first["embed"]["images_embedded"] == 0 and first["embed"]["backbone"] is None
    assert table[0]["train_mode"] == "finetune" and table[1]["train_mode"] == "heads"
    # every image of the run with bytes, night 1's included: they had no features yet
    assert second["embed"]["images_embedded"] == table[1]["images_embedded"] >= second["shard"]["ok"] > 0
    assert second["embed"]["backbone"]["version"] == "1"
    assert second["train"]["backbone"]["fingerprint"] == second["embed"]["backbone"]["fingerprint"]
    assert second["infer"]["image_source"] == "features", second["infer"]
    assert second["infer"]["rows_from_features"] > 0


def test_night_2_compares_the_champion_on_the_challengers_test_split(nights):
    import mlflow
    import pyarrow.parquet as pq

    root, outputs, table = nights
    first, second = outputs[0]["summaries"]["train"], outputs[1]["summaries"]["train"]
    assert second["test_fingerprint"] != first["test_fingerprint"]  # a new dump: a new split
    assert second["champion_before"] == "1" and second["champion_auc_pr"] is not None
    client = mlflow.MlflowClient(tracking_uri=outputs[1]["mlflow_tracking_uri"])
    run = client.get_run(second["run_id"])
    assert run.data.tags["champion_compared"] == "1"
    assert run.data.tags["test_fingerprint"] == second["test_fingerprint"]  # one split for both figures
    assert run.data.metrics["champion_test_macro_auc_pr"] == pytest.approx(second["champion_auc_pr"])
    version = client.get_model_version("wiki-image-topics-v1.3", second["model_version"])
    assert version.tags["promotion"] == second["promotion_reason"] and second["test_fingerprint"] in \
        second["promotion_reason"]
    assert table[1]["promoted"] == second["promoted"] and table[1]["champion_auc_pr"] == second["champion_auc_pr"]
    # inference used the version the gate left as champion
    champion = second["champion_version"]
    assert champion == (second["model_version"] if second["promoted"] else "1")
    predictions = pq.read_table(outputs[1]["predictions"], columns=["model_version", "model_uri"]).to_pandas()
    assert set(predictions["model_version"]) == {champion}
    assert set(predictions["model_uri"]) == {f"models:/wiki-image-topics-v1.3/{champion}"}


def test_night_3_on_the_same_dump_skips_every_stage(nights):
    """A later logical date resolving to the dump already processed with the same inputs does nothing."""
    import sqlite3

    root, outputs, table = nights
    third = outputs[2]
    assert table[2]["dump_date"] == "20260301" and table[2]["stages_run"] == []
    assert table[2]["images_downloaded"] == 0 and table[2]["challenger_auc_pr"] is None
    assert third["dumps_server_file_requests"] == 0 and third["image_server_requests"] == 0
    assert third["mlflow_run_id"] == outputs[1]["mlflow_run_id"]  # nothing was trained
    db = sqlite3.connect(root / "state" / "airflow" / "airflow.db")
    (run_id,) = db.execute("SELECT run_id FROM dag_run WHERE dag_id='wiki_topics' "
                           "AND logical_date LIKE '2026-03-03%'").fetchone()
    states = dict(db.execute("SELECT task_id, state FROM task_instance WHERE dag_id='wiki_topics' AND run_id=?",
                             (run_id,)).fetchall())
    assert states.pop("resolve_dump") == "success"
    assert set(states.values()) == {"skipped"} and "train" in states and "ingest" in states


def test_a_changed_training_setting_reruns_train_and_leaves_the_stages_before_it(nights):
    """What a night would do after night 3 with one training setting changed, read off the records the
    DAG left: every stage before ``train`` is up to date, ``train`` is not because of its settings, and
    what comes after it names train's output (``report`` its fingerprint, ``infer`` the model)."""
    from devtools.demo import SECOND_DUMP_DATE, training_env
    from pipeline.config import load_settings
    from pipeline.lake.layout import Layout
    from pipeline.orchestration import lineage

    root, outputs, _ = nights
    base = {**_overrides(root), "paths.dump_date": SECOND_DUMP_DATE}
    env = training_env(epochs=EPOCHS, environ={})  # the settings the fixture's nights trained with
    before = ("ingest", "graph", "label", "wit", "shard")
    same = load_settings(base, environ=env)
    assert all(lineage.fresh(same, stage)[0] is not None for stage in (*before, "train"))
    changed = load_settings({**base, "train.epochs": "2"}, environ=env)
    for stage in before:
        record, why = lineage.fresh(changed, stage)
        assert record is not None, (stage, why)
    record, why = lineage.fresh(changed, "train")
    assert record is None and "settings" in why
    train = outputs[1]["summaries"]["train"]
    assert lineage.inputs(changed, "report")["upstream"]["train"] == train["fingerprint"]
    infer = lineage.recorded(Layout.from_settings(changed), "infer")
    assert infer["inputs"]["model_uri"] == f"models:/wiki-image-topics-v1.3/{train['champion_version']}"


def test_each_stage_published_the_exact_uri_of_its_output(nights):
    import sqlite3

    root, outputs, _ = nights
    db = sqlite3.connect(root / "state" / "airflow" / "airflow.db")
    uris = {u for (u,) in db.execute("SELECT a.uri FROM asset_event e JOIN asset a ON a.id = e.asset_id")}
    for result in outputs[:2]:
        assert Path(result["predictions"]).resolve().as_uri() in uris
        assert Path(result["labels"]).resolve().as_uri() in uris
    assert "models:/wiki-image-topics-v1.3/1" in uris


def test_the_report_has_every_study_section_and_the_second_says_what_changed(nights):
    from pipeline.study.report import SECTIONS

    root, outputs, table = nights
    first = outputs[0]["summaries"]["report"]
    second = outputs[1]["summaries"]["report"]
    assert first["sections"] == list(SECTIONS) and first["previous_dump"] is None
    assert second["previous_dump"] == "20260101"
    assert "First run" in first["summary_lines"][2] and "Since dump 20260101" in second["summary_lines"][2]
    page = Path(second["report"]).read_text()
    for name in SECTIONS:
        assert f'<section id="{name}">' in page, name
    assert "{'" not in page  # no raw dicts


def test_the_report_renders_in_a_real_browser(nights):
    """Headless Chromium: every section there, every figure and thumbnail decoded, no console error."""
    import shutil

    from pipeline.study.report import SECTIONS

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (`make test` installs it where apt is available)")
    from playwright.sync_api import sync_playwright

    root, outputs, _ = nights
    report = Path(outputs[1]["summaries"]["report"]["report"])
    artifacts = Path(__file__).resolve().parent.parent / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            errors = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(report.as_uri(), wait_until="load")
            assert page.eval_on_selector_all("section", "els => els.map(e => e.id)") == list(SECTIONS)
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.className, e.complete, e.naturalWidth, e.naturalHeight])")
            figures = [i for i in images if i[0] == "fig"]
            thumbnails = [i for i in images if i[0] != "fig"]
            assert len(figures) == len(outputs[1]["summaries"]["report"]["figures"]) == 5
            assert len(thumbnails) >= 10
            assert all(done and w > 0 and h > 0 for _, done, w, h in images), images
            assert not errors, errors
            changes = page.inner_text("#changes")
            assert "Compared with dump 20260101" in changes and "the new model against the champion" in changes
            page.screenshot(path=str(artifacts / "report-night2.png"), full_page=True)
        finally:
            browser.close()
    assert (artifacts / "report-night2.png").stat().st_size > 10_000
