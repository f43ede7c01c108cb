"""`make demo`: the whole Airflow DAG on the bundled sample, with embedded defaults.

Generates the sample (real dump and WIT formats) and serves it as the real
publishers do: its dumps as a local dumps.wikimedia.org (directory listing,
``dumpstatus.json``, checksum files, and a newer run still in progress), its
WIT TSVs as WIT's bucket, and its images as a local mirror of
upload.wikimedia.org, so the run goes through ``fetch`` and the real download
path like a nightly run. Points Airflow (SQLite metadata DB, LocalExecutor)
and MLflow (SQLite) at the state folder, creates the GPU pool, runs
``airflow dags test wiki_topics`` for today's logical date and prints where
each output is. ``--runs 3`` runs three nights instead: the first dump, a
second dump of the same wiki (files recategorized, new images in a new WIT
file), and that dump again, and prints what each night did.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pipeline.config import PROJECT_ROOT, load_settings
from pipeline.lake.atomic import exists, read_json
from pipeline.lake.layout import Layout
from pipeline.orchestration.stages import GPU_POOL, ORDER

SAMPLE_DUMP_DATE = "20260101"
# The nightly demo's second dump of the same wiki (some files recategorized, new images).
SECOND_DUMP_DATE = "20260301"
# A newer run the demo's dumps server shows as still in progress: fetch must skip it.
IN_PROGRESS_DUMP_DATE = "20260115"
# C1 alone shrinks the JVM's code cache to 48 MB, which a long-lived driver (a test session's) fills:
# "Out of space in CodeCache for adapters" then breaks the JVM. 240 MB is the full JVM's default.
SMALL_DATA_JVM = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m -XX:+UseSerialGC"
# Offline machine: no ImageNet download. A few thousand images from scratch on a CPU learn best with
# small batches, a higher rate and faster BatchNorm statistics; at 32 px an epoch costs a quarter of
# 64 px, so 10 of them fit the demo's 10 minutes and score better than 8 at 64 px (measured:
# docs/benchmarks.md). The sample's shapes fill half an image, so 32 px still shows them; real photos
# want the default 64 or more. Each is overridden by the same variable in the environment.
TRAINING_ENV = {"WEIGHTS": "none", "IMAGE_SIZE": "32", "EPOCHS": "10", "BATCH_SIZE": "32",
                "LEARNING_RATE": "0.002", "BN_MOMENTUM": "0.9"}
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


INPUT_MODES = ("image", "text", "image+text")


def training_env(epochs: int | None = None, environ=os.environ) -> dict[str, str]:
    """The demo's training settings as the stage processes get them: ``TRAINING_ENV``, where the
    environment does not set them, and ``epochs`` when given."""
    env = {k: environ.get(k, v) for k, v in TRAINING_ENV.items()}
    if epochs:
        env["EPOCHS"] = str(epochs)
    return env


def _stage(args: list[str], env: dict[str, str]) -> None:
    """One stage through the project's CLI, as the DAG's tasks run it."""
    cmd = [sys.executable, "-m", "pipeline", *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, env=env, check=True, cwd=str(PROJECT_ROOT))


def _airflow(args: list[str], env: dict[str, str]) -> None:
    cmd = [str(Path(sys.executable).parent / "airflow"), *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, env=env, check=True)


@dataclass(frozen=True)
class Night:
    """One nightly DAG run of the demo: the logical date, and the sample revision the publishers show."""

    logical_date: str
    revision: int


def nights(runs: int, logical_date: str | None = None) -> list[Night]:
    """``runs`` = 1: tonight, on the sample's dump. More: night 1 on the first dump, night 2 on a second
    dump of the same wiki (files recategorized, new images), later nights on that dump again."""
    if runs < 1:
        raise ValueError(f"--runs must be at least 1, not {runs}")
    if runs == 1:
        return [Night(logical_date or datetime.now(timezone.utc).strftime("%Y-%m-%d"), 0)]
    first = Night("2026-01-02", 0)
    return [first] + [Night(f"2026-03-{1 + n:02d}", 1) for n in range(1, runs)]


def _sample(sample_dir: Path, images: int, categories: int, seed: int, dump_date: str, revision: int) -> None:
    from devtools.sample import generator

    marker = sample_dir / "sample.json"
    wanted = {"images": images, "categories": categories, "seed": seed, "dump_date": dump_date,
              "revision": revision}
    if not (marker.exists() and json.loads(marker.read_text()).get("args") == wanted):
        summary = generator.generate_sample(str(sample_dir), seed=seed, images=images, categories=categories,
                                            dump_date=dump_date, revision=revision)
        marker.write_text(json.dumps({"args": wanted, "summary": summary}, default=str))


def run_demo(
    overrides: dict[str, str] | None = None,
    images: int = 3000,
    categories: int = 2000,
    seed: int = 0,
    epochs: int | None = None,
    logical_date: str | None = None,
    runs: int = 1,
    spark_cluster: bool = False,
    compare_inputs: bool = False,
) -> dict:
    """Run the DAG for each night of ``nights(runs)``; the last night's outputs, with a ``nights`` table.

    ``spark_cluster``: the Spark stages run on a standalone cluster (a master and two workers on
    127.0.0.1, ``devtools.spark_cluster``) started for the demo, instead of ``local[*]``.
    ``compare_inputs``: after the last night, the train stage again for each other ``train.inputs``
    (same dump, labels and split; the champion gate sees each), then the report again, whose
    section "What the words add" compares the three. The predictions stay the night's.
    """
    if spark_cluster:
        from devtools.spark_cluster import StandaloneCluster

        if "spark.master" in (overrides or {}):
            raise ValueError("--spark-cluster starts its own cluster; drop --spark-master / spark.master")
        folder = Path(load_settings(overrides).paths.state_dir).resolve() / "spark-cluster"
        with StandaloneCluster(str(folder), workers=2) as cluster:
            print(f"Spark standalone cluster at {cluster.master_url} (logs under {folder})", flush=True)
            return run_demo({**(overrides or {}), "spark.master": cluster.master_url}, images, categories,
                            seed, epochs, logical_date, runs, compare_inputs=compare_inputs)
    from devtools.sample import dumps_server, server

    overrides = dict(overrides or {})
    settings = load_settings(overrides)
    data_root = Path(settings.paths.data_root).resolve()
    state_dir = Path(settings.paths.state_dir).resolve()
    plan = nights(runs, logical_date)
    samples = {0: (data_root / "sample", SAMPLE_DUMP_DATE), 1: (data_root / "sample-next", SECOND_DUMP_DATE)}
    used = sorted({n.revision for n in plan})
    for revision in used:
        _sample(samples[revision][0], images, categories, seed, samples[revision][1], revision)

    env = {
        **os.environ,
        **airflow_env(str(state_dir)),
        "DATA_ROOT": str(data_root),
        "STATE_DIR": str(state_dir),
        # fetch downloads into these, from the local publishers
        "DUMPS_DIR": str(data_root / "dumps"),
        "WIT_DIR": str(data_root / "wit"),
        "DUMP_DATE": SAMPLE_DUMP_DATE,
        "USER_AGENT": DEMO_USER_AGENT,
        **training_env(epochs),
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
    _airflow(["db", "migrate"], env)
    _airflow(["pools", "set", GPU_POOL, "1", "train and infer: one GPU"], env)
    results = []
    for number, night in enumerate(plan, 1):
        sample_dir = samples[night.revision][0]
        dump_dirs = [samples[r][0] / "dumps" for r in used if r <= night.revision]
        published = dumps_server.publish(dump_dirs, sample_dir / "wit", data_root / "published",
                                         in_progress_date=IN_PROGRESS_DUMP_DATE)
        dumps = dumps_server.DumpsServer(data_root / "published").start()
        image_requests = server.RequestCount()
        base_url, stop = server.serve(str(sample_dir / "images"), count=image_requests)
        night_env = {**env, "DUMPS_URL": dumps.url, "WIT_URL": f"{dumps.url}/{dumps_server.WIT_PATH}/",
                     "WIT_FILES": ",".join(published["wit_files"]), "WIKI_MIRROR_URL": base_url}
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            # No dump_date param: the logical date picks the newest complete dump, as a nightly run does.
            _airflow(["dags", "test", "wiki_topics", night.logical_date], night_env)
        finally:
            stop()
            dumps.stop()
        dump_date = max(d for d in published["dates"] if d <= night.logical_date.replace("-", ""))
        result = outputs(load_settings({**overrides, "paths.dump_date": dump_date}, environ=night_env))
        result.update(night=number, logical_date=night.logical_date, **_night_row(result, started),
                      dumps_server_file_requests=len(dumps.file_requests()),
                      image_server_requests=image_requests.value)
        results.append(result)
    if compare_inputs:
        last = results[-1]
        done = load_settings(overrides, environ={**env, "DUMP_DATE": last["dump_date"]}).train.inputs
        stage_env = {**env, "DUMP_DATE": last["dump_date"]}
        for mode in [m for m in INPUT_MODES if m != done]:
            _stage(["train", "--force", "--set", f"train.inputs={mode}"], stage_env)
        _stage(["report", "--force"], stage_env)
        # the outputs as they are now; the night's row still says what the night did
        now = outputs(load_settings({**overrides, "paths.dump_date": last["dump_date"]}, environ=stage_env))
        results[-1] = {**now, **{k: last[k] for k in NIGHT_COLUMNS}}
    table = [{k: r[k] for k in NIGHT_COLUMNS} for r in results]
    if runs > 1:
        print_nights(table)
    last = results[-1]
    report = last["summaries"].get("report", {})
    print(f"\nreport: {last['report']}")
    for line in report.get("summary_lines", []):
        print(f"  {line}")
    return {**last, "nights": table, "night_outputs": results[:-1],
            "report_summary": report.get("summary_lines")}


NIGHT_COLUMNS = ("night", "logical_date", "dump_date", "images_downloaded", "images_embedded", "stages_run",
                 "stages_skipped", "train_mode", "challenger_auc_pr", "champion_auc_pr", "promoted", "reason")


def _night_row(result: dict, started: str) -> dict:
    """What one night did, from the summaries the stages recorded: a stage ran tonight when its
    record finished after the night began (a skipped stage keeps its earlier record)."""
    summaries = result["summaries"]
    ran = [s for s in ORDER if summaries.get(s, {}).get("finished_at", "") >= started]
    train = summaries.get("train", {}) if "train" in ran else {}
    return {
        "stages_run": ran,
        "stages_skipped": [s for s in ORDER if s not in ran],
        "images_downloaded": summaries.get("shard", {}).get("downloaded", 0) if "shard" in ran else 0,
        "images_embedded": summaries.get("embed", {}).get("images_embedded", 0) if "embed" in ran else 0,
        "train_mode": train.get("train_mode"),
        "challenger_auc_pr": train.get("test_macro_auc_pr"),
        "champion_auc_pr": train.get("champion_auc_pr"),
        "promoted": train.get("promoted"),
        "reason": train.get("promotion_reason") or ("nothing changed: no model trained" if not train else None),
    }


def print_nights(table: list[dict]) -> None:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4f}"
        if isinstance(v, list):
            return ",".join(v) or "-"
        return "-" if v is None else str(v)

    print("\nwiki-image-topics nightly demo:")
    for row in table:
        print(f"  night {row['night']} ({row['logical_date']}, dump {row['dump_date']}): "
              f"{row['images_downloaded']} images downloaded")
        print(f"    stages run:     {fmt(row['stages_run'])}")
        print(f"    stages skipped: {fmt(row['stages_skipped'])}")
        print(f"    test macro AUC(PR) on one split: challenger {fmt(row['challenger_auc_pr'])}, "
              f"champion {fmt(row['champion_auc_pr'])}; champion moved: {fmt(row['promoted'])}")
        print(f"    why: {fmt(row['reason'])}")


def outputs(settings) -> dict:
    """Where each output of a run is, from the stage summaries the stages left behind."""
    layout = Layout.from_settings(settings)
    summaries = {}
    for stage in ORDER:
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
        "summaries": summaries,
    }
    width = max(map(len, result))
    print(f"\nwiki-image-topics demo outputs (dump {layout.dump_date}):")
    for key, value in result.items():
        if key != "summaries":
            print(f"  {key:<{width}}  {value}")
    return result
