"""The registry of pipeline stages: name -> entry point, and how to launch one.

The CLI dispatches through STAGES; the Airflow DAG launches each stage as its own
process (`python -m pipeline <stage>`) through ``launch``, as spark-submit would,
so the JVM and TensorFlow memory of one stage is freed before the next, and the
only thing that travels between tasks is the stage's one-line JSON summary.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Stage:
    name: str
    entry: str  # "module:function", called with Settings, returns a summary dict
    help: str
    # train and report open MLflow runs of their own; the others get one from the CLI.
    own_mlflow_run: bool = False
    # Longer text for `python -m pipeline <stage> --help`.
    doc: str = ""

    def load(self):
        module, func = self.entry.split(":")
        return getattr(importlib.import_module(module), func)


FETCH_DOC = """\
Resolves the dump date (--dump-date YYYYMMDD, or `latest`: the newest date on
<fetch.dumps_url>/<wiki>/ whose dumpstatus.json says every needed job is done;
dates in progress or failed are skipped) and downloads its tables into
paths.dumps_dir, then the WIT files (fetch.wit_files from fetch.wit_url) into
paths.wit_dir. Each file is written as <name>.part, resumed with HTTP Range
after a dropped connection, and renamed only when its size and sha1 (or md5)
match; WIT files must be complete gzip streams of the announced length. Files
already verified are not downloaded again. At most fetch.connections
connections, USER_AGENT on every request, Retry-After honoured.
Settings: fetch.dumps_url (DUMPS_URL), fetch.wit_url (WIT_URL),
fetch.wit_files (WIT_FILES), fetch.categorylinks_layout, fetch.connections,
fetch.keep_dumps (KEEP_DUMPS); `python -m pipeline config` lists them all."""

STAGES = {
    s.name: s
    for s in [
        Stage("fetch", "pipeline.fetch:run", "find a complete Commons dump, download and verify it and WIT",
              doc=FETCH_DOC),
        Stage("ingest", "spark_jobs.ingest_dumps:run", "parse Commons SQL dumps into Parquet tables"),
        Stage("graph", "spark_jobs.category_graph:run", "category depth by BFS from CommonsRoot"),
        Stage("label", "spark_jobs.label_topics:run", "topic labels for categories and files"),
        Stage("wit", "spark_jobs.wit_images:run", "English Commons images of WIT, one row per image, split"),
        Stage("shard", "spark_jobs.shard_images:run", "download, resize and write WebDataset shards"),
        Stage("train", "training.train:run", "train the classifier, log and register it in MLflow", True),
        Stage("infer", "spark_jobs.batch_inference:run", "topic distributions for all images"),
        Stage("report", "spark_jobs.data_study:run", "HTML data-study report, logged to MLflow", True),
    ]
}

ORDER = list(STAGES)


class StageFailed(RuntimeError):
    pass


def launch(stage: str, overrides: dict[str, str] | None = None, env: dict | None = None) -> dict:
    """Run ``python -m pipeline <stage>`` in a subprocess and return its JSON summary.

    Output streams through to the caller's log; a non-zero exit raises
    StageFailed with the stage's last error line.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(ORDER)}")
    cmd = [sys.executable, "-m", "pipeline", stage]
    for key, value in sorted((overrides or {}).items()):
        cmd += ["--set", f"{key}={value}"]
    proc_env = {**os.environ, **(env or {})}
    proc_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), proc_env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        cmd, cwd=proc_env.get("PIPELINE_CWD", str(PROJECT_ROOT)), env=proc_env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
    )
    summary, lines = None, []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        lines = (lines + [line.rstrip("\n")])[-50:]
        if line.startswith("{"):
            try:
                summary = json.loads(line)
            except json.JSONDecodeError:
                pass
    rc = proc.wait()
    if rc != 0:
        errors = [ln for ln in lines if ln.startswith("error:")]
        raise StageFailed(f"stage {stage} exited {rc}: {errors[-1] if errors else lines[-1:]}")
    if not isinstance(summary, dict):
        raise StageFailed(f"stage {stage} printed no JSON summary line; last lines: {lines[-3:]}")
    return summary
