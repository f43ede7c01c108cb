"""Stage ``shard``: bring the run's WIT images into the image store, then index the run.

1. **Plan (Spark).** The run's WIT images that the store (``pipeline.inputs.store``)
   does not have: never attempted, or last attempt transient (timeout, 429,
   5xx, reset) when ``shard.retry_transient``. A second dump date with the
   same WIT plans nothing.
2. **Download (this process).** One process fetches the plan with one pooled
   HTTP client: at most ``per_host_concurrency`` requests per host and one
   bandwidth bucket, so both caps hold for the whole cluster (and at most
   ``shard.max_downloads`` images a run, in image_key order); the User-Agent,
   Retry-After and every failure status as in ``pipeline.inputs.download``. Each
   image is checked and kept as fetched (``pipeline.features.imaging.store_image``)
   and appended to new store shards; nothing already stored is rewritten.
   Holds the store's lock, so two runs on one store never interleave.
3. **Index (Spark).** The run's images (split, labels, multi-hot) joined with
   the store manifest by ``image_key``: where each image's bytes are, or why
   it has none. Training and inference read that, never labels in tars.
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from pipeline.config import Settings
from pipeline.features.texts import TEXT_COLUMNS
from pipeline.inputs.store import Attempt, ImageStore, image_settings, is_transient, store_root, transient_col
from pipeline.inputs.wit import UPLOAD_BASE, is_commons_url
from pipeline.lake.atomic import filesystem, require_input, write_spark
from pipeline.lake.layout import Layout, join
from pipeline.orchestration.spark import get_spark

log = logging.getLogger(__name__)

STAGE = "shard"
TODO_COLUMNS = ["image_key", "file_title", "image_url", "mime_type", "original_width"]


def _str(v) -> str | None:
    return v if isinstance(v, str) else None


class Progress:
    """Counts, and a stderr line at most every ``every_s`` seconds."""

    def __init__(self, total: int, every_s: float):
        self.total, self.every_s = total, every_s
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

    @property
    def seconds(self) -> float:
        return max(1e-6, time.monotonic() - self.start)

    def print(self, final: bool = False) -> None:
        dt = self.seconds
        counts = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        eta = (self.total - self.done) / (self.done / dt) if self.done else 0
        print(f"[shard] {'done' if final else 'progress'} {self.done}/{self.total} images "
              f"{self.done / dt:.1f} img/s {self.bytes / dt / 1e6:.2f} MB/s ETA {eta:.0f} s {counts}",
              file=sys.stderr, flush=True)


def fetch_one(row: dict, shard_cfg, downloader) -> Attempt:
    """Download one image and check it; never raises for a bad image (its status says why)."""
    from pipeline.features.imaging import ImageError, store_image
    from pipeline.inputs.download import source_url, standard_width

    key, title = row["image_key"], row["file_title"]
    image_url = _str(row.get("image_url"))
    if not image_url or not is_commons_url(image_url):
        return Attempt(key, title, image_url, "not_commons", error=f"not a Commons original: {image_url}")
    try:
        width = int(row.get("original_width"))
    except (TypeError, ValueError):  # null width
        width = None
    url = source_url(title, shard_cfg, _str(row.get("mime_type")), width)
    r = downloader.fetch(url)
    if not r.ok:
        return Attempt(key, title, url, r.status, bytes=r.bytes, attempts=r.attempts,
                       error=f"{url}: {r.error}" if r.error else url)
    try:
        data, ext, w, h = store_image(r.data, standard_width(shard_cfg.thumb_width, shard_cfg.thumbnail_steps),
                                      shard_cfg.min_side, shard_cfg.max_pixels, shard_cfg.jpeg_quality)
    except ImageError as e:
        return Attempt(key, title, url, e.status, bytes=r.bytes, attempts=r.attempts,
                       error=f"{url}: {e.message}"[:500])
    return Attempt(key, title, url, "ok", payload=data, ext=ext, width=w, height=h, bytes=r.bytes,
                   attempts=r.attempts, mime=(r.content_type or "").split(";")[0] or None)


def download(rows, total: int, settings: Settings, store: ImageStore) -> dict:
    """Fetch ``rows`` (dicts of TODO_COLUMNS) into new store shards; returns counts and rates.

    A bounded number of images is in flight (``4 x threads``), so memory does
    not grow with the plan; results are written as they complete.
    """
    from pipeline.inputs.download import Downloader, thread_count

    cfg = settings.shard
    threads = thread_count(cfg)
    progress = Progress(total, cfg.progress_every_s)
    writer = store.writer(cfg.shard_size)
    stored = 0
    try:
        with Downloader(cfg, pool_size=threads) as dl, ThreadPoolExecutor(threads, "download") as pool:
            inflight: set = set()

            def drain(block_until: int) -> None:
                nonlocal inflight, stored
                while len(inflight) > block_until:
                    done, inflight = wait(inflight, return_when=FIRST_COMPLETED)
                    for fut in done:
                        attempt = fut.result()
                        writer.add(attempt)
                        stored += attempt.status == "ok"
                        progress.add(attempt.status, attempt.bytes)

            for row in rows:
                drain(4 * threads - 1)
                inflight.add(pool.submit(fetch_one, row, cfg, dl))
            drain(0)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    if total:
        progress.print(final=True)
    return {"attempted": progress.done, "stored": stored, "bytes_downloaded": progress.bytes,
            "status_counts": dict(sorted(progress.counts.items())), "download_seconds": round(progress.seconds, 2),
            "download_images_per_s": round(progress.done / progress.seconds, 2) if progress.done else 0.0,
            "shards_added": len(writer.committed)}


def current_manifest(spark, store: ImageStore):
    """The store manifest: the newest row per image (None for an empty store)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from pipeline.inputs.store import manifest_schema

    files = store.manifest_files()
    if not files:
        return None
    schema = ", ".join(f"{f.name} {_spark_type(f.type)}" for f in manifest_schema())
    rows = spark.read.schema(schema).parquet(*files)
    newest = Window.partitionBy("image_key").orderBy(F.col("batch").desc(), F.col("fetched_at").desc())
    return rows.withColumn("_n", F.row_number().over(newest)).where("_n = 1").drop("_n")


def _spark_type(t) -> str:
    import pyarrow as pa

    if pa.types.is_timestamp(t):
        return "timestamp"
    return {"string": "string", "int64": "bigint", "int32": "int"}[str(t)]


def plan(images, manifest, retry_transient: bool):
    """The run's images to fetch: absent from the store, or (optionally) last failed transiently."""
    from pyspark.sql import functions as F

    todo = images.select(*TODO_COLUMNS)
    if manifest is None:
        return todo
    keep = manifest.where(~transient_col(F.col("status"))) if retry_transient else manifest
    return todo.join(keep.select("image_key"), "image_key", "left_anti")


def build_index(images, manifest, names: list[str]):
    """The run's image index: its WIT images, their labels as multi-hot, and where their bytes are."""
    from pyspark.sql import functions as F

    def hot(col):
        return F.array(*[F.array_contains(F.col(col), n).cast("float") for n in names])

    located = manifest.select("image_key", "status", "shard", "offset", "size", "error")
    return (
        images.select("image_key", "file_title", "split", "labeled", "labels", "labels_hier", *TEXT_COLUMNS)
        .withColumn("multi_hot", hot("labels"))
        .withColumn("multi_hot_hier", hot("labels_hier"))
        .join(located, "image_key", "left")
        .withColumn("status", F.coalesce("status", F.lit("missing")))
        .select("image_key", "file_title", "split", "labeled", "labels", "labels_hier", "multi_hot",
                "multi_hot_hier", "status", "shard", "offset", "size", "error", *TEXT_COLUMNS)
    )


# The plan's Parquet row groups (bytes): the downloader holds about one at a time, so its memory
# stays flat however many images the plan holds (Spark's default, 128 MB, grows with the plan).
PLAN_ROW_GROUP_BYTES = 1 << 20


def write_plan(todo, path: str) -> None:
    """The images to fetch, in image_key order, in small row groups for ``iter_plan``."""
    todo.orderBy("image_key").write.option("parquet.block.size", PLAN_ROW_GROUP_BYTES).parquet(path)


def iter_plan(path: str, batch_size: int = 2048):
    """The plan's rows in order, reading one row group at a time when the downloader asks for it.

    Synchronous on purpose: a pyarrow dataset scanner reads ahead on its own threads, whatever its
    readahead settings, and the shard driver's memory grew with the plan (scale benchmark: +121 MB at
    10% of Commons against +60 MB at 1%, for the same 2,000 downloads).
    """
    import pyarrow.parquet as pq

    fs = filesystem(path)
    files = sorted(f for f in fs.ls(path, detail=False)
                   if f.endswith(".parquet") and not f.rsplit("/", 1)[-1].startswith(("_", ".")))
    for file in files:  # Spark's part files of an orderBy, in the order of their ranges
        with fs.open(file, "rb") as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=TODO_COLUMNS):
                yield from batch.to_pylist()


def run(settings: Settings) -> dict:
    from pyspark.sql import functions as F

    from pipeline.inputs.download import check_user_agent
    from pipeline.labels.taxonomy import Taxonomy
    from pipeline.lake import atomic

    layout = Layout.from_settings(settings)
    src = require_input(STAGE, layout.wit_images, "wit images (from the wit stage)")
    cfg = settings.shard
    for host in (UPLOAD_BASE, cfg.thumb_host):
        check_user_agent(cfg.user_agent, (cfg.mirror_url or host) + "/")
    if cfg.shard_size < 1:
        raise ValueError("shard.shard_size must be >= 1")
    if cfg.max_downloads < 0:
        raise ValueError("shard.max_downloads must be >= 0 (0: no cap)")
    taxonomy = Taxonomy.load(settings.label.taxonomy)
    store = ImageStore(store_root(settings), image_settings(cfg))
    spark = get_spark(settings, STAGE)
    images = spark.read.parquet(src)
    started = time.monotonic()
    with store.lock():
        recovered = store.recover()
        if any(recovered.values()):
            log.warning("image store %s: removed what a killed run left: %s", store.root, recovered)
        # The plan is scratch: written by Spark, streamed by the downloader, then deleted.
        todo = atomic.temp_sibling(join(layout.root, "_staging", "shard_todo", layout.label_key))
        try:
            write_plan(plan(images, current_manifest(spark, store), cfg.retry_transient), todo)
            n_planned = spark.read.parquet(todo).count()
            n_todo = min(n_planned, cfg.max_downloads) if cfg.max_downloads > 0 else n_planned
            log.info("image store %s: %d of the run's images to fetch, %d this run", store.root, n_planned, n_todo)
            fetched = download(itertools.islice(iter_plan(todo), n_todo), n_todo, settings, store)
        finally:
            if atomic.exists(todo):
                atomic.filesystem(todo).rm(todo, recursive=True)
        manifest = current_manifest(spark, store)
        if manifest is None:  # nothing in the run and nothing stored
            manifest = spark.createDataFrame([], "image_key string, status string, shard string, offset bigint, "
                                                 "size bigint, error string")
        write_spark(build_index(images, manifest, taxonomy.names).orderBy("split", "image_key"), layout.image_index)
    index = spark.read.parquet(layout.image_index)
    statuses = {r["status"]: int(r["count"]) for r in index.groupBy("status").count().collect()}
    store_counts = manifest.agg(F.count("*").alias("images"),
                                F.sum((F.col("status") == "ok").cast("int")).alias("ok")).first()
    return {
        "stage": STAGE,
        "image_store": str(store.root),
        "image_index": layout.image_index,
        "images": sum(statuses.values()),
        "status_counts": dict(sorted(statuses.items())),
        "ok": statuses.get("ok", 0),
        "to_download": n_todo,
        "left_for_later_runs": n_planned - n_todo,
        # A night on the same dump retries these (the stage is not fresh while any are left).
        "transient_to_retry": sum(n for s, n in statuses.items() if is_transient(s)) if cfg.retry_transient else 0,
        "downloaded": fetched["attempted"],
        "download": fetched,
        "store_images": int(store_counts["images"] or 0),
        "store_images_ok": int(store_counts["ok"] or 0),
        "recovered": recovered,
        "seconds": round(time.monotonic() - started, 1),
    }
