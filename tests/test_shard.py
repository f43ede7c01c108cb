"""The shard stage end to end against a faulty local mirror: statuses, cap, resume."""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.config import load_settings
from pipeline.download import source_url
from pipeline.layout import Layout
from pipeline.taxonomy import Taxonomy
from pipeline.wit import commons_url, image_key, split_for
from tests.test_download import UA, FaultServer

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


def write_wit_images(layout: Layout, titles: list[str]):
    rows = []
    for i, t in enumerate(titles):
        labeled = i % 3 != 0
        rows.append({
            "image_key": image_key(t), "file_title": t, "image_url": commons_url(t),
            "mime_type": "image/svg+xml" if t.endswith(".svg") else "image/jpeg",
            "original_width": 4000, "original_height": 3000,
            "page_titles": [f"Page {i}"], "reference_captions": [f"ref {i}"], "attribution_captions": [],
            "alt_captions": [], "n_rows": 1, "labeled": labeled,
            "labels": ["Plants"] if labeled else [], "labels_hier": ["STEM", "Nature", "Plants"] if labeled else [],
            "split": split_for(t, 0.7, 0.1, 0.1),
        })
    schema = pa.schema([
        ("image_key", pa.string()), ("file_title", pa.string()), ("image_url", pa.string()),
        ("mime_type", pa.string()), ("original_width", pa.int32()), ("original_height", pa.int32()),
        ("page_titles", pa.list_(pa.string())), ("reference_captions", pa.list_(pa.string())),
        ("attribution_captions", pa.list_(pa.string())), ("alt_captions", pa.list_(pa.string())),
        ("n_rows", pa.int32()), ("labeled", pa.bool_()), ("labels", pa.list_(pa.string())),
        ("labels_hier", pa.list_(pa.string())), ("split", pa.string()),
    ])
    os.makedirs(layout.wit_images)
    pq.write_table(pa.Table.from_pylist(rows, schema), f"{layout.wit_images}/part-0.parquet")


def read_shards(layout: Layout) -> dict[str, bytes]:
    """relative tar path -> its bytes."""
    out = {}
    for p in sorted(glob.glob(f"{layout.shards}/*/shard-*.tar")):
        out[os.path.relpath(p, layout.shards)] = open(p, "rb").read()
    return out


def samples(tars: dict[str, bytes]) -> dict[str, tuple]:
    out = {}
    for name, data in tars.items():
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = tar.getmembers()
            assert all(m.mtime == 0 for m in members)
            for m in members:
                key, ext = m.name.split(".", 1)
                out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return {k: (v["jpg"], v["json"]) for k, v in out.items()}


@pytest.fixture
def mirror():
    s = FaultServer(delay_s=0.02)
    yield s
    s.close()


def test_shard_stage_statuses_cap_and_resume(spark, tmp_path, mirror):
    from spark_jobs import shard_images

    settings = load_settings({
        "paths.data_root": str(tmp_path / "lake"),
        "paths.state_dir": str(tmp_path / "state"),
        "spark.master": "local[2]",
        "spark.shuffle_partitions": "4",
        "shard.user_agent": UA,
        "shard.mirror_url": mirror.url,
        "shard.image_size": "32",
        "shard.shard_size": "2",
        "shard.timeout_s": "0.5",
        "shard.backoff_s": "0.01",
        "shard.max_backoff_s": "0.02",
        "shard.max_retries": "2",
        "shard.per_host_concurrency": "2",
        "shard.download_threads": "4",
        "shard.lock_dir": str(tmp_path / "locks"),
        "shard.progress_every_s": "0.2",
    }, environ={})
    layout = Layout.from_settings(settings)
    titles = GOOD + list(SPECIAL)
    write_wit_images(layout, titles)
    path_of = {t: unquote(urlsplit(source_url(t, settings.shard, None, 4000)).path) for t in titles}
    for i, t in enumerate(GOOD):
        mirror.files[path_of[t]] = image_bytes(i, "PNG" if t.endswith(".svg") else "JPEG")
    for t, (faults, _) in SPECIAL.items():
        if faults is not None:
            mirror.files[path_of[t]] = b"\xff\xd8garbage" if t == "Corrupt.jpg" else image_bytes(9)
            mirror.faults[path_of[t]] = faults
    expected = {t: "ok" for t in GOOD} | {t: s for t, (_, s) in SPECIAL.items()}

    # ---- first run
    summary = shard_images.run(settings)
    assert summary["images"] == len(titles) and summary["downloaded"] == len(titles)
    assert summary["status_counts"] == {s: list(expected.values()).count(s) for s in set(expected.values())}
    assert mirror.max_inflight <= 2
    # the cap came from the driver's permits: one per request attempt
    assert summary["permits"]["per_host_cap"] == "cluster-wide (driver permits)"
    assert summary["permits"]["permits_granted"] >= summary["downloaded"] and summary["permits"]["permits_expired"] == 0
    manifest = {r["file_title"]: r.asDict() for r in spark.read.parquet(layout.shard_manifest).collect()}
    assert {t: r["status"] for t, r in manifest.items()} == expected
    tars1 = read_shards(layout)
    got = samples(tars1)
    assert set(got) == {image_key(t) for t in titles if expected[t] == "ok"}
    for t, r in manifest.items():
        assert (r["shard"] is not None) == (r["status"] == "ok")
        if r["status"] == "ok":
            assert r["shard"] in tars1 and r["shard"].startswith(r["split"] + "/")
            img = Image.open(io.BytesIO(got[image_key(t)][0]))
            assert img.size == (32, 32) and img.mode == "RGB"
        else:
            assert r["error"]
    doc = json.loads(got[image_key("Good 1.jpg")][1])
    names = Taxonomy.load("v1.3").names
    assert doc["labels"] == ["Plants"] and len(doc["multi_hot"]) == len(names)
    assert doc["multi_hot"][names.index("Plants")] == 1 and sum(doc["multi_hot_hier"]) == 3
    assert doc["taxonomy"] == "v1.3" and doc["page_titles"] == ["Page 1"]

    # ---- interrupt: lose one finished tar, one manifest part, leave a half-written temp file
    ok_rows = sorted((r for r in manifest.values() if r["status"] == "ok"), key=lambda r: r["shard"])
    lost_tar = ok_rows[0]["shard"]
    lost_part = next(r["shard"] for r in ok_rows if r["shard"] != lost_tar)
    os.remove(f"{layout.shards}/{lost_tar}")
    split, name = lost_part.split("/")
    os.remove(f"{layout.shards}/_manifest_parts/{split}/{name.replace('.tar', '.parquet')}")
    temp = f"{layout.shards}/{lost_tar}.__tmp-deadbeef0000"
    with open(temp, "wb") as f:
        f.write(b"half a tar")
    hits_before = dict(mirror.hits)
    redo_all = {t for t in titles if _shard_of(spark, layout, t) in (lost_tar, lost_part)}

    summary2 = shard_images.run(settings)
    assert not os.path.exists(temp)
    tars2 = read_shards(layout)
    assert tars2 == tars1  # byte-identical shards: no duplicates, no losses
    assert {t: r["status"] for t, r in
            ((r["file_title"], r) for r in spark.read.parquet(layout.shard_manifest).collect())} == expected
    # downloads: only the two rebuilt shards, plus a retry of the transient failure
    refetched = {t for t in titles if mirror.hits.get(path_of[t], 0) > hits_before.get(path_of[t], 0)}
    assert refetched == redo_all | {"Later.jpg"}
    assert summary2["downloaded"] == len(refetched)

    # ---- the transient failure recovers: one download, its shard gains the sample
    mirror.faults[path_of["Later.jpg"]] = ["ok"]
    hits_before = dict(mirror.hits)
    summary3 = shard_images.run(settings)
    assert summary3["downloaded"] == 1 and summary3["status_counts"]["ok"] == summary["status_counts"]["ok"] + 1
    assert {p for p in mirror.hits if mirror.hits[p] > hits_before.get(p, 0)} == {path_of["Later.jpg"]}
    got3 = samples(read_shards(layout))
    assert set(got3) == set(got) | {image_key("Later.jpg")}
    assert all(got3[k] == got[k] for k in got)
    assert mirror.max_inflight <= 2


def _shard_of(spark, layout, title):
    """The shard a title is assigned to (also for failed images, whose manifest shard is null)."""
    rows = spark.read.parquet(layout.wit_images).select("image_key", "split").collect()
    key = image_key(title)
    split = next(r["split"] for r in rows if r["image_key"] == key)
    keys = sorted(r["image_key"] for r in rows if r["split"] == split)
    return f"{split}/shard-{keys.index(key) // 2:06d}.tar"
