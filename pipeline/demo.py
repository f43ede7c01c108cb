"""`make demo`: the whole Airflow DAG on the bundled sample, with embedded defaults.

Generates the sample (real dump and WIT formats) and serves it as the real
publishers do: its dumps as a local dumps.wikimedia.org (directory listing,
``dumpstatus.json``, checksum files, and a newer run still in progress), its
WIT TSVs as WIT's bucket, and its images as a local mirror of
upload.wikimedia.org, so the run goes through ``fetch`` and the real download
path like a nightly run. Points Airflow (SQLite metadata DB, LocalExecutor)
and MLflow (SQLite) at the state folder, runs ``airflow dags test
wiki_topics`` for today's logical date and prints where each output is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from pipeline.atomic import exists, read_json
from pipeline.config import load_settings
from pipeline.layout import Layout
from pipeline.stages import ORDER, PROJECT_ROOT

SAMPLE_DUMP_DATE = "20260101"
# A newer run the demo's dumps server shows as still in progress: fetch must skip it.
IN_PROGRESS_DUMP_DATE = "20260115"
SMALL_DATA_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
DEMO_USER_AGENT = "wiki-image-topics-demo/0.1 (local sample mirror; no Wikimedia hosts) python-requests"


def airflow_env(state_dir: str) -> dict[str, str]:
    """Airflow's home, SQLite metadata database and LocalExecutor, all under the state folder."""
    home = Path(state_dir).resolve() / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
    }


def _airflow(args: list[str], env: dict[str, str]) -> None:
    cmd = [str(Path(sys.executable).parent / "airflow"), *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, env=env, check=True)


def run_demo(
    overrides: dict[str, str] | None = None,
    images: int = 3000,
    categories: int = 2000,
    seed: int = 0,
    epochs: int | None = None,
    logical_date: str | None = None,
    extra_dump_dates: tuple[str, ...] = (),
) -> dict:
    from pipeline.sample import dumps_server, generator, server

    overrides = dict(overrides or {})
    settings = load_settings(overrides)
    data_root = Path(settings.paths.data_root).resolve()
    state_dir = Path(settings.paths.state_dir).resolve()
    sample_dir = data_root / "sample"

    marker = sample_dir / "sample.json"
    wanted = {"images": images, "categories": categories, "seed": seed, "dump_date": SAMPLE_DUMP_DATE}
    if not (marker.exists() and json.loads(marker.read_text()).get("args") == wanted):
        summary = generator.generate_sample(
            str(sample_dir), seed=seed, images=images, categories=categories, dump_date=SAMPLE_DUMP_DATE
        )
        marker.write_text(json.dumps({"args": wanted, "summary": summary}, default=str))

    published = dumps_server.publish(sample_dir / "dumps", sample_dir / "wit", sample_dir / "published",
                                     in_progress_date=IN_PROGRESS_DUMP_DATE, extra_dates=tuple(extra_dump_dates))
    dumps = dumps_server.DumpsServer(sample_dir / "published").start()
    image_requests = server.RequestCount()
    base_url, stop = server.serve(str(sample_dir / "images"), count=image_requests)
    env = {
        **os.environ,
        **airflow_env(str(state_dir)),
        "DATA_ROOT": str(data_root),
        "STATE_DIR": str(state_dir),
        # fetch downloads into these, from the local publishers
        "DUMPS_DIR": str(data_root / "dumps"),
        "WIT_DIR": str(data_root / "wit"),
        "DUMPS_URL": dumps.url,
        "WIT_URL": f"{dumps.url}/{dumps_server.WIT_PATH}/",
        "WIT_FILES": ",".join(published["wit_files"]),
        "DUMP_DATE": SAMPLE_DUMP_DATE,
        "WIKI_MIRROR_URL": base_url,
        "USER_AGENT": DEMO_USER_AGENT,
        # Offline machine: no ImageNet download. A few thousand images from scratch on a CPU
        # learn best with small batches, a higher rate and faster BatchNorm statistics
        # (measured: docs/benchmarks.md).
        "WEIGHTS": os.environ.get("WEIGHTS", "none"),
        "EPOCHS": str(epochs or os.environ.get("EPOCHS", 8)),
        "BATCH_SIZE": os.environ.get("BATCH_SIZE", "32"),
        "LEARNING_RATE": os.environ.get("LEARNING_RATE", "0.002"),
        "BN_MOMENTUM": os.environ.get("BN_MOMENTUM", "0.9"),
        "SHARD_SIZE": os.environ.get("SHARD_SIZE", "500"),
        # The mirror is our own server on loopback, not Wikimedia: no need for their caps.
        "PER_HOST_CONCURRENCY": os.environ.get("PER_HOST_CONCURRENCY", "8"),
        "BANDWIDTH_BYTES_PER_S": os.environ.get("BANDWIDTH_BYTES_PER_S", "100000000"),
        "WIKI_TOPICS_RETRIES": "0",
        # Spark jobs of seconds on a small sample: a JVM that compiles less starts faster.
        "SPARK_JAVA_OPTIONS": os.environ.get("SPARK_JAVA_OPTIONS", SMALL_DATA_JVM),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    }
    if overrides:  # --set and shortcuts reach the stage processes too
        env["PIPELINE_OVERRIDES"] = json.dumps(overrides)
    # A nightly run: no dump_date param, so the logical date (today) picks the newest complete dump.
    logical_date = logical_date or datetime.now(timezone.utc).strftime("%Y-%m-%d")
    try:
        _airflow(["db", "migrate"], env)
        _airflow(["dags", "test", "wiki_topics", logical_date], env)
    finally:
        stop()
        dumps.stop()
    dump_date = max([SAMPLE_DUMP_DATE, *extra_dump_dates])
    result = outputs(load_settings({**overrides, "paths.dump_date": dump_date}, environ=env))
    result["dumps_server_file_requests"] = len(dumps.file_requests())
    result["image_server_requests"] = image_requests.value
    return result


def outputs(settings) -> dict:
    """Where each output of a run is, from the stage summaries the stages left behind."""
    layout = Layout.from_settings(settings)
    summaries = {}
    for stage in ORDER + ["run"]:
        path = layout.summary(stage)
        if exists(path):
            summaries[stage] = read_json(path)
    train = summaries.get("train", {})
    result = {
        "data_root": layout.root,
        "dump_date": layout.dump_date,
        "dumps_dir": settings.paths.dumps_dir,
        "fetched_files": summaries.get("fetch", {}).get("files_downloaded"),
        "ingest": layout.ingest("categories").rsplit("/", 1)[0],
        "graph": layout.category_depth,
        "labels": layout.labels("file_labels"),
        "wit_images": layout.wit_images,
        "image_store": summaries.get("shard", {}).get("image_store"),
        "image_index": layout.image_index,
        "images_downloaded": summaries.get("shard", {}).get("downloaded"),
        "predictions": layout.predictions,
        "report": summaries.get("report", {}).get("report", layout.reports),
        "mlflow_tracking_uri": settings.mlflow_uri,
        "mlflow_run_id": train.get("run_id"),
        "model_uri": train.get("model_uri"),
        "test_macro_auc_pr": train.get("test_macro_auc_pr"),
        "test_mean_prevalence": train.get("test_mean_prevalence"),
        "beats_chance": train.get("beats_chance"),
        "airflow_home": str(Path(settings.paths.state_dir).resolve() / "airflow"),
    }
    width = max(map(len, result))
    print("\nwiki-image-topics demo outputs:")
    for key, value in result.items():
        print(f"  {key:<{width}}  {value}")
    return result
