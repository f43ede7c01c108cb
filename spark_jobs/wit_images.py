"""Stage ``wit``: WIT TSVs -> one row per English Commons image, labeled and split.

Reads ``<wit_dir>/wit_v1.train.all-*.tsv.gz`` (columns read by name from each
file's header, CSV quoting off because WIT text contains bare quotes), keeps
rows of the configured language whose image is a Commons original of an
allowed MIME type, follows file redirects one hop, groups by file title with
its text context, left-joins the topic labels and assigns a split from a hash
of the title (stable across runs and dumps). Malformed rows go to
``wit/.../rejects`` with their file and line; every filter's removals are
counted in the summary.
"""

from __future__ import annotations

import gzip

import fsspec

from pipeline.config import Settings
from pipeline.errors import StageError
from pipeline.inputs.fetch import wit_file_problem
from pipeline.inputs.wit import WIT_COLUMNS, WIT_GLOB, commons_url_col, image_key_col, split_col, title_from_url_col
from pipeline.lake.atomic import require_input, write_spark
from pipeline.lake.layout import Layout, join
from pipeline.orchestration.spark import get_spark

STAGE = "wit"
CORRUPT = "_corrupt_record"
# Columns the stage uses; the others of WIT_COLUMNS may be absent without harm,
# but the brief's contract is the WIT v1 layout, so all 17 are required.
NEEDED = WIT_COLUMNS
SNIPPET_CHARS = 500


def input_files(settings: Settings) -> list[str]:
    pattern = join(settings.paths.wit_dir, WIT_GLOB)
    fs, _, _ = fsspec.get_fs_token_paths(pattern)
    files = sorted(fs.glob(pattern))
    if not files:
        raise StageError(STAGE, pattern, "no WIT TSV files match (set WIT_DIR)")
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol not in ("file", "local"):
        files = [f if "://" in f else f"{protocol}://{f}" for f in files]
    return files


def read_header(path: str) -> list[str]:
    """The first line of a gzipped TSV (cheap: only the first block is inflated)."""
    try:
        with fsspec.open(path, "rb", compression="gzip") as f:
            line = f.readline()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise StageError(STAGE, path, f"cannot read the header line: {e}") from e
    return line.decode("utf-8", errors="replace").rstrip("\r\n").split("\t")


def _read_group(spark, files: list[str], header: list[str]):
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    schema = T.StructType(
        [T.StructField(c, T.StringType()) for c in header] + [T.StructField(CORRUPT, T.StringType())]
    )
    df = (
        spark.read.schema(schema)
        .option("sep", "\t")
        .option("header", True)
        .option("quote", "")  # WIT text has bare quotes: no quoting at all
        .option("escape", "\u0000")
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT)
        .option("encoding", "UTF-8")
        .csv(files)
    )
    # Row ids before any filter: gzip files are unsplittable, so ids of one file are
    # consecutive and (id - the file's first id + 2) is its line number.
    return df.select(
        *[F.col(c) for c in NEEDED],
        F.col(CORRUPT),
        F.input_file_name().alias("_file"),
        F.monotonically_increasing_id().alias("_id"),
    )


def read_wit(spark, files: list[str]):
    """All TSVs as one DataFrame of the needed columns, grouped by identical header."""
    groups: dict[tuple, list[str]] = {}
    for path in files:
        header = read_header(path)
        missing = [c for c in NEEDED if c not in header]
        if missing:
            raise StageError(STAGE, path, f"header lacks column(s) {missing} (found {header[:20]})")
        dupes = sorted({c for c in header if header.count(c) > 1})
        if dupes:
            raise StageError(STAGE, path, f"header repeats column(s) {dupes}")
        groups.setdefault(tuple(header), []).append(path)
    frames = [_read_group(spark, fs, list(h)) for h, fs in groups.items()]
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out


def classify(df, settings: Settings):
    """Add ``reason``: why a row is dropped (null = kept), filters applied in order."""
    from pyspark.sql import functions as F

    url = F.col("image_url")
    title = title_from_url_col(url)
    reason = (
        F.when(F.col(CORRUPT).isNotNull(), "malformed")
        .when(F.col("language").isNull() | (F.col("language") != settings.wit.language), "language")
        .when(~(url.contains("/wikipedia/commons/") & ~url.contains("/thumb/")), "not_commons")
        .when(~F.col("mime_type").isin(list(settings.wit.mime_types)), "mime_type")
        .when(title.isNull() | (F.trim(title) == ""), "bad_url")
    )
    return df.withColumn("raw_title", title).withColumn("reason", reason)


def run(settings: Settings) -> dict:
    w = settings.wit
    if min(w.split_train, w.split_validation, w.split_threshold) < 0 or (
        w.split_train + w.split_validation + w.split_threshold > 1.0 + 1e-9
    ):
        raise ValueError(f"split fractions must be >= 0 and sum to <= 1: {w}")
    layout = Layout.from_settings(settings)
    files = input_files(settings)
    for path in files:  # an unsplittable gzip cut short would fail deep inside Spark, or not at all
        problem = wit_file_problem(path)
        if problem:
            raise StageError(STAGE, path, f"{problem}: the file is incomplete (an interrupted download?); "
                                          "fetch it again")
    redirects_path = require_input(STAGE, layout.ingest("file_redirects"), "file_redirects (from ingest)")
    labels_path = require_input(STAGE, layout.labels("file_labels"), "file_labels (from label)")

    spark = get_spark(settings, STAGE)
    pruning_key = "spark.sql.csv.parser.columnPruning.enabled"
    old_pruning = spark.conf.get(pruning_key, "true")
    # With pruning on, Spark checks only the selected columns and a row with a wrong
    # column count is not flagged as corrupt.
    spark.conf.set(pruning_key, "false")
    try:
        return _run(spark, settings, layout, files, redirects_path, labels_path)
    finally:
        spark.conf.set(pruning_key, old_pruning)
        try:
            spark.catalog.clearCache()
        except Exception:  # noqa: BLE001 - best effort
            pass


def _run(spark, settings, layout, files, redirects_path, labels_path) -> dict:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    w = settings.wit
    raw = classify(read_wit(spark, files), settings)
    kept_cols = [
        "raw_title", "page_title", "section_title", "caption_reference_description", "caption_attribution_description",
        "caption_alt_text_description", "mime_type", "original_width", "original_height",
    ]
    bad = F.col("reason").isin("malformed", "bad_url")
    slim = raw.select(
        "reason", "_file", "_id",
        *[F.when(F.col("reason").isNull(), F.col(c)).alias(c) for c in kept_cols],
        F.when(bad, F.substring(F.coalesce(F.col(CORRUPT), F.col("image_url")), 1, SNIPPET_CHARS)).alias(
            "snippet"
        ),
    ).persist(StorageLevel.MEMORY_AND_DISK)

    # One pass: per file, its first row id and what each filter removed.
    reasons = ["malformed", "language", "not_commons", "mime_type", "bad_url"]
    per_file = slim.groupBy("_file").agg(
        F.min("_id").alias("first_id"),
        F.count(F.lit(1)).alias("rows"),
        *[F.sum(F.when(F.col("reason") == r, 1).otherwise(0)).alias(r) for r in reasons],
    )
    file_stats = per_file.collect()  # one small row per input file
    totals = {r: int(sum(row[r] for row in file_stats)) for r in reasons + ["rows"]}

    rejects = (
        slim.filter(bad)
        .join(F.broadcast(per_file.select("_file", "first_id")), "_file")
        .select(
            F.col("_file").alias("file"),
            (F.col("_id") - F.col("first_id") + 2).alias("line"),
            F.col("reason"),
            F.col("snippet"),
        )
        .orderBy("file", "line")
    )
    write_spark(rejects, layout.wit_rejects)
    n_rejected = totals["malformed"] + totals["bad_url"]
    if totals["rows"] and n_rejected / totals["rows"] > settings.spark.max_reject_share:
        first = spark.read.parquet(layout.wit_rejects).orderBy("file", "line").first()
        raise StageError(
            STAGE,
            first["file"],
            f"{n_rejected} of {totals['rows']} rows rejected (> max_reject_share "
            f"{settings.spark.max_reject_share}); first at line {first['line']} ({first['reason']}): "
            f"{first['snippet'][:120]!r}; all in {layout.wit_rejects}",
        )

    kept = slim.filter(F.col("reason").isNull()).select(*kept_cols)
    redirects = (
        spark.read.parquet(redirects_path)
        .groupBy("title")
        .agg(F.min("target").alias("target"))  # one hop, one target per title
    )
    resolved = kept.join(redirects, kept["raw_title"] == redirects["title"], "left").select(
        F.coalesce(F.col("target"), F.col("raw_title")).alias("file_title"),
        F.col("target").isNotNull().alias("redirected"),
        *[c for c in kept_cols if c != "raw_title"],
    )

    def text_list(col):
        return F.array_sort(F.collect_set(F.nullif(F.trim(F.col(col)), F.lit(""))))

    images = resolved.groupBy("file_title").agg(
        F.min("mime_type").alias("mime_type"),
        F.max(F.col("original_width").try_cast("double").try_cast("int")).alias("original_width"),
        F.max(F.col("original_height").try_cast("double").try_cast("int")).alias("original_height"),
        text_list("page_title").alias("page_titles"),
        text_list("section_title").alias("section_titles"),
        text_list("caption_reference_description").alias("reference_captions"),
        text_list("caption_attribution_description").alias("attribution_captions"),
        text_list("caption_alt_text_description").alias("alt_captions"),
        F.count(F.lit(1)).cast("int").alias("n_rows"),
    )
    labels = (
        spark.read.parquet(labels_path)
        .groupBy("file_title")
        .agg(F.min_by(F.struct("labels", "labels_hier"), F.col("file_id")).alias("l"))
        .select("file_title", F.col("l.labels").alias("labels"), F.col("l.labels_hier").alias("labels_hier"))
    )
    empty = F.array().cast("array<string>")
    out = (
        images.join(labels, "file_title", "left")
        .select(
            image_key_col(F.col("file_title")).alias("image_key"),
            F.col("file_title"),
            commons_url_col(F.col("file_title")).alias("image_url"),
            F.col("mime_type"),
            F.col("original_width"),
            F.col("original_height"),
            F.col("page_titles"),
            F.col("section_titles"),
            F.col("reference_captions"),
            F.col("attribution_captions"),
            F.col("alt_captions"),
            F.col("n_rows"),
            (F.coalesce(F.size(F.col("labels")), F.lit(0)) > 0).alias("labeled"),
            F.coalesce(F.col("labels"), empty).alias("labels"),
            F.coalesce(F.col("labels_hier"), empty).alias("labels_hier"),
            split_col(F.col("file_title"), w.split_train, w.split_validation, w.split_threshold).alias("split"),
        )
        .orderBy("image_key")
    )
    write_spark(out, layout.wit_images)
    redirected_rows = resolved.filter(F.col("redirected")).count()
    slim.unpersist()

    written = spark.read.parquet(layout.wit_images)
    stats = written.groupBy("split", "labeled").count().collect()
    splits: dict[str, int] = {}
    labeled = 0
    for row in stats:
        splits[row["split"]] = splits.get(row["split"], 0) + row["count"]
        labeled += row["count"] if row["labeled"] else 0
    n_images = sum(splits.values())
    return {
        "stage": STAGE,
        "wit_images": layout.wit_images,
        "rejects": layout.wit_rejects,
        "input_files": len(files),
        "input_rows": totals["rows"],
        "rejected_rows": {"malformed": totals["malformed"], "bad_url": totals["bad_url"]},
        "removed_rows": {"language": totals["language"], "not_commons": totals["not_commons"],
                         "mime_type": totals["mime_type"]},
        "kept_rows": totals["rows"] - sum(totals[r] for r in reasons),
        "redirected_rows": int(redirected_rows),
        "images": n_images,
        "labeled": labeled,
        "unlabeled": n_images - labeled,
        "splits": dict(sorted(splits.items())),
    }
