"""Cost against size: the data stages on Commons-shaped dumps at 1%, 3% and 10% of Commons.

For each fraction f, the sample generator (``python -m devtools sample --no-images``) writes dumps
with f x 11M categories (edges, files, links, hidden categories and redirects in the generator's
proportions, printed per size) and a WIT with f x 3.9M English Commons images. Then ``ingest``,
``graph``, ``label`` and ``wit`` run one after the other, each in its own process as the DAG runs
them, with Spark's event log on; then ``shard`` with at most ``--images`` downloads
(``shard.max_downloads``) from a local server that draws each image on the fly
(``devtools.sample.server``, ``render=True``: no image files on disk), ``train`` (one epoch at 32 px,
only so that ``infer`` has a model) and ``infer``. Per stage and size it records:

- wall time, and the CPU the stage's process tree used (user + system, driver and JVM);
- peak RSS of the Python driver and of its largest child (the Spark JVM);
- shuffle bytes written and bytes spilled (memory and disk), summed over the event log's tasks;
- the size of what the stage added under the data root.

It fits the growth exponent k (time ~ size^k) between consecutive sizes and extrapolates each stage
from the largest size to full Commons (the assumptions are printed with the figures).

    .venv/bin/python benchmarks/scale.py --workdir /tmp/scale                     # 1%, 3%, 10%
    .venv/bin/python benchmarks/scale.py --fractions 0.001,0.003 --workdir /tmp/s  # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
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

COMMONS_CATEGORIES = 11_000_000
WIT_EN_IMAGES = 3_900_000
DATE = "20990101"
STAGES = ("ingest", "graph", "label", "wit")
IMAGE_STAGES = ("shard", "train", "infer")
UA = "wiki-image-topics-scale-benchmark/0.1 (local rendering mirror; no Wikimedia hosts) python-requests"
# The model infer needs: trained on the capped images as the tests train (one epoch, 32 px, no weights).
TINY_TRAIN = {"train.image_size": "32", "train.backbone": "B0", "train.weights": "none", "train.epochs": "1",
              "train.batch_size": "32", "train.workers": "1"}


def _overrides(work: Path, master: str) -> dict:
    return {"spark.master": master, "paths.dumps_dir": str(work / "sample" / "dumps"),
            "paths.wit_dir": str(work / "sample" / "wit"), "paths.data_root": str(work / "lake"),
            "paths.state_dir": str(work / "state"), "paths.dump_date": DATE}


def generate(work: Path, fraction: float, seed: int) -> dict:
    from devtools.sample.generator import generate_sample

    t = time.time()
    out = generate_sample(str(work / "sample"), seed=seed, images=round(fraction * WIT_EN_IMAGES),
                          categories=round(fraction * COMMONS_CATEGORIES), dump_date=DATE, with_images=False)
    counts = out["counts"]
    shape = {k: counts.get(k) for k in ("categories", "category_edges", "files", "file_links", "hidden_categories",
                                        "category_redirects", "unconnected_categories", "file_redirects", "wit_rows",
                                        "wit_en_commons_raster_unique")}
    sizes = {Path(p).name: os.path.getsize(p) for p in [*out["dumps"].values(), *out["wit"]]}
    return {"generate_s": round(time.time() - t, 1), "counts": shape, "input_bytes": sum(sizes.values())}


def shape(data_root: str, dump_date: str) -> dict:
    """The graph's shape, from the ingest and graph outputs of one dump (any lake: generated or real)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline.config import load_settings
    from pipeline.lake.layout import Layout

    layout = Layout.from_settings(load_settings({"paths.data_root": data_root, "paths.dump_date": dump_date}))
    cats = pq.read_table(layout.ingest("categories"), columns=["hidden", "is_redirect"])
    edges = pq.read_table(layout.ingest("category_edges"), columns=["child"])
    links = pq.read_table(layout.ingest("file_links"), columns=["file_id", "category"])
    redirects = pq.read_table(layout.ingest("file_redirects"), columns=["title"]).num_rows
    depth = pq.read_table(layout.category_depth, columns=["depth"])["depth"].drop_null()
    n_cats, n_files = cats.num_rows, len(pc.unique(links["file_id"]))
    per_cat = pc.value_counts(links["category"]).field("counts")
    return {"categories": n_cats, "parents_per_category": round(edges.num_rows / n_cats, 2),
            "hidden_share": round(pc.sum(cats["hidden"]).as_py() / n_cats, 4),
            "category_redirect_share": round(pc.sum(cats["is_redirect"]).as_py() / n_cats, 4),
            "files": n_files, "categories_per_file": round(links.num_rows / max(1, n_files), 2),
            "files_per_linked_category_median": pc.approximate_median(per_cat).as_py(),
            "file_redirects_per_file": round(redirects / max(1, n_files), 4),
            "reachable_share": round(len(depth) / n_cats, 4), "max_depth": pc.max(depth).as_py(),
            "median_depth": pc.approximate_median(depth).as_py()}


def _bytes_under(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def _event_totals(log_dir: Path) -> dict:
    """Shuffle and spill bytes summed over every finished task of the event log(s) in ``log_dir``."""
    keys = {"shuffle_write_bytes": ("Shuffle Write Metrics", "Shuffle Bytes Written"),
            "shuffle_read_bytes": ("Shuffle Read Metrics", "Remote Bytes Read"),
            "spill_memory_bytes": (None, "Memory Bytes Spilled"), "spill_disk_bytes": (None, "Disk Bytes Spilled")}
    out = dict.fromkeys(keys, 0)
    local_read = 0
    out["tasks"] = 0
    for path in (p for p in log_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if '"SparkListenerTaskEnd"' not in line:
                    continue
                metrics = json.loads(line).get("Task Metrics") or {}
                out["tasks"] += 1
                for name, (group, key) in keys.items():
                    out[name] += (metrics.get(group) or {}).get(key, 0) if group else metrics.get(key, 0)
                local_read += (metrics.get("Shuffle Read Metrics") or {}).get("Local Bytes Read", 0)
    out["shuffle_read_bytes"] += local_read
    return out


def run_stage(work: Path, stage: str, master: str, extra: dict | None = None) -> dict:
    """One stage in its own process (``--child``), timed from here; ``extra``: more setting overrides."""
    logs = work / "eventlog" / stage
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    lake = work / "lake"
    before = _bytes_under(lake)
    conf = {"spark.eventLog.enabled": "true", "spark.eventLog.dir": f"file://{logs}",
            "spark.eventLog.compress": "false", "spark.eventLog.rolling.enabled": "false"}
    env = {**os.environ, "PYSPARK_SUBMIT_ARGS": " ".join(f"--conf {k}={v}" for k, v in conf.items()) + " pyspark-shell"}
    t = time.time()
    proc = subprocess.run([sys.executable, __file__, "--child", stage, "--workdir", str(work), "--master", master,
                           "--extra", json.dumps(extra or {})], env=env, capture_output=True, text=True)
    wall = time.time() - t
    if proc.returncode != 0:
        raise SystemExit(f"{stage} failed at {work}:\n{proc.stderr[-4000:]}")
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"stage": stage, "wall_s": round(wall, 1), **child, **_event_totals(logs),
            "output_bytes": _bytes_under(lake) - before}


def peak_rss_mb() -> int:
    """This process's peak RSS since it exec'd (VmHWM): ru_maxrss would carry over the parent's peak."""
    with open("/proc/self/status", encoding="ascii") as f:
        return round(next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024)


def child(stage: str, work: Path, master: str, extra: dict) -> None:
    """In the stage's own process: run it, stop Spark, reap the JVM, print the process's resource use."""
    from pipeline.config import load_settings
    from pipeline.orchestration.stages import STAGES as ALL

    settings = load_settings({**_overrides(work, master), **extra})
    t = time.time()
    summary = ALL[stage].load()(settings)
    stage_s = time.time() - t
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is not None:
        stop_spark(spark)
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"stage_s": round(stage_s, 1), "cpu_s": round(me.ru_utime + me.ru_stime + kids.ru_utime
                                                                    + kids.ru_stime, 1),
                      "driver_rss_mb": peak_rss_mb(), "jvm_rss_mb": round(kids.ru_maxrss / 1024),
                      "summary": {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}}))


def image_stages(work: Path, fraction: float, categories: int, master: str, images: int) -> list[dict]:
    """shard (at most ``images`` downloads, from a server that draws them), train (tiny), infer."""
    from devtools.sample import server

    empty = work / "no-files"
    empty.mkdir(exist_ok=True)
    base_url, stop = server.serve(str(empty), render=True)
    extra = {"shard.mirror_url": base_url, "shard.user_agent": UA, "shard.max_downloads": str(images),
             "shard.bandwidth_bytes_per_s": str(10**9), **TINY_TRAIN}
    rows = []
    try:
        for stage in IMAGE_STAGES:
            r = {"fraction": fraction, "categories": categories, **run_stage(work, stage, master, extra)}
            rows.append(r)
            print(json.dumps(r), flush=True)
    finally:
        stop()
    return rows


def exponent(a: dict, b: dict, size_key: str = "categories") -> float:
    return math.log(b["wall_s"] / a["wall_s"]) / math.log(b[size_key] / a[size_key])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fractions", default="0.01,0.03,0.1", help="fractions of Commons' 11M categories")
    ap.add_argument("--workdir", default="/tmp/scale")
    ap.add_argument("--master", default="local[*]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cluster-cores", type=int, default=16, help="the cluster the extrapolation is for")
    ap.add_argument("--images", type=int, default=2000,
                    help="shard downloads at most this many images (shard.max_downloads) from a local server that "
                         "draws them on the fly; train and infer use them (0: skip shard, train and infer)")
    ap.add_argument("--shape-of", metavar="DATA_ROOT:DUMP_DATE",
                    help="only print the shape of an ingested and graphed dump (the real subgraph, say)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--extra", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if args.child:
        return child(args.child, Path(args.workdir), args.master, json.loads(args.extra))
    if args.shape_of:
        return print(json.dumps(shape(*args.shape_of.rsplit(":", 1))))

    fractions = [float(f) for f in args.fractions.split(",")]
    base = Path(args.workdir)
    rows, sizes = [], []
    for f in fractions:
        work = base / f"f{f:g}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        gen = generate(work, f, args.seed)
        sizes.append({"fraction": f, **gen})
        print(json.dumps({"fraction": f, **gen}), flush=True)
        for stage in STAGES:
            r = {"fraction": f, "categories": gen["counts"]["categories"], **run_stage(work, stage, args.master)}
            rows.append(r)
            print(json.dumps(r), flush=True)
            if stage == "graph":
                sizes[-1]["shape"] = shape(str(work / "lake"), DATE)
        if args.images:
            rows += image_stages(work, f, gen["counts"]["categories"], args.master, args.images)
        shutil.rmtree(work / "sample", ignore_errors=True)
        shutil.rmtree(work / "lake", ignore_errors=True)

    cores = os.cpu_count()
    fits = {}
    for stage in dict.fromkeys(r["stage"] for r in rows):
        mine = [r for r in rows if r["stage"] == stage]
        ks = [round(exponent(a, b), 3) for a, b in zip(mine, mine[1:])]
        last = mine[-1]
        full = last["wall_s"] * (COMMONS_CATEGORIES / last["categories"]) ** (ks[-1] if ks else 1.0)
        fits[stage] = {"k_between_sizes": ks,
                       "driver_rss_growth": round(last["driver_rss_mb"] / mine[0]["driver_rss_mb"], 3),
                       "full_commons_s_here": round(full), "cpu_share_used": round(last["cpu_s"] / last["wall_s"]
                                                                                  / cores, 2),
                       f"full_commons_s_{args.cluster_cores}_cores": round(full * cores / args.cluster_cores)}
    report = {"machine": f"{platform.node()} {cores} cores, Python {platform.python_version()}",
              "date": time.strftime("%Y-%m-%d"), "master": args.master, "sizes": sizes, "stages": rows, "fits": fits,
              "assumptions": [
                  "time grows from the largest size to full Commons with the exponent measured between the two "
                  "largest sizes",
                  f"on {args.cluster_cores} cores the time divides by {args.cluster_cores}/{cores} (perfect "
                  "scaling: no serial driver work, no network); a stage whose cpu_share_used is well below 1 "
                  "here is partly serial and will scale worse"]}
    (base / "scale.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(fits, indent=1))


if __name__ == "__main__":
    main()
