"""Benchmark the ingest and graph stages on a generated Commons-sized dump.

Writes synthetic mysqldump files (current layout: categorylinks.cl_target_id ->
linktarget) with a fast writer, then runs ``ingest`` and ``graph`` and prints
parse throughput (rows/s per core, pure parser and whole stage), wall times and
peak memory. Full size (default) is 1M categories, 3M category edges, 5M file
links; ``--scale 0.05`` runs 1/20 of that.

    .venv/bin/python benchmarks/ingest_benchmark.py --scale 0.05 --workdir /tmp/ingest_bench
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from measure import stop_spark  # noqa: E402 (benchmarks/, the script's own folder)

DATE = "20990101"
PER_LINE = 2000


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace("'", "\\'")


class DumpWriter:
    """mysqldump-shaped .sql.gz: header, CREATE TABLE, INSERT lines of PER_LINE tuples."""

    def __init__(self, path: Path, table: str, columns: list[tuple[str, str]]):
        self.f = gzip.open(path, "wb", compresslevel=1)
        self.table, self.buf, self.rows = table, [], 0
        cols = ",\n".join(f"  `{c}` {t} NOT NULL" for c, t in columns)
        self.f.write((f"-- MySQL dump 10.19 (synthetic benchmark)\n/*!40101 SET NAMES utf8mb4 */;\n"
                      f"DROP TABLE IF EXISTS `{table}`;\nCREATE TABLE `{table}` (\n{cols},\n"
                      f"  PRIMARY KEY (`{columns[0][0]}`)\n) ENGINE=InnoDB DEFAULT CHARSET=binary;\n"
                      f"/*!40000 ALTER TABLE `{table}` DISABLE KEYS */;\n").encode())

    def add(self, tuple_sql: str) -> None:
        self.buf.append(tuple_sql)
        if len(self.buf) >= PER_LINE:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.f.write(f"INSERT INTO `{self.table}` VALUES {','.join(self.buf)};\n".encode())
            self.rows += len(self.buf)
            self.buf = []

    def close(self) -> int:
        self.flush()
        self.f.write(f"/*!40000 ALTER TABLE `{self.table}` ENABLE KEYS */;\n-- Dump completed\n".encode())
        self.f.close()
        return self.rows


def generate(dumps: Path, n_cats: int, n_edges: int, n_links: int, seed: int = 0) -> dict:
    rnd = random.Random(seed)
    dumps.mkdir(parents=True, exist_ok=True)
    name = lambda t: dumps / f"commonswiki-{DATE}-{t}.sql.gz"  # noqa: E731
    n_files = max(1, n_links // 3)
    cat_title = lambda i: "CommonsRoot" if i == 0 else f"Category_{i}_of_things"  # noqa: E731
    file_base = 10_000_000

    page = DumpWriter(name("page"), "page", [
        ("page_id", "int(10) unsigned"), ("page_namespace", "int(11)"), ("page_title", "varbinary(255)"),
        ("page_is_redirect", "tinyint(3) unsigned"), ("page_is_new", "tinyint(3) unsigned"),
        ("page_random", "double unsigned"), ("page_touched", "binary(14)"), ("page_links_updated", "binary(14)"),
        ("page_latest", "int(10) unsigned"), ("page_len", "int(10) unsigned"),
        ("page_content_model", "varbinary(32)"), ("page_lang", "varbinary(35)")])
    for i in range(n_cats):
        page.add(f"({i + 1},14,'{_esc(cat_title(i))}',0,0,{rnd.random():.12f},'20990101000000','20990101000000',{i},68,'wikitext',NULL)")
    for j in range(n_files):
        page.add(f"({file_base + j},6,'Photo_{j}_d\\'Orsay.jpg',0,0,{rnd.random():.12f},'20990101000000','20990101000000',{j},500,'wikitext',NULL)")
    counts = {"page": page.close()}

    lt = DumpWriter(name("linktarget"), "linktarget", [
        ("lt_id", "bigint(20) unsigned"), ("lt_namespace", "int(11)"), ("lt_title", "varbinary(255)")])
    for i in range(n_cats):
        lt.add(f"({i + 1},14,'{_esc(cat_title(i))}')")
    counts["linktarget"] = lt.close()

    cl = DumpWriter(name("categorylinks"), "categorylinks", [
        ("cl_from", "int(10) unsigned"), ("cl_target_id", "bigint(20) unsigned"), ("cl_sortkey", "varbinary(230)"),
        ("cl_sortkey_prefix", "varbinary(255)"), ("cl_timestamp", "timestamp"),
        ("cl_type", "enum('page','subcat','file')"), ("cl_collation_id", "smallint(5) unsigned")])
    # Each non-root category gets a parent with a smaller id (so all are reachable,
    # depth ~ log), the remaining edges go to random smaller ids.
    for i in range(1, n_cats):
        cl.add(f"({i + 1},{rnd.randrange(max(0, i // 3), i) + 1},'CATEGORY {i}','','2020-01-01 00:00:00','subcat',0)")
    for _ in range(max(0, n_edges - (n_cats - 1))):
        i = rnd.randrange(2, n_cats)
        cl.add(f"({i + 1},{rnd.randrange(0, i) + 1},'CATEGORY {i}','','2020-01-01 00:00:00','subcat',0)")
    for k in range(n_links):
        j = k % n_files
        cl.add(f"({file_base + j},{rnd.randrange(n_cats) + 1},'PHOTO {j}','','2020-01-01 00:00:00','file',0)")
    counts["categorylinks"] = cl.close()

    pp = DumpWriter(name("page_props"), "page_props", [
        ("pp_page", "int(10) unsigned"), ("pp_propname", "varbinary(60)"), ("pp_value", "blob"), ("pp_sortkey", "float")])
    for i in range(0, n_cats, 50):
        pp.add(f"({i + 1},'hiddencat','',NULL)")
    counts["page_props"] = pp.close()
    return counts


def parser_rate(dumps: Path) -> float:
    """Single-core rows/s of pipeline.labels.sqldump on the categorylinks dump (incl. gunzip)."""
    from pipeline.labels import sqldump

    path = str(dumps / f"commonswiki-{DATE}-categorylinks.sql.gz")
    t0 = time.process_time()
    res = sqldump.parse_dump(path, ["cl_from", "cl_target_id", "cl_type"], keep_values=False)
    return res.rows / (time.process_time() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--categories", type=int, default=1_000_000)
    ap.add_argument("--edges", type=int, default=3_000_000)
    ap.add_argument("--file-links", type=int, default=5_000_000)
    ap.add_argument("--workdir", default="/tmp/ingest_benchmark")
    ap.add_argument("--master", default="local[*]")
    ap.add_argument("--keep", action="store_true", help="keep the generated dumps and outputs")
    ap.add_argument("--generator", choices=["sample", "fast"], default="sample",
                    help="sample: `python -m devtools sample --no-images` (realistic names, ~1.7 file links per "
                         "file, ~2.9 parents per category); fast: this file's uniform writer with exact counts")
    args = ap.parse_args()

    from pipeline.config import load_settings
    from spark_jobs import category_graph, ingest_dumps

    work = Path(args.workdir)
    if work.exists():
        shutil.rmtree(work)
    n_cats, n_edges, n_links = (max(10, int(x * args.scale)) for x in (args.categories, args.edges, args.file_links))
    t = time.time()
    if args.generator == "sample":
        from devtools.sample.generator import generate_sample

        summary = generate_sample(str(work / "sample"), seed=0, images=0, categories=n_cats,
                                  dump_date=DATE, with_images=False)
        (work / "sample" / "dumps").rename(work / "dumps")
        counts = {k: summary["counts"][k] for k in ("categories", "category_edges", "file_links", "files")}
    else:
        counts = generate(work / "dumps", n_cats, n_edges, n_links)
    gen_s = time.time() - t
    print(f"generated {counts} in {gen_s:.1f}s", flush=True)

    rate = parser_rate(work / "dumps")
    settings = load_settings({"spark.master": args.master, "paths.dumps_dir": str(work / "dumps"),
                              "paths.data_root": str(work / "lake"), "paths.dump_date": DATE,
                              "paths.state_dir": str(work / "state")})
    from pipeline.orchestration.spark import get_spark

    spark = get_spark(settings, "benchmark")
    cores = spark.sparkContext.defaultParallelism
    t = time.time()
    ingest = ingest_dumps.run(settings)
    ingest_s = time.time() - t
    t = time.time()
    graph = category_graph.run(settings)
    graph_s = time.time() - t
    parsed_rows = sum(st["rows"] for st in ingest["parsed"].values())

    stop_spark(spark)
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report = {
        "scale": args.scale, "generated_rows": counts, "cores": cores,
        "parser_rows_per_s_single_core": round(rate),
        "ingest_s": round(ingest_s, 1), "parsed_rows": parsed_rows,
        "ingest_rows_per_s_per_core": round(parsed_rows / ingest_s / cores),
        "graph_s": round(graph_s, 1), "graph_max_depth": graph["max_depth"], "reachable": graph["reachable"],
        "outputs": ingest["rows"],
        "peak_rss_driver_mb": round(self_mb), "peak_rss_largest_child_mb": round(child_mb),
    }
    print(json.dumps(report, indent=1))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    main()
