"""Stage ``shard``: download, resize and pack WIT images into WebDataset shards.

Each image goes to a fixed shard: per split, images ordered by ``image_key``,
shard = row index // shard_size, so the assignment depends only on the table.
One Spark task builds one shard: it downloads politely (pipeline.download),
resizes (pipeline.imaging) and writes ``<split>/shard-NNNNNN.tar`` plus a
manifest part (Parquet), each under a temporary name renamed when complete.

Resumable: a shard whose tar and manifest part exist and match the current
rows and image settings is kept as is; a changed one reuses the JPEGs already
in its tar (nothing ``ok`` is downloaded twice); an incomplete one (no part)
is rebuilt. Failed images stay in the manifest with their status; transient
failures (timeout, 429, 5xx, resets) are retried by the next run when
``shard.retry_transient``. The final manifest is the union of the parts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import sys
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import fsspec

from pipeline.atomic import commit, filesystem, temp_sibling, write_spark
from pipeline.config import Settings
from pipeline.errors import require_input
from pipeline.layout import Layout, join
from pipeline.spark import get_spark
from pipeline.wit import UPLOAD_BASE, is_commons_url

log = logging.getLogger(__name__)

STAGE = "shard"
MANIFEST_COLUMNS = ["image_key", "file_title", "split", "shard", "status", "bytes", "error"]
MANIFEST_SCHEMA = (
    "image_key string, file_title string, split string, shard string, status string, bytes long, error string"
)
TASK_SCHEMA = MANIFEST_SCHEMA + ", downloaded boolean"
FINGERPRINT_KEY = b"wiki_image_topics.shard"


def shard_file(n: int) -> str:
    return f"shard-{n:06d}.tar"


def part_path(layout: Layout, split: str, n: int) -> str:
    return join(layout.shards, "_manifest_parts", split, f"shard-{n:06d}.parquet")


def is_transient(status: str) -> bool:
    return status in ("timeout", "connection_error", "request_error", "http_429") or (
        status.startswith("http_5")
    )


def image_fingerprint(settings: Settings) -> dict:
    """What the JPEG bytes depend on: when it changes, nothing in an old shard is reused."""
    s = settings.shard
    return {"image_size": s.image_size, "jpeg_quality": s.jpeg_quality, "thumb_width": s.thumb_width,
            "originals": bool(s.originals), "min_side": s.min_side, "max_pixels": s.max_pixels}


# ---------------------------------------------------------------- per-shard work (executors)
def _str(v) -> str | None:
    return v if isinstance(v, str) else None  # pandas gives NaN / NA for null strings


def _as_list(v) -> list:
    return [] if v is None else [str(x) for x in list(v)]


def sample_json(row: dict, names: list[str], version: str) -> bytes:
    labels, hier = _as_list(row["labels"]), _as_list(row["labels_hier"])
    doc = {
        "image_key": row["image_key"],
        "file_title": row["file_title"],
        "split": row["split"],
        "labeled": bool(row["labeled"]),
        "labels": labels,
        "labels_hier": hier,
        "multi_hot": [1 if n in set(labels) else 0 for n in names],
        "multi_hot_hier": [1 if n in set(hier) else 0 for n in names],
        "taxonomy": version,
        "page_titles": _as_list(row["page_titles"]),
        "reference_captions": _as_list(row["reference_captions"]),
        "attribution_captions": _as_list(row["attribution_captions"]),
        "alt_captions": _as_list(row["alt_captions"]),
    }
    return json.dumps(doc, ensure_ascii=False, sort_keys=True).encode("utf-8")


def _read_part(path: str):
    """(rows by key, fingerprint dict) of a manifest part, or (None, None) when absent/unreadable."""
    import pyarrow.parquet as pq

    fs = filesystem(path)
    if not fs.exists(path):
        return None, None
    try:
        with fsspec.open(path, "rb") as f:
            table = pq.read_table(f)
        meta = json.loads((table.schema.metadata or {}).get(FINGERPRINT_KEY, b"{}"))
    except Exception:  # noqa: BLE001 - a damaged part means an incomplete shard
        return None, None
    return {r["image_key"]: r for r in table.to_pylist()}, meta


def _read_tar_jpgs(path: str) -> dict[str, bytes]:
    out = {}
    try:
        with fsspec.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".jpg"):
                    out[member.name[: -len(".jpg")]] = tar.extractfile(member).read()
    except (OSError, tarfile.TarError, EOFError):
        return {}
    return out


def _remove_stale_temps(final: str) -> None:
    fs = filesystem(final)
    for p in fs.glob(f"{final}.__tmp-*"):
        fs.rm(p, recursive=True)


class Progress:
    """Counts and a periodic stderr line per shard task."""

    def __init__(self, name: str, total: int, every_s: float):
        self.name, self.total, self.every_s = name, total, every_s
        self.start = self.last = time.monotonic()
        self.done = self.bytes = 0
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()

    def add(self, status: str, nbytes: int) -> None:
        with self.lock:
            self.done += 1
            self.bytes += nbytes
            self.counts[status] = self.counts.get(status, 0) + 1
            now = time.monotonic()
            if now - self.last >= self.every_s:
                self.last = now
                self.print()

    def print(self, final: bool = False) -> None:
        dt = max(1e-6, time.monotonic() - self.start)
        counts = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        print(
            f"[shard {self.name}] {'done' if final else 'progress'} {self.done}/{self.total} images "
            f"{self.done / dt:.1f} img/s {self.bytes / dt / 1e6:.2f} MB/s {counts}",
            file=sys.stderr,
            flush=True,
        )


def _fetch_and_resize(row: dict, settings: Settings, downloader) -> tuple[str, int, str | None, bytes | None]:
    from pipeline.download import source_url
    from pipeline.imaging import ImageError, resize_to_jpeg

    s = settings.shard
    image_url = _str(row.get("image_url"))
    if not image_url or not is_commons_url(image_url):
        return "not_commons", 0, f"not a Commons original: {image_url}", None
    try:
        width = int(row.get("original_width"))
    except (TypeError, ValueError):  # null (NaN / NA) width
        width = None
    url = source_url(row["file_title"], s, _str(row.get("mime_type")), width)
    r = downloader.fetch(url)
    if not r.ok:
        return r.status, r.bytes, f"{url}: {r.error}" if r.error else url, None
    try:
        jpg = resize_to_jpeg(r.data, s.image_size, s.jpeg_quality, s.min_side, s.max_pixels)
    except ImageError as e:
        return e.status, r.bytes, f"{url}: {e.message}"[:500], None
    return "ok", r.bytes, None, jpg


def build_shard(rows: list[dict], split: str, n: int, settings: Settings, names: list[str], version: str):
    """Make ``<split>/shard-n.tar`` and its manifest part complete; return manifest rows (+ downloaded)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from webdataset import TarWriter

    from pipeline.download import Downloader

    layout = Layout.from_settings(settings)
    rel = f"{split}/{shard_file(n)}"
    tar_path = join(layout.shard_dir(split), shard_file(n))
    ppath = part_path(layout, split, n)
    rows = sorted(rows, key=lambda r: r["image_key"])
    docs = {r["image_key"]: sample_json(r, names, version) for r in rows}
    fp_image = image_fingerprint(settings)
    fp = {
        "image": fp_image,
        "content": hashlib.sha1(b"\n".join(k.encode() + b"\t" + docs[k] for k in sorted(docs))).hexdigest(),
    }
    fs = filesystem(tar_path)
    old_rows, old_fp = (None, None)
    if fs.exists(tar_path):
        old_rows, old_fp = _read_part(ppath)
    retry = settings.shard.retry_transient
    if old_rows is not None and old_fp == fp and set(old_rows) == set(docs) and not (
        retry and any(is_transient(r["status"]) for r in old_rows.values())
    ):
        return [{**{c: old_rows[k][c] for c in MANIFEST_COLUMNS}, "downloaded": False} for k in sorted(docs)]

    # Reuse what the old complete shard already has when the images would be the same.
    reuse_ok: dict[str, bytes] = {}
    reuse_failed: dict[str, dict] = {}
    if old_rows is not None and (old_fp or {}).get("image") == fp_image:
        jpgs = _read_tar_jpgs(tar_path)
        for k, r in old_rows.items():
            if k not in docs:
                continue
            if r["status"] == "ok" and k in jpgs:
                reuse_ok[k] = jpgs[k]
            elif r["status"] != "ok" and not (retry and is_transient(r["status"])):
                reuse_failed[k] = r

    todo = [r for r in rows if r["image_key"] not in reuse_ok and r["image_key"] not in reuse_failed]
    progress = Progress(rel, len(todo), settings.shard.progress_every_s)
    results: dict[str, tuple] = {}
    if todo:
        with Downloader(settings.shard) as dl, ThreadPoolExecutor(max(1, settings.shard.download_threads)) as pool:
            futures = {r["image_key"]: pool.submit(_fetch_and_resize, r, settings, dl) for r in todo}
            for k, fut in futures.items():
                results[k] = fut.result()
                progress.add(results[k][0], results[k][1])
        progress.print(final=True)

    manifest = []
    for k, rb in reuse_ok.items():
        results[k] = ("ok", int(old_rows[k]["bytes"] or 0), None, rb)
    for k, r in reuse_failed.items():
        results[k] = (r["status"], int(r["bytes"] or 0), r["error"], None)
    downloaded = {r["image_key"] for r in todo}

    for p in (tar_path, ppath):
        _remove_stale_temps(p)
    fs.makedirs(layout.shard_dir(split), exist_ok=True)
    tmp = temp_sibling(tar_path)
    with fsspec.open(tmp, "wb") as f:
        writer = TarWriter(f, encoder=False, mtime=0.0, user="wiki", group="wiki")
        for r in rows:
            k = r["image_key"]
            status, nbytes, error, jpg = results[k]
            if status == "ok":
                writer.write({"__key__": k, "jpg": jpg, "json": docs[k]})
            manifest.append({
                "image_key": k, "file_title": r["file_title"], "split": split,
                "shard": rel if status == "ok" else None, "status": status,
                "bytes": int(nbytes), "error": error, "downloaded": k in downloaded,
            })
        writer.close()
    commit(tmp, tar_path)

    schema = pa.schema(
        [("image_key", pa.string()), ("file_title", pa.string()), ("split", pa.string()), ("shard", pa.string()),
         ("status", pa.string()), ("bytes", pa.int64()), ("error", pa.string())],
        metadata={FINGERPRINT_KEY: json.dumps(fp, sort_keys=True).encode()},
    )
    table = pa.Table.from_pylist([{c: m[c] for c in MANIFEST_COLUMNS} for m in manifest], schema=schema)
    filesystem(ppath).makedirs(ppath.rsplit("/", 1)[0], exist_ok=True)
    ptmp = temp_sibling(ppath)
    with fsspec.open(ptmp, "wb") as f:
        pq.write_table(table, f)
    commit(ptmp, ppath)
    return manifest


def _shard_group(pdf, settings: Settings, names: list[str], version: str):
    import pandas as pd

    rows = pdf.drop(columns=["shard"]).to_dict("records")
    split, n = str(pdf["split"].iloc[0]), int(pdf["shard"].iloc[0])
    out = build_shard(rows, split, n, settings, names, version)
    return pd.DataFrame(out, columns=MANIFEST_COLUMNS + ["downloaded"]).astype({"bytes": "int64"})


# ---------------------------------------------------------------- driver
def _cleanup(layout: Layout, n_per_split: dict[str, int]) -> int:
    """Delete shards, parts and temp files no current shard owns (an older, larger table)."""
    removed = 0
    for base, suffix in ((layout.shards, ".tar"), (join(layout.shards, "_manifest_parts"), ".parquet")):
        fs = filesystem(base)
        if not fs.exists(base):
            continue
        for d in fs.ls(base, detail=False):
            split = d.rstrip("/").rsplit("/", 1)[-1]
            if split in ("manifest", "_manifest_parts") or not fs.isdir(d):
                continue
            for p in fs.ls(d, detail=False):
                name = p.rsplit("/", 1)[-1]
                if not name.startswith("shard-"):
                    continue
                stale = ".__tmp-" in name or ".__old-" in name
                if not stale and name.endswith(suffix):
                    try:
                        num = int(name[len("shard-"): -len(suffix)])
                    except ValueError:
                        continue
                    stale = num >= n_per_split.get(split, 0)
                if stale:
                    fs.rm(p, recursive=True)
                    removed += 1
    return removed


@contextlib.contextmanager
def _permits(spark, settings: Settings, info: dict):
    """Settings for the shard tasks: with ``cluster_permits``, a permit server in this driver caps hosts cluster-wide.

    ``info`` receives how the cap was held and, after the block, the permits granted and expired.
    """
    cfg = settings.shard
    if not cfg.cluster_permits or cfg.permit_url:
        info["per_host_cap"] = "given permit server" if cfg.permit_url else "per machine (lock files)"
        yield settings
        return
    from pipeline.permits import PermitServer

    bind = "127.0.0.1" if spark.sparkContext.master.startswith("local") else spark.conf.get("spark.driver.host")
    with PermitServer(cfg.per_host_concurrency, cfg.permit_lease_s, bind=bind) as server:
        log.info("per-host permits for all shard tasks at %s (cap %d)", server.url, server.cap)
        yield dataclasses.replace(settings, shard=dataclasses.replace(cfg, permit_url=server.url))
    info.update(per_host_cap="cluster-wide (driver permits)", permits_granted=server.granted,
                permits_expired=server.expired)
    if server.expired:
        log.warning("%d permits expired unreleased", server.expired)


def run(settings: Settings) -> dict:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from pipeline.download import check_user_agent
    from pipeline.taxonomy import Taxonomy

    layout = Layout.from_settings(settings)
    src = require_input(STAGE, layout.wit_images, "wit images (from the wit stage)")
    check_user_agent(settings.shard.user_agent, (settings.shard.mirror_url or UPLOAD_BASE) + "/")
    if settings.shard.shard_size < 1:
        raise ValueError("shard.shard_size must be >= 1")
    taxonomy = Taxonomy.load(settings.label.taxonomy)
    spark = get_spark(settings, STAGE)
    started = time.monotonic()

    images = spark.read.parquet(src)
    order = Window.partitionBy("split").orderBy("image_key")
    keys = images.select("image_key", "split").withColumn(
        "shard", F.floor((F.row_number().over(order) - 1) / settings.shard.shard_size).cast("int")
    )
    per_split = {r["split"]: (int(r["n"]), int(r["images"])) for r in
                 keys.groupBy("split").agg((F.max("shard") + 1).alias("n"), F.count("*").alias("images")).collect()}
    n_shards = sum(n for n, _ in per_split.values())
    summary = {"stage": STAGE, "shards_root": layout.shards, "manifest": layout.shard_manifest,
               "images": sum(i for _, i in per_split.values()), "shards": n_shards,
               "shards_per_split": {k: v[0] for k, v in sorted(per_split.items())}}
    if n_shards == 0:
        write_spark(spark.createDataFrame([], MANIFEST_SCHEMA), layout.shard_manifest)
        return {**summary, "status_counts": {}, "downloaded": 0}

    cols = ["image_key", "file_title", "image_url", "mime_type", "original_width", "split", "labeled",
            "labels", "labels_hier", "page_titles", "reference_captions", "attribution_captions", "alt_captions"]
    assigned = images.select(*cols).join(keys, ["image_key", "split"])
    names, version = taxonomy.names, taxonomy.version

    permits: dict = {}
    with _permits(spark, settings, permits) as task_settings:
        def task(pdf):
            return _shard_group(pdf, task_settings, names, version)

        result = (
            assigned.repartition(n_shards, "split", "shard")
            .groupBy("split", "shard")
            .applyInPandas(task, TASK_SCHEMA)
        )
        # One action runs every shard task exactly once; its output is tiny.
        stats = result.groupBy("status", "downloaded").count().collect()
    status_counts: dict[str, int] = {}
    for r in stats:
        status_counts[r["status"]] = status_counts.get(r["status"], 0) + r["count"]

    parts = [part_path(layout, split, i) for split, (n, _) in sorted(per_split.items()) for i in range(n)]
    manifest = spark.read.schema(MANIFEST_SCHEMA).parquet(*parts).select(*MANIFEST_COLUMNS).orderBy(
        "split", "image_key"
    )
    write_spark(manifest, layout.shard_manifest)
    removed = _cleanup(layout, {k: v[0] for k, v in per_split.items()})
    return {
        **summary,
        "status_counts": dict(sorted(status_counts.items())),
        "ok": status_counts.get("ok", 0),
        "downloaded": int(sum(r["count"] for r in stats if r["downloaded"])),
        "stale_files_removed": removed,
        "permits": permits,
        "seconds": round(time.monotonic() - started, 1),
    }
