"""Stage ``ingest``: Commons SQL dumps -> categories, category_edges, file_links,
file_redirects, rejects (schemas in docs/architecture.md).

A ``.sql.gz`` is one gzip stream, so it cannot be split by compressed offset. The
driver decodes each dump once on all its cores (rapidgzip) to find line-aligned
chunk boundaries and leave a seek index under ``layout.ingest_staging`` (shared
storage on a cluster); each Spark task then decodes its own range of the dump
through that index, parses it with ``pipeline.labels.sqldump`` and writes one Parquet
file with pyarrow (columnar, no per-row Python -> JVM serialization). Nothing is
copied, except for a damaged gzip, which ``sqldump.split_dump`` reads serially.
DataFrame joins then build the output tables.

Three categorylinks layouts are supported, chosen by the columns the dump's
CREATE TABLE declares: legacy (``cl_to`` = parent title), transitional (``cl_to``
and ``cl_target_id``: ``cl_to`` wins, disagreements are counted) and current
(``cl_target_id`` only, resolved through ``linktarget`` rows of namespace 14).
"""

from __future__ import annotations

import logging

from pipeline.config import Settings
from pipeline.errors import StageError
from pipeline.lake import atomic
from pipeline.lake.layout import Layout, join

STAGE = "ingest"
log = logging.getLogger(__name__)

REQUIRED = ("page", "categorylinks", "page_props")
REJECT_SCHEMA = "table string, file string, byte_offset long, reason string, snippet string"
OUTPUT_SCHEMAS = {
    "categories": "page_id long, title string, hidden boolean, is_redirect boolean",
    "category_edges": "child_id long, child string, parent string",
    "file_links": "file_id long, file_title string, category string",
    "file_redirects": "title string, target string",
}
# Rows the stage needs from each table (filtered while parsing, so Spark only
# sees namespaces 6/14, subcat/file links, hiddencat props).
KEEP = {
    "page": {"page_namespace": [6, 14]},
    "categorylinks": {"cl_type": ["subcat", "file"]},
    "linktarget": {"lt_namespace": [14]},
    "page_props": {"pp_propname": ["hiddencat"]},
    "redirect": {"rd_namespace": [6]},
}


def wanted_columns(table: str, schema) -> list[str]:
    """Columns to parse, by name; optional ones only where the dump has them."""
    if table == "page":
        return ["page_id", "page_namespace", "page_title", "page_is_redirect"]
    if table == "categorylinks":
        cols = ["cl_from", "cl_type"]
        present = [c for c in ("cl_to", "cl_target_id") if c in schema.columns]
        return cols + (present or ["cl_to"])  # neither: require() names cl_to as missing
    if table == "linktarget":
        return ["lt_id", "lt_namespace", "lt_title"]
    if table == "page_props":
        return ["pp_page", "pp_propname"]
    if table == "redirect":
        return ["rd_from", "rd_namespace", "rd_title"] + (["rd_interwiki"] if "rd_interwiki" in schema.columns else [])
    raise ValueError(table)


def _arrow_type(kind: str):
    import pyarrow as pa

    return {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}[kind]


def _arrow_schema(schema, wanted):
    import pyarrow as pa

    return pa.schema([(c, _arrow_type(schema.kind(c))) for c in wanted])


def _reject_arrow_schema():
    import pyarrow as pa

    return pa.schema([("table", pa.string()), ("file", pa.string()), ("byte_offset", pa.int64()),
                      ("reason", pa.string()), ("snippet", pa.string())])


def parse_task(task: dict) -> dict:
    """Executor side: parse one chunk file into one Parquet file (+ one of rejects)."""
    import fsspec
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline.labels import sqldump

    schema = sqldump.Schema(task["schema_table"], tuple(task["columns"]), tuple(task["types"]))
    chunk = sqldump.Chunk(**task["chunk"])
    wanted = task["wanted"]
    aschema = _arrow_schema(schema, wanted)
    stats = {"table": chunk.table, "rows": 0, "kept": 0, "rejected_rows": 0, "reject_records": 0, "undecodable": 0}
    rejects = []
    with fsspec.open(task["out"], "wb") as f, pq.ParquetWriter(f, aschema, compression="zstd") as writer:
        for res in sqldump.parse_chunk(chunk, schema, wanted, stage=STAGE):
            tbl = pa.table({c: pa.array(res.columns[c], type=aschema.field(c).type) for c in wanted}, schema=aschema)
            for col, values in (task["keep"] or {}).items():
                mask = pc.fill_null(pc.is_in(tbl[col], value_set=pa.array(values, type=aschema.field(col).type)), False)
                tbl = tbl.filter(mask)
            if tbl.num_rows:
                writer.write_table(tbl)
            stats["rows"] += res.rows
            stats["kept"] += tbl.num_rows
            stats["rejected_rows"] += res.rejected_rows
            stats["undecodable"] += res.undecodable
            rejects.extend(r.as_dict() for r in res.rejects)
    stats["reject_records"] = len(rejects)
    if rejects:
        with fsspec.open(task["rejects_out"], "wb") as f:
            pq.write_table(pa.Table.from_pylist(rejects, schema=_reject_arrow_schema()), f)
    stats["first_reject"] = rejects[0] if rejects else None
    return stats


def _write_sorted(df, path: str, keys: list[str], partitions: int) -> str:
    """Deterministic output: hash-partition on keys, sort each partition on all columns."""
    return atomic.write_spark(df.repartition(partitions, *keys).sortWithinPartitions(*df.columns), path)


def _split_all(layout: Layout, settings: Settings, tables: list[str]):
    from pipeline.labels import sqldump

    staging = layout.ingest_staging
    splits = {}
    for table in tables:
        path = layout.dump(table)
        splits[table] = sqldump.split_dump(
            path, join(staging, "chunks", table), settings.spark.dump_chunk_bytes, table=table, stage=STAGE,
            threads=settings.spark.dump_decode_threads)
        log.info("ingest: %s -> %d chunks (%s), %d bytes", path, len(splits[table].chunks), splits[table].how,
                 splits[table].total_bytes)
        if splits[table].truncated:
            size = atomic.filesystem(path).size(path)
            where = (f"at compressed byte {size} (after {splits[table].total_bytes} bytes of SQL); "
                     "the rest of the file was not read")
            if splits[table].cut_at is not None:
                where = f"({splits[table].total_bytes - splits[table].cut_at} bytes of SQL in that statement)"
            if not settings.ingest.allow_truncated:
                raise StageError(STAGE, path, f"{splits[table].truncated} {where}: the file is incomplete "
                                              "(an interrupted download?). Fetch it again, or set "
                                              "ingest.allow_truncated=true to keep what was read")
            splits[table].truncated = f"{splits[table].truncated} {where}"
    return splits


def _parse_all(spark, layout: Layout, splits: dict) -> dict:
    """Parse every chunk in Spark tasks; return per-table stats and Parquet dirs."""
    import fsspec
    import pyarrow.parquet as pq

    staging = layout.ingest_staging
    fs = atomic.filesystem(staging)
    tasks = []
    for table, split in splits.items():
        wanted = wanted_columns(table, split.schema)
        split.schema.require(wanted, layout.dump(table), STAGE)
        out_dir = join(staging, "parsed", table)
        fs.makedirs(out_dir, exist_ok=True)
        fs.makedirs(join(staging, "rejects"), exist_ok=True)
        # An empty file with the schema, so an empty table still reads with its columns.
        with fsspec.open(join(out_dir, "part-empty.parquet"), "wb") as f:
            pq.write_table(_arrow_schema(split.schema, wanted).empty_table(), f)
        for i, chunk in enumerate(split.chunks):
            tasks.append({
                "schema_table": split.schema.table, "columns": list(split.schema.columns),
                "types": list(split.schema.types), "wanted": wanted, "keep": KEEP.get(table),
                "chunk": chunk.__dict__, "out": join(out_dir, f"part-{i:05d}.parquet"),
                "rejects_out": join(staging, "rejects", f"{table}-{i:05d}.parquet"),
            })
    # Largest chunks first so the last straggler is small.
    tasks.sort(key=lambda t: -t["chunk"]["size"])
    results = []
    if tasks:
        results = spark.sparkContext.parallelize(tasks, len(tasks)).map(parse_task).collect()
    stats = {}
    for table, split in splits.items():
        st = {"file": layout.dump(table), "chunks": len(split.chunks), "bytes": split.total_bytes,
              "rows": 0, "kept": 0, "rejected_rows": len(split.rejects), "reject_records": len(split.rejects),
              "undecodable": 0, "truncated": split.truncated, "columns": wanted_columns(table, split.schema),
              "chunks_read": split.how,
              "first_reject": split.rejects[0].as_dict() if split.rejects else None}
        for r in (r for r in results if r["table"] == split.schema.table):
            for k in ("rows", "kept", "rejected_rows", "reject_records", "undecodable"):
                st[k] += r[k]
            st["first_reject"] = st["first_reject"] or r["first_reject"]
        stats[table] = st
    return stats


def _rejects_df(spark, layout: Layout, splits: dict, extra=None):
    """Parse rejects (task files) + driver rejects (truncation) + join rejects."""
    fs = atomic.filesystem(layout.ingest_staging)
    rej_dir = join(layout.ingest_staging, "rejects")
    parts = []
    if fs.exists(rej_dir) and fs.ls(rej_dir):
        parts.append(spark.read.schema(REJECT_SCHEMA).parquet(rej_dir))
    driver_rows = [r.as_dict() for s in splits.values() for r in s.rejects]
    parts.append(spark.createDataFrame(driver_rows, REJECT_SCHEMA))
    if extra is not None:
        parts.append(extra)
    df = parts[0]
    for p in parts[1:]:
        df = df.unionByName(p)
    return df


def run(settings: Settings) -> dict:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from pipeline.labels import sqldump
    from pipeline.lake.atomic import require_input
    from pipeline.orchestration.spark import get_spark

    layout = Layout.from_settings(settings)
    for table in REQUIRED:
        require_input(STAGE, layout.dump(table), f"{table} dump")
    cl_schema = sqldump.read_schema(layout.dump("categorylinks"), "categorylinks", STAGE)
    has_to, has_target = "cl_to" in cl_schema.columns, "cl_target_id" in cl_schema.columns
    if not (has_to or has_target):
        raise StageError(STAGE, layout.dump("categorylinks"),
                         "categorylinks has neither `cl_to` nor `cl_target_id`; cannot find parent categories")
    cl_layout = "transitional" if has_to and has_target else "legacy" if has_to else "current"
    tables = list(REQUIRED)
    if cl_layout == "current":
        require_input(STAGE, layout.dump("linktarget"), "linktarget dump (categorylinks uses cl_target_id)")
        tables.append("linktarget")
    elif cl_layout == "transitional" and atomic.exists(layout.dump("linktarget")):
        tables.append("linktarget")
    has_redirect = atomic.exists(layout.dump("redirect"))
    if has_redirect:
        tables.append("redirect")

    spark = get_spark(settings, "ingest")
    staging = layout.ingest_staging
    fs = atomic.filesystem(staging)
    if fs.exists(staging):
        fs.rm(staging, recursive=True)
    notes = []
    cached = []
    try:
        splits = _split_all(layout, settings, tables)
        stats = _parse_all(spark, layout, splits)
        parsed = {t: spark.read.parquet(join(staging, "parsed", t)) for t in tables}
        parts = settings.spark.shuffle_partitions
        title = lambda c: F.translate(F.col(c), "_", " ")  # noqa: E731

        pages = parsed["page"].select(
            F.col("page_id"), F.col("page_namespace").alias("ns"), F.col("page_title"),
            (F.coalesce(F.col("page_is_redirect"), F.lit(0)) != 0).alias("is_redirect"),
        )
        hidden = parsed["page_props"].select(F.col("pp_page").alias("page_id")).distinct().withColumn("hidden", F.lit(True))
        categories = (
            pages.filter("ns = 14").join(hidden, "page_id", "left")
            .select("page_id", title("page_title").alias("title"),
                    F.coalesce("hidden", F.lit(False)).alias("hidden"), "is_redirect")
        )

        cl = parsed["categorylinks"]
        cl_path = layout.dump("categorylinks")
        mismatch = None
        if "linktarget" in parsed and has_target:
            lt = parsed["linktarget"].select(F.col("lt_id").alias("cl_target_id"), F.col("lt_title"))
            cl = cl.join(lt, "cl_target_id", "left")
            if has_to:
                to = F.when(F.col("cl_to") != "", F.col("cl_to"))
                mismatch_col = (to.isNotNull() & F.col("lt_title").isNotNull() & (to != F.col("lt_title")))
                cl = cl.withColumn("_mismatch", mismatch_col)
                parent = F.coalesce(to, F.col("lt_title"))
            else:
                parent = F.col("lt_title")
        else:
            parent = F.when(F.col("cl_to") != "", F.col("cl_to"))
        links = cl.withColumn("parent_raw", parent).persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(links)

        unresolved = links.filter(F.col("parent_raw").isNull()).select(
            F.lit("categorylinks").alias("table"), F.lit(cl_path).alias("file"),
            F.lit(None).cast("long").alias("byte_offset"),
            F.concat(
                F.lit("no parent title: "),
                F.when(F.col("cl_target_id").isNotNull() if has_target else F.lit(False),
                       F.concat(F.lit("cl_target_id "), F.col("cl_target_id").cast("string") if has_target else F.lit(""),
                                F.lit(" has no linktarget row in namespace 14")))
                .otherwise(F.lit("empty cl_to")),
            ).alias("reason"),
            F.concat(F.lit("cl_from="), F.col("cl_from").cast("string"), F.lit(" cl_type="), F.col("cl_type")).alias("snippet"),
        )
        type_counts = {r["cl_type"]: (r["n"], r["unresolved"], r["mismatch"]) for r in links.groupBy("cl_type").agg(
            F.count(F.lit(1)).alias("n"),
            F.sum(F.col("parent_raw").isNull().cast("long")).alias("unresolved"),
            (F.sum(F.col("_mismatch").cast("long")) if "_mismatch" in links.columns else F.lit(0)).alias("mismatch"),
        ).collect()}
        n_unresolved = sum(v[1] or 0 for v in type_counts.values())
        if "_mismatch" in links.columns:
            mismatch = sum(v[2] or 0 for v in type_counts.values())
        stats["categorylinks"]["rejected_rows"] += n_unresolved
        stats["categorylinks"]["reject_records"] += n_unresolved

        # Rejects first: kept for inspection even when the share check fails.
        rejects_path = _write_sorted(_rejects_df(spark, layout, splits, unresolved), layout.ingest("rejects"),
                                     ["table", "file"], 1)
        worst = None
        for table, st in stats.items():
            total = st["rows"] + st["rejected_rows"]
            st["reject_share"] = (st["rejected_rows"] / total) if total else 0.0
            if st["reject_share"] > settings.spark.max_reject_share and (worst is None or st["reject_share"] > worst[1]["reject_share"]):
                worst = (table, st)
        if worst is not None:
            table, st = worst
            first = st["first_reject"] or {}
            raise StageError(
                STAGE, st["file"],
                f"{st['rejected_rows']} of {st['rows'] + st['rejected_rows']} rows of `{table}` rejected "
                f"(share {st['reject_share']:.6f} > spark.max_reject_share={settings.spark.max_reject_share}); "
                f"first at byte {first.get('byte_offset')}: {first.get('reason')}; all rejects in {rejects_path}",
            )

        ok_links = links.filter(F.col("parent_raw").isNotNull())
        cat_pages = pages.filter("ns = 14").select(F.col("page_id").alias("cl_from"), F.col("page_title").alias("child_raw"))
        file_pages = pages.filter("ns = 6").select(F.col("page_id").alias("cl_from"), F.col("page_title").alias("file_raw"))
        edges = (ok_links.filter("cl_type = 'subcat'").join(cat_pages, "cl_from")
                 .select(F.col("cl_from").alias("child_id"), title("child_raw").alias("child"), title("parent_raw").alias("parent")))
        file_links = (ok_links.filter("cl_type = 'file'").join(file_pages, "cl_from")
                      .select(F.col("cl_from").alias("file_id"), title("file_raw").alias("file_title"),
                              title("parent_raw").alias("category")))
        if has_redirect:
            rd = parsed["redirect"]
            if "rd_interwiki" in rd.columns:
                rd = rd.filter(F.coalesce(F.col("rd_interwiki"), F.lit("")) == "")
            redirects = (rd.join(file_pages.withColumnRenamed("cl_from", "rd_from"), "rd_from")
                         .select(title("file_raw").alias("title"), title("rd_title").alias("target")))
        else:
            redirects = spark.createDataFrame([], OUTPUT_SCHEMAS["file_redirects"])
            notes.append(f"no redirect dump at {layout.dump('redirect')}: file_redirects written empty")

        outputs = {
            "categories": _write_sorted(categories, layout.ingest("categories"), ["page_id"], parts),
            "category_edges": _write_sorted(edges, layout.ingest("category_edges"), ["child_id"], parts),
            "file_links": _write_sorted(file_links, layout.ingest("file_links"), ["file_id"], parts),
            "file_redirects": _write_sorted(redirects, layout.ingest("file_redirects"), ["title"], parts),
            "rejects": rejects_path,
        }
        rows = {name: spark.read.parquet(path).count() for name, path in outputs.items()}
        rows["hidden_categories"] = spark.read.parquet(outputs["categories"]).filter("hidden").count()
        subcat_total = (type_counts.get("subcat", (0, 0, 0))[0] or 0) - (type_counts.get("subcat", (0, 0, 0))[1] or 0)
        file_total = (type_counts.get("file", (0, 0, 0))[0] or 0) - (type_counts.get("file", (0, 0, 0))[1] or 0)
        dropped = {
            "subcat_links_without_category_page": subcat_total - rows["category_edges"],
            "file_links_without_file_page": file_total - rows["file_links"],
        }
        for k, v in dropped.items():
            if v:
                notes.append(f"{v} {k.replace('_', ' ')} (not in the output; page dump and categorylinks disagree)")
        for table, st in stats.items():
            if st["truncated"]:
                notes.append(f"{st['file']}: {st['truncated']}")
            if st["undecodable"]:
                notes.append(f"{st['file']}: {st['undecodable']} values were not valid UTF-8 (kept with U+FFFD)")
        summary = {
            "stage": STAGE,
            "dump_date": layout.dump_date,
            "categorylinks_layout": cl_layout,
            "outputs": outputs,
            "rows": rows,
            "dropped": dropped,
            "parsed": {t: {k: v for k, v in st.items() if k not in ("first_reject", "columns")} for t, st in stats.items()},
            "rejected_rows": sum(st["rejected_rows"] for st in stats.values()),
            "redirect_dump": has_redirect,
            "notes": notes,
        }
        if mismatch is not None:
            summary["cl_to_linktarget_mismatch"] = mismatch
        return summary
    finally:
        for df in cached:
            df.unpersist()
        if fs.exists(staging):
            fs.rm(staging, recursive=True)
        parent = staging.rsplit("/", 1)[0]
        if fs.exists(parent) and not fs.ls(parent):  # leave no empty _staging behind
            fs.rmdir(parent)
