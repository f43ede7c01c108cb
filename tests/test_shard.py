"""The shard stage end to end against a faulty local mirror: the image store, statuses, cap, resume."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.config import load_settings
from pipeline.inputs.download import source_url
from pipeline.inputs.store import ImageStore, store_root
from pipeline.inputs.wit import commons_url, image_key, split_for
from pipeline.labels.taxonomy import Taxonomy
from pipeline.lake.layout import Layout
from tests.test_download import UA, FaultServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOOD = [f"Good {i}.jpg" for i in range(7)] + ["Drawing.svg"]
# title -> (server faults, expected status); files exist unless said
SPECIAL = {
    "Missing.jpg": (None, "http_404"),
    "Corrupt.jpg": (["ok"], "decode_error"),
    "Flaky.jpg": (["500", "ok"], "ok"),
    "Html.jpg": (["html"], "not_image"),
    "Later.jpg": (["500"], "http_500"),
}


def image_bytes(i: int, fmt="JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (80 + i, 60), (20 * i % 255, 100, 150)).save(buf, fmt)
    return buf.getvalue()


def write_wit_images(layout: Layout, titles: list[str], labels_of=None):
    rows = []
    for i, t in enumerate(titles):
        labeled = i % 3 != 0
        rows.append({
            "image_key": image_key(t), "file_title": t, "image_url": commons_url(t),
            "mime_type": "image/svg+xml" if t.endswith(".svg") else "image/jpeg",
            "original_width": 4000, "original_height": 3000,
            "page_titles": [f"Page {i}"], "section_titles": [], "reference_captions": [f"ref {i}"], "attribution_captions": [],
            "alt_captions": [], "n_rows": 1, "labeled": labeled,
            "labels": (labels_of or {}).get(t, ["Plants"]) if labeled else [],
            "labels_hier": ["STEM", "Nature", "Plants"] if labeled else [],
            "split": split_for(t, 0.7, 0.1, 0.1),
        })
    schema = pa.schema([
        ("image_key", pa.string()), ("file_title", pa.string()), ("image_url", pa.string()),
        ("mime_type", pa.string()), ("original_width", pa.int32()), ("original_height", pa.int32()),
        ("page_titles", pa.list_(pa.string())), ("section_titles", pa.list_(pa.string())),
        ("reference_captions", pa.list_(pa.string())), ("attribution_captions", pa.list_(pa.string())), ("alt_captions", pa.list_(pa.string())),
        ("n_rows", pa.int32()), ("labeled", pa.bool_()), ("labels", pa.list_(pa.string())),
        ("labels_hier", pa.list_(pa.string())), ("split", pa.string()),
    ])
    import shutil

    shutil.rmtree(layout.wit_images, ignore_errors=True)
    os.makedirs(layout.wit_images)
    pq.write_table(pa.Table.from_pylist(rows, schema), f"{layout.wit_images}/part-0.parquet")


def store_files(settings) -> dict[str, bytes]:
    """Every file of the store (relative path -> bytes), lock and settings aside."""
    root = store_root(settings)
    out = {}
    for d in ("shards", "manifest"):
        folder = os.path.join(root, d)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            out[f"{d}/{name}"] = open(os.path.join(folder, name), "rb").read()
    return out


def manifest_rows(settings) -> dict[str, dict]:
    """The store manifest as the stage reads it: newest row per image."""
    rows = {}
    for path in ImageStore(store_root(settings)).manifest_files():
        for r in pq.read_table(path).to_pylist():
            if r["image_key"] not in rows or r["batch"] >= rows[r["image_key"]]["batch"]:
                rows[r["image_key"]] = r
    return rows


def stage_settings(tmp_path, mirror, **over):
    return load_settings({
        "paths.data_root": str(tmp_path / "lake"),
        "paths.state_dir": str(tmp_path / "state"),
        "spark.master": "local[2]",
        "spark.shuffle_partitions": "4",
        "shard.user_agent": UA,
        "shard.mirror_url": mirror.url,
        "shard.shard_size": "2",
        "shard.timeout_s": "5",  # no slow faults here; a loaded CI box must not time out
        "shard.backoff_s": "0.01",
        "shard.max_backoff_s": "0.02",
        "shard.max_retries": "2",
        "shard.per_host_concurrency": "2",
        "shard.download_threads": "4",
        "shard.lock_dir": str(tmp_path / "locks"),
        "shard.progress_every_s": "0.2",
        **over,
    }, environ={})


def serve_titles(mirror, settings, titles, special=SPECIAL):
    path_of = {t: unquote(urlsplit(source_url(t, settings.shard, None, 4000)).path) for t in titles}
    for i, t in enumerate(titles):
        if t in special:
            faults = special[t][0]
            if faults is not None:
                mirror.files[path_of[t]] = b"\xff\xd8garbage" if t == "Corrupt.jpg" else image_bytes(9)
                mirror.faults[path_of[t]] = faults
        else:
            mirror.files[path_of[t]] = image_bytes(i % 50, "PNG" if t.endswith(".svg") else "JPEG")
    return path_of


@pytest.fixture
def mirror():
    s = FaultServer(delay_s=0.02)
    yield s
    s.close()


def test_store_statuses_cap_labels_apart_and_resume(spark, tmp_path, mirror):
    import webdataset as wds

    from spark_jobs import shard_images

    settings = stage_settings(tmp_path, mirror)
    layout = Layout.from_settings(settings)
    titles = GOOD + list(SPECIAL)
    write_wit_images(layout, titles)
    path_of = serve_titles(mirror, settings, titles)
    expected = {t: "ok" for t in GOOD} | {t: s for t, (_, s) in SPECIAL.items()}

    # ---- first run
    summary = shard_images.run(settings)
    assert summary["images"] == len(titles) and summary["downloaded"] == len(titles)
    assert summary["status_counts"] == {s: list(expected.values()).count(s) for s in set(expected.values())}
    assert mirror.max_inflight == 2  # the cap, and the downloader uses all of it
    manifest = manifest_rows(settings)
    assert {r["file_title"]: r["status"] for r in manifest.values()} == expected
    assert all((r["shard"] is not None) == (r["status"] == "ok") for r in manifest.values())
    assert all(r["error"] for r in manifest.values() if r["status"] != "ok")
    # the tars are WebDataset: the bytes as fetched plus the image's own metadata, no labels, no split
    root = store_root(settings)
    tars = sorted(f"{root}/{p}" for p in store_files(settings) if p.startswith("shards/"))
    samples = list(wds.WebDataset(tars, shardshuffle=False))
    assert {x["__key__"] for x in samples} == {image_key(t) for t, s in expected.items() if s == "ok"}
    for x in samples:
        meta = json.loads(x["json"])
        assert set(meta) == {"image_key", "file_title", "width", "height", "bytes", "mime", "ext", "source_url"}
        payload = x.get("jpg") or x.get("png")
        assert payload is not None and Image.open(io.BytesIO(payload)).width == meta["width"]
        row = manifest[x["__key__"]]
        with open(f"{root}/{row['shard']}", "rb") as f:  # the manifest's offset points at the payload
            f.seek(row["offset"])
            assert f.read(row["size"]) == payload
    # the run's index joins labels at read time
    index = {r["file_title"]: r for r in pq.read_table(layout.image_index).to_pylist()}
    assert {t: r["status"] for t, r in index.items()} == expected
    names = Taxonomy.load("v1.3").names
    good1 = index["Good 1.jpg"]
    assert good1["labels"] == ["Plants"] and good1["multi_hot"][names.index("Plants")] == 1
    assert sum(good1["multi_hot_hier"]) == 3 and good1["shard"] == manifest[image_key("Good 1.jpg")]["shard"]

    # ---- a re-run downloads only the transient failure again; shards are never rewritten
    before = store_files(settings)
    hits_before = dict(mirror.hits)
    summary2 = shard_images.run(settings)
    assert summary2["to_download"] == 1
    assert {p for p in mirror.hits if mirror.hits[p] > hits_before.get(p, 0)} == {path_of["Later.jpg"]}
    after = store_files(settings)
    assert all(after[p] == before[p] for p in before)

    # ---- the transient failure recovers: one download, a new shard, the index has it
    mirror.faults[path_of["Later.jpg"]] = ["ok"]
    summary3 = shard_images.run(settings)
    assert summary3["downloaded"] == 1 and summary3["ok"] == summary["ok"] + 1
    assert manifest_rows(settings)[image_key("Later.jpg")]["status"] == "ok"

    # ---- new labels (another dump), the same images: nothing to download, the index follows the labels
    write_wit_images(layout.__class__(**{**layout.__dict__, "dump_date": "20260201"}), titles,
                     labels_of={t: ["Animals"] for t in titles})
    s2 = stage_settings(tmp_path, mirror, **{"paths.dump_date": "20260201"})
    hits_before = dict(mirror.hits)
    summary4 = shard_images.run(s2)
    assert summary4["downloaded"] == 0 and mirror.hits == hits_before
    index2 = {r["file_title"]: r for r in pq.read_table(Layout.from_settings(s2).image_index).to_pylist()}
    assert index2["Good 1.jpg"]["labels"] == ["Animals"]
    assert index2["Good 1.jpg"]["offset"] == good1["offset"]

    # ---- three new images in the next WIT: exactly those are fetched, into a new shard
    new = ["New 1.jpg", "New 2.jpg", "New 3.jpg"]
    write_wit_images(Layout.from_settings(s2), titles + new)
    serve_titles(mirror, s2, new, special={})
    hits_before = dict(mirror.hits)
    summary5 = shard_images.run(s2)
    assert summary5["downloaded"] == 3 and summary5["download"]["shards_added"] == 2
    fetched = {p for p in mirror.hits if mirror.hits[p] > hits_before.get(p, 0)}
    assert fetched == {unquote(urlsplit(source_url(t, s2.shard, None, 4000)).path) for t in new}
    assert all(store_files(s2)[p] == after[p] for p in after)


def test_a_download_cap_spreads_a_backfill_over_runs_and_never_fetches_twice(spark, tmp_path, mirror):
    """shard.max_downloads: each run (as the CLI and the DAG run it) fetches the next images in image_key
    order, is not skipped while images are left, and hands train and infer a new fingerprint each time."""
    from pipeline.lake.atomic import write_json
    from pipeline.orchestration.runner import run_stage

    settings = stage_settings(tmp_path, mirror, **{"shard.max_downloads": "3"})
    layout = Layout.from_settings(settings)
    write_wit_images(layout, GOOD)
    write_json(layout.summary("wit"), {"stage": "wit", "fingerprint": "wit-of-this-test"})  # as if `wit` ran
    path_of = serve_titles(mirror, settings, GOOD)
    order = sorted(GOOD, key=image_key)
    seen, fingerprints = [], set()
    for expect in (3, 3, 2):
        hits_before = dict(mirror.hits)
        summary = run_stage("shard", settings)
        assert not summary["skipped"] and summary["downloaded"] == expect
        assert summary["left_for_later_runs"] == len(GOOD) - len(seen) - expect
        fetched = [t for t in order if mirror.hits.get(path_of[t], 0) > hits_before.get(path_of[t], 0)]
        assert fetched == order[len(seen):len(seen) + expect]  # the next ones in image_key order
        seen += fetched
        index = {r["file_title"]: r["status"] for r in pq.read_table(layout.image_index).to_pylist()}
        assert index == {t: "ok" if t in seen else "missing" for t in GOOD}
        fingerprints.add(summary["fingerprint"])
    assert len(fingerprints) == 3
    assert all(n == 1 for n in mirror.hits.values())
    assert run_stage("shard", settings)["skipped"]  # all fetched: the next night skips it


def test_a_night_on_the_same_dump_retries_transient_failures_and_changes_nothing_downstream_if_they_persist(
        spark, tmp_path, mirror):
    """A transient failure (a 5xx) is retried by the next night on the same dump, not two weeks later with
    the next dump: the stage is not fresh while one is left. A retry that fetched nothing new hands train
    and infer the same fingerprint; with shard.retry_transient off the stage is fresh at once."""
    from pipeline.lake.atomic import write_json
    from pipeline.orchestration.runner import run_stage

    titles = GOOD[:3] + ["Later.jpg", "Missing.jpg"]
    special = {t: SPECIAL[t] for t in ("Later.jpg", "Missing.jpg")}
    for retry, root in (("true", tmp_path / "retry"), ("false", tmp_path / "final")):
        settings = stage_settings(root, mirror, **{"shard.retry_transient": retry})
        layout = Layout.from_settings(settings)
        write_wit_images(layout, titles)
        write_json(layout.summary("wit"), {"stage": "wit", "fingerprint": "wit-of-this-test"})
        path_of = serve_titles(mirror, settings, titles, special)
        mirror.faults[path_of["Later.jpg"]] = ["500"] * 100
        first = run_stage("shard", settings)
        assert first["status_counts"] == {"ok": 3, "http_404": 1, "http_500": 1}
        hits_before = dict(mirror.hits)
        second = run_stage("shard", settings)
        if retry == "false":
            assert first["transient_to_retry"] == 0 and second["skipped"] and mirror.hits == hits_before
            continue
        assert first["transient_to_retry"] == 1
        assert not second["skipped"] and second["downloaded"] == 1
        assert {p for p in mirror.hits if mirror.hits[p] > hits_before.get(p, 0)} == {path_of["Later.jpg"]}
        assert second["fingerprint"] == first["fingerprint"]  # nothing new: train and infer stay fresh
        mirror.faults[path_of["Later.jpg"]] = ["ok"]
        third = run_stage("shard", settings)
        assert third["ok"] == 4 and third["transient_to_retry"] == 0
        assert third["fingerprint"] != first["fingerprint"]
        hits_before = dict(mirror.hits)
        assert run_stage("shard", settings)["skipped"] and mirror.hits == hits_before


def test_a_killed_run_resumes_to_the_same_manifest(spark, tmp_path, mirror):
    """SIGKILL mid-download, resume: the same images and statuses as an uninterrupted run, none twice."""
    from spark_jobs import shard_images

    mirror.delay_s = 0.05
    settings = stage_settings(tmp_path, mirror)
    layout = Layout.from_settings(settings)
    titles = [f"Image {i}.jpg" for i in range(40)] + ["Missing.jpg"]
    write_wit_images(layout, titles)
    serve_titles(mirror, settings, titles, special={"Missing.jpg": (None, "http_404")})
    overrides = {"paths.data_root": settings.paths.data_root, "paths.state_dir": settings.paths.state_dir,
                 "shard.user_agent": UA, "shard.mirror_url": mirror.url, "shard.shard_size": "2",
                 "shard.per_host_concurrency": "2", "shard.lock_dir": settings.shard.lock_dir,
                 "spark.master": "local[1]"}
    args = [f"--set={k}={v}" for k, v in overrides.items()]
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "shard", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    manifest_dir = os.path.join(store_root(settings), "manifest")
    deadline = time.time() + 120
    while time.time() < deadline and len(os.listdir(manifest_dir) if os.path.isdir(manifest_dir) else []) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = manifest_rows(settings)
    assert 0 < len(partial) < len(titles), "killed mid-download"
    # a half-written shard as the kill leaves it, and one whose batch file never got written
    root = store_root(settings)
    with open(f"{root}/shards/shard-999998.tar.__tmp-1234", "wb") as f:
        f.write(b"half a tar")
    with open(f"{root}/shards/shard-999999.tar", "wb") as f:
        f.write(b"no batch file")

    summary = shard_images.run(settings)
    assert summary["recovered"]["orphan_shards"] >= 1 and summary["recovered"]["temp_files"] >= 1
    final = manifest_rows(settings)
    assert {r["file_title"]: r["status"] for r in final.values()} == \
        {t: ("http_404" if t == "Missing.jpg" else "ok") for t in titles}
    assert summary["downloaded"] == len(titles) - len(partial)
    # every stored image is in exactly one shard, and its bytes read back
    seen = {}
    for path in ImageStore(root).manifest_files():
        for r in pq.read_table(path).to_pylist():
            if r["status"] == "ok":
                assert r["image_key"] not in seen, "stored twice"
                seen[r["image_key"]] = r
    assert set(seen) == {k for k, r in final.items() if r["status"] == "ok"}
    assert not [n for n in os.listdir(f"{root}/shards") if n.startswith("shard-99999")]


def test_two_runs_on_one_store_are_refused(spark, tmp_path, mirror):
    from pipeline.errors import StageError
    from spark_jobs import shard_images

    settings = stage_settings(tmp_path, mirror)
    write_wit_images(Layout.from_settings(settings), GOOD[:2])
    serve_titles(mirror, settings, GOOD[:2])
    with ImageStore(store_root(settings)).lock():
        with pytest.raises(StageError, match="another run is writing this image store"):
            shard_images.run(settings)


def test_the_plan_is_written_in_small_row_groups_and_read_back_in_order_one_group_at_a_time(spark, tmp_path):
    """The downloader holds about one row group of the plan at a time, so the plan's row groups are
    capped (PLAN_ROW_GROUP_BYTES), not Spark's 128 MB that grow with the plan."""
    import pyarrow.parquet as pq_

    from spark_jobs import shard_images

    n = 60_000
    todo = spark.range(n).selectExpr(
        "sha2(cast(id as string), 256) as image_key", "concat('File ', id, '.jpg') as file_title",
        "concat('https://upload.wikimedia.org/wikipedia/commons/a/ab/File_', id, '.jpg') as image_url",
        "'image/jpeg' as mime_type", "cast(4000 as int) as original_width").repartition(2)
    path = str(tmp_path / "plan")
    shard_images.write_plan(todo, path)
    groups = [f.metadata.row_group(i) for f in map(pq_.ParquetFile, sorted((tmp_path / "plan").glob("*.parquet")))
              for i in range(f.metadata.num_row_groups)]
    assert len(groups) > 4 and sum(g.num_rows for g in groups) == n
    assert max(g.total_byte_size for g in groups) <= 2 * shard_images.PLAN_ROW_GROUP_BYTES
    keys = [r["image_key"] for r in shard_images.iter_plan(path)]
    assert keys == sorted(keys) and len(keys) == n
    # While the downloader works on its first rows, the reader holds about one row group, not a
    # read-ahead of the whole plan (a pyarrow dataset scanner held all 60,000 rows here, ~12 MB).
    before = pa.total_allocated_bytes()
    rows = shard_images.iter_plan(path)
    next(rows)
    time.sleep(0.5)
    assert pa.total_allocated_bytes() - before <= 3 * shard_images.PLAN_ROW_GROUP_BYTES
    rows.close()
