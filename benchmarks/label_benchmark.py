"""Benchmark the label stage against the plain recursive oracle on the ingest benchmark's graph.

Times (a) the Spark stage ``spark_jobs.label_topics.run`` (labels of every
category and file, written to Parquet, plus its statistics) and (b) the
recursive oracle ``pipeline.labels.traversal.Traversal`` in this one Python process
(Parquet read with pyarrow, graph built in dicts, every file labeled), checks
that both give the same file labels, and prints one JSON line.

The graph is the one ``benchmarks/ingest_benchmark.py`` builds (full size: 1M
categories, 3M edges, 5M file links). With ``--workdir DIR`` holding its
outputs (``--keep``), they are reused; otherwise it is run first, with
``--scale`` and ``--generator``, into DIR (and kept).

    .venv/bin/python benchmarks/label_benchmark.py --scale 0.02 --workdir /tmp/label_bench

``--against LABELER`` also times the Spark stage of ``--heuristics`` and of LABELER alternately,
pair by pair in the same Spark session (``against.median_ratio``: the first's time over the second's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from measure import stop_spark  # noqa: E402 (benchmarks/, the script's own folder)

DATE = "20990101"  # the ingest benchmark's dump date


def _settings(work: Path, master: str, taxonomy: str, heuristics: str, tail: int | None = None):
    from pipeline.config import load_settings

    extra = {} if tail is None else {"label.tail_proposals": str(tail)}
    return load_settings({"spark.master": master, "paths.dumps_dir": str(work / "dumps"),
                          "paths.data_root": str(work / "lake"), "paths.dump_date": DATE,
                          "paths.state_dir": str(work / "state"), "label.taxonomy": taxonomy,
                          "label.heuristics": heuristics, **extra})


def _graph_ready(layout) -> bool:
    paths = [layout.category_depth, layout.ingest("category_edges"), layout.ingest("file_links")]
    return all(os.path.isdir(p) and any(Path(p).glob("*.parquet")) for p in paths)


def _mb(who) -> int:
    return round(resource.getrusage(who).ru_maxrss / 1024)


def run_oracle(layout, taxonomy, heuristics: str) -> tuple[dict, dict]:
    """Read the stage's inputs with pyarrow, build the Traversal, label every file.

    Returns ({file_id: frozenset of flat labels}, timings in seconds).
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline.labels.traversal import Traversal

    t0 = time.perf_counter()
    depth = pq.read_table(layout.category_depth, columns=["title", "hidden", "depth"])
    edges = pq.read_table(layout.ingest("category_edges"), columns=["child", "parent"])
    links = pq.read_table(layout.ingest("file_links"), columns=["file_id", "file_title", "category"])
    links = links.sort_by([("file_id", "ascending")])
    t1 = time.perf_counter()
    tr = Traversal.build(zip(depth["title"].to_pylist(), depth["hidden"].to_pylist(), depth["depth"].to_pylist()),
                         zip(edges["child"].to_pylist(), edges["parent"].to_pylist()), taxonomy, heuristics)
    n_categories, n_edges = depth.num_rows, edges.num_rows
    del depth, edges
    t2 = time.perf_counter()
    ids = links["file_id"].to_pylist()
    cats = links["category"].to_pylist()
    titles = links["file_title"].to_pylist()
    n_links, n_files = links.num_rows, len(pc.unique(links["file_id"]))
    del links
    out: dict = {}
    start = 0
    for k in range(1, len(ids) + 1):  # sorted by file_id: one run of links per file
        if k == len(ids) or ids[k] != ids[start]:
            out[ids[start]] = tr.file_labels(cats[start:k], titles[start])
            start = k
    t3 = time.perf_counter()
    labeled_categories = sum(1 for labels, _ in tr._memo.values() if labels)
    times = {"read_s": t1 - t0, "build_s": t2 - t1, "label_s": t3 - t2, "total_s": t3 - t0,
             "categories": n_categories, "category_edges": n_edges, "file_links": n_links, "files": n_files,
             "categories_memoised": len(tr._memo), "categories_memoised_labeled": labeled_categories}
    return out, times


def compare(file_labels_path: str, oracle: dict) -> int:
    """Files whose Spark flat labels differ from the oracle's (a file missing on either side counts)."""
    import pyarrow.parquet as pq

    t = pq.read_table(file_labels_path, columns=["file_id", "labels"])
    got = dict(zip(t["file_id"].to_pylist(), (frozenset(x) for x in t["labels"].to_pylist())))
    return sum(got.get(f) != v for f, v in oracle.items()) + len(set(got) - set(oracle))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/label_benchmark",
                    help="the ingest benchmark's workdir; its lake is reused when present")
    ap.add_argument("--scale", type=float, default=1.0, help="for the ingest benchmark, when it has to run")
    ap.add_argument("--generator", choices=["sample", "fast"], default="sample",
                    help="for the ingest benchmark, when it has to run")
    ap.add_argument("--master", default="local[*]")
    ap.add_argument("--taxonomy", default="v1.3")
    ap.add_argument("--heuristics", default="headJ+depth")
    ap.add_argument("--no-compare", action="store_true", help="skip the Spark == oracle check on file labels")
    ap.add_argument("--against", metavar="LABELER",
                    help="time the Spark stage of --heuristics and of this labeler alternately, --pairs times, in "
                         "the same Spark session: the cost of one relative to the other")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--tail-proposals", type=int, nargs="*", default=[],
                    help="run the Spark stage once more with each of these label.tail_proposals (0: rounds only), "
                         "after the run with the default")
    args = ap.parse_args()

    from pipeline.labels.taxonomy import Taxonomy
    from pipeline.lake.layout import Layout

    work = Path(args.workdir)
    settings = _settings(work, args.master, args.taxonomy, args.heuristics)
    layout = Layout.from_settings(settings)
    reused = _graph_ready(layout)
    if not reused:
        print(f"no ingest+graph outputs under {work}: running the ingest benchmark (scale {args.scale})",
              file=sys.stderr, flush=True)
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ingest_benchmark.py"), "--workdir", str(work),
                        "--scale", str(args.scale), "--generator", args.generator, "--master", args.master,
                        "--keep"], check=True, stdout=sys.stderr)
        if not _graph_ready(layout):
            sys.exit(f"the ingest benchmark left no graph under {work}")

    # (a) the Spark stage; the session starts before the clock
    import warnings

    from pipeline.orchestration.spark import get_spark
    from spark_jobs import label_topics

    spark = get_spark(settings, "label-benchmark")
    cores = spark.sparkContext.defaultParallelism
    spark.range(1).count()

    def spark_run(tail: int | None, heuristics: str = args.heuristics, keep: bool = True) -> tuple[dict, dict]:
        """One label stage; its file labels are copied aside, since the next run replaces them."""
        t = time.perf_counter()
        with warnings.catch_warnings(record=True):  # missing seeds (the fast generator has none) are in the summary
            warnings.simplefilter("always")
            summary = label_topics.run(_settings(work, args.master, args.taxonomy, heuristics, tail))
        secs = time.perf_counter() - t
        if not keep:
            return summary, {"spark_label_s": round(secs, 2)}
        tail = settings.label.tail_proposals if tail is None else tail
        kept = work / f"file_labels-tail-{tail}"
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(summary["file_labels"], kept)
        return summary, {"tail_proposals": tail, "spark_label_s": round(secs, 2),
                         "rounds": json.load(open(summary["stats"]))["rounds"], "file_labels": str(kept)}

    summary, first = spark_run(None)
    variants = [spark_run(tail)[1] for tail in args.tail_proposals]
    against = None
    if args.against:
        pairs = [[spark_run(None, h, keep=False)[1]["spark_label_s"] for h in (args.heuristics, args.against)]
                 for _ in range(args.pairs)]
        ratios = sorted(a / b for a, b in pairs)
        against = {"labeler": args.against, "pairs_s": pairs, "ratios": [round(r, 3) for r in ratios],
                   "median_ratio": round(ratios[len(ratios) // 2], 3)}
    spark_s = first["spark_label_s"]
    stop_spark(spark)
    driver_after_spark_mb = _mb(resource.RUSAGE_SELF)

    # (b) the recursive oracle, in this process
    oracle, o = run_oracle(layout, Taxonomy.load(args.taxonomy), args.heuristics)
    oracle_peak_mb = _mb(resource.RUSAGE_SELF)
    for r in [first, *variants]:
        r["spark_over_oracle"] = round(r["spark_label_s"] / o["total_s"], 3) if o["total_s"] else None
        r["files_differing"] = None if args.no_compare else compare(r.pop("file_labels"), oracle)
    mismatches = first["files_differing"]

    report = {
        "benchmark": "label", "taxonomy": args.taxonomy, "heuristics": args.heuristics, "workdir": str(work),
        "graph_reused": reused,
        "rows": {"categories": o["categories"], "category_edges": o["category_edges"], "file_links": o["file_links"],
                 "files": o["files"], "categories_labeled_spark": summary["categories_labeled"],
                 "files_spark": summary["files"], "files_unlabeled_share": round(summary["files_unlabeled_share"], 4),
                 "categories_visited_oracle": o["categories_memoised"]},
        "spark_label_s": round(spark_s, 2),
        "oracle_s": round(o["total_s"], 2),
        "oracle_parts_s": {k: round(o[k], 2) for k in ("read_s", "build_s", "label_s")},
        "spark_over_oracle": round(spark_s / o["total_s"], 3) if o["total_s"] else None,
        "files_differing": mismatches,
        "rounds": first["rounds"],
        "tail_proposals": first["tail_proposals"],
        "other_tail_proposals": variants,
        "against": against,
        "peak_rss_mb": {"driver_after_spark": driver_after_spark_mb, "driver_with_oracle": oracle_peak_mb,
                        "largest_child_jvm": _mb(resource.RUSAGE_CHILDREN)},
        "spark_master": args.master, "spark_cores": cores,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count()},
    }
    print(json.dumps(report))


if __name__ == "__main__":
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    main()
