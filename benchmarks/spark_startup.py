"""Benchmark a stage's Spark driver start-up with and without the class archive, pair by pair.

Each round starts two fresh Python processes one after the other, one plain and one with
``SPARK_CLASS_ARCHIVE`` (in alternating order), and times in each the SparkSession start and
the first small job, as ``get_spark`` configures them for the stages.

    .venv/bin/python benchmarks/spark_startup.py --archive .venv/spark-classes.jsa --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = """
import json, time
t0 = time.perf_counter()
from pipeline.config import load_settings
from pipeline.orchestration.spark import get_spark
s = get_spark(load_settings({"spark.master": "local[2]", "paths.state_dir": %(state)r}), "bench")
t1 = time.perf_counter()
s.range(1000).selectExpr("id %% 7 as k").groupBy("k").count().collect()
t2 = time.perf_counter()
print("RESULT", json.dumps({"session_s": t1 - t0, "first_job_s": t2 - t1}))
s.stop()
"""


def once(archive: str, state: str) -> dict:
    env = {**os.environ, "SPARK_CLASS_ARCHIVE": archive, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", CHILD % {"state": state}], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--archive", required=True, help="an archive written by python -m pipeline spark-archive")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    from pipeline.orchestration.spark import archive_options

    archive = os.path.abspath(args.archive)
    if not archive_options(archive):
        raise SystemExit(f"{archive} is not a class archive for this Spark and JDK")
    results = {"plain": [], "archive": []}
    with tempfile.TemporaryDirectory() as state:
        for i in range(args.rounds):
            order = ["plain", "archive"] if i % 2 == 0 else ["archive", "plain"]
            for kind in order:
                results[kind].append(once(archive if kind == "archive" else "", state))
    summary = {kind: {k: round(statistics.median(r[k] for r in runs), 2) for k in ("session_s", "first_job_s")}
               for kind, runs in results.items()}
    print(json.dumps({"rounds": args.rounds, "median": summary, "runs": results}))


if __name__ == "__main__":
    main()
