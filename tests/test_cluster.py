"""The Spark stages on a real Spark standalone cluster: a master and two workers started on 127.0.0.1
from the pip-installed PySpark, each worker in its own working directory and without the project
on its path. The driver ships the project's code (``pipeline.orchestration.spark.ship_project``); the stages'
outputs equal those of ``local[*]`` row for row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from devtools.spark_cluster import StandaloneCluster
from pipeline.config import PROJECT_ROOT, load_settings
from pipeline.lake.layout import Layout
from spark_jobs import category_graph, ingest_dumps, label_topics, wit_images

DATE = "20260101"
STAGES = ("ingest", "graph", "label", "wit")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with StandaloneCluster(str(tmp_path_factory.mktemp("cluster")), workers=2, memory_per_worker="1g") as c:
        yield c


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from devtools.sample.generator import generate_sample

    out = tmp_path_factory.mktemp("sample") / "sample"
    generate_sample(str(out), seed=11, images=80, categories=150, dump_date=DATE, with_images=False)
    return out


def overrides(sample: Path, root: Path, master: str) -> dict:
    return {"spark.master": master, "spark.shuffle_partitions": "4", "paths.dumps_dir": str(sample / "dumps"),
            "paths.wit_dir": str(sample / "wit"), "paths.data_root": str(root / "lake"),
            "paths.state_dir": str(root / "state"), "paths.dump_date": DATE}


def driver_env(cwd: Path) -> dict:
    """The driver runs the checkout (on PYTHONPATH) from a folder that is not the project."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    return env


def cli(stage: str, over: dict, cwd: Path) -> dict:
    args = [a for k, v in over.items() for a in ("--set", f"{k}={v}")]
    proc = subprocess.run([sys.executable, "-m", "pipeline", stage, *args], cwd=cwd, env=driver_env(cwd),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{stage} on the cluster failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def canonical(path: str) -> pd.DataFrame:
    """A table in one row order, arrays as tuples, so two runs compare row for row."""
    df = pd.read_parquet(path)
    for c in df.columns:
        if df[c].map(lambda v: hasattr(v, "__len__") and not isinstance(v, (str, bytes))).any():
            df[c] = df[c].map(lambda v: None if v is None else tuple(v))
    df = df[sorted(df.columns)]
    return df.sort_values(list(df.columns), na_position="first", key=lambda s: s.astype(str)).reset_index(drop=True)


def outputs(layout: Layout) -> dict[str, str]:
    tables = {f"ingest/{t}": layout.ingest(t) for t in ("categories", "category_edges", "file_links", "file_redirects")}
    tables.update({"graph/category_depth": layout.category_depth,
                   "label/category_labels": layout.labels("category_labels"),
                   "label/file_labels": layout.labels("file_labels"),
                   "wit/wit_images": layout.wit_images})
    return tables


def test_executors_import_the_shipped_project_not_the_checkout(cluster, tmp_path):
    """What each executor's Python worker imports ``pipeline`` from: the zip the driver shipped, in
    the worker's own folder; the checkout is on no executor's path."""
    script = f"""
import json, os, sys
from pipeline.config import load_settings
from pipeline.orchestration.spark import get_spark
import time
spark = get_spark(load_settings({{"spark.master": {cluster.master_url!r}, "paths.state_dir": {str(tmp_path)!r}}}), "probe")
deadline = time.monotonic() + 120
# the driver and both executors (standalone mode schedules as soon as the first executor is up)
while spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() < 3 and time.monotonic() < deadline:
    time.sleep(0.2)
def where(_):
    import importlib, pkgutil, pipeline, spark_jobs, training
    # every module loads from the zip (import-time code must not assume a folder on disk)
    for pkg in (pipeline, spark_jobs, training):
        for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            importlib.import_module(m.name)
    yield json.dumps({{"pipeline": pipeline.__file__, "cwd": os.getcwd(), "path": sys.path,
                       "executor": os.environ.get("SPARK_EXECUTOR_ID", "?")}})
print(json.dumps(spark.sparkContext.parallelize(range(8), 8).mapPartitions(where).collect()))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=driver_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    seen = [json.loads(x) for x in json.loads(proc.stdout.strip().splitlines()[-1])]
    root = str(PROJECT_ROOT)
    for s in seen:
        assert ".zip" in s["pipeline"] and "wiki_image_topics-" in s["pipeline"], s
        assert not s["pipeline"].startswith(root) and not s["cwd"].startswith(root), s
        assert root not in [os.path.normpath(os.path.join(s["cwd"], p)) for p in s["path"]], s
        assert s["cwd"].startswith(str(Path(cluster.folder).resolve())), s  # in a worker's own folder
    # Both workers ran tasks (each has one core: 8 tasks cannot all go to one of them in time).
    assert len({s["cwd"].split(os.sep + "worker-")[1].split(os.sep)[0] for s in seen}) == 2, seen
    # One zip per version of the code: a second session reuses it.
    assert len(list((tmp_path / "spark-pyfiles").glob("wiki_image_topics-*.zip"))) == 1


def test_stages_on_the_cluster_equal_local(cluster, sample, tmp_path, spark):
    on_cluster = overrides(sample, tmp_path / "cluster", cluster.master_url)
    summaries = {stage: cli(stage, on_cluster, tmp_path) for stage in STAGES}
    assert summaries["label"]["files"] > 0 and summaries["wit"]["images"] > 0
    # The workers decoded their own ranges of the shared dumps through the driver's seek index.
    assert {st["chunks_read"] for st in summaries["ingest"]["parsed"].values()} == {"indexed"}

    local = load_settings(overrides(sample, tmp_path / "local", "local[2]"))
    ingest_dumps.run(local)
    category_graph.run(local)
    label_topics.run(local)
    wit_images.run(local)

    a = outputs(Layout.from_settings(load_settings(on_cluster)))
    b = outputs(Layout.from_settings(local))
    for name in a:
        left, right = canonical(a[name]), canonical(b[name])
        assert len(left) > 0 or name == "ingest/file_redirects", name
        pd.testing.assert_frame_equal(left, right, obj=name)
