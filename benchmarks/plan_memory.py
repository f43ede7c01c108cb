"""The shard stage's downloader memory against the size of its plan.

Writes a plan of N rows with Spark twice (Spark's default row groups, and ``write_plan``'s), then reads
its first 2,000 rows, each way, in a fresh process, and prints the process's peak RSS (VmHWM) before
and after. The readers: ``dataset`` (a pyarrow dataset scanner, default readahead: the first reader),
``dataset-readahead-1`` (the same with one batch and one file of readahead: the reader of 2026-12-03)
and ``iter_plan`` (now). ``--pause-ms`` pauses after each row, as the downloader does.

    .venv/bin/python benchmarks/plan_memory.py --rows 366000 --workdir /tmp/planmem --pause-ms 2
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write(rows: int, work: Path) -> None:
    from pipeline.config import load_settings
    from pipeline.orchestration.spark import get_spark
    from spark_jobs import shard_images

    spark = get_spark(load_settings({"spark.master": "local[2]", "paths.state_dir": str(work / "state")}), "plan")
    todo = spark.range(rows).selectExpr(
        "sha2(cast(id as string), 256) as image_key", "concat('File number ', id, ' of the plan.jpg') as file_title",
        "concat('https://upload.wikimedia.org/wikipedia/commons/a/ab/File_number_', id, '_of_the_plan.jpg') "
        "as image_url", "'image/jpeg' as mime_type", "cast(4000 as int) as original_width")
    todo.orderBy("image_key").write.parquet(str(work / "default"))
    shard_images.write_plan(todo, str(work / "small"))


def read(path: str, reader: str, pause_ms: float) -> dict:
    import pyarrow.dataset as ds
    from scale import peak_rss_mb  # this folder's scale benchmark: the process's VmHWM

    from spark_jobs.shard_images import TODO_COLUMNS, iter_plan

    def scanner(p, **readahead):
        for batch in ds.dataset(p, format="parquet").to_batches(columns=TODO_COLUMNS, batch_size=2048, **readahead):
            yield from batch.to_pylist()

    readers = {"dataset": scanner,
               "dataset-readahead-1": lambda p: scanner(p, batch_readahead=1, fragment_readahead=1),
               "iter_plan": iter_plan}
    before = peak_rss_mb()
    for _ in itertools.islice(readers[reader](path), 2000):
        time.sleep(pause_ms / 1000)
    return {"plan": Path(path).name, "reader": reader, "pause_ms": pause_ms, "peak_mb_before": before,
            "peak_mb_after": peak_rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=366_000)
    ap.add_argument("--workdir", default="/tmp/planmem")
    ap.add_argument("--write", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pause-ms", type=float, default=0.0, help="the consumer's pause per row")
    ap.add_argument("--read", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.workdir)
    if args.write:
        return write(args.rows, work)
    if args.read:
        return print(json.dumps(read(*args.read, args.pause_ms)))
    shutil.rmtree(work, ignore_errors=True)
    subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--workdir", str(work), "--write"],
                   check=True, capture_output=True)
    for reader in ("dataset", "dataset-readahead-1", "iter_plan"):  # each in a fresh process: its own peak
        for plan in ("default", "small"):
            out = subprocess.run([sys.executable, __file__, "--read", str(work / plan), reader,
                                  "--pause-ms", str(args.pause_ms)],
                                 check=True, capture_output=True, text=True).stdout
            print(json.dumps({"rows": args.rows, **json.loads(out)}), flush=True)


if __name__ == "__main__":
    main()
