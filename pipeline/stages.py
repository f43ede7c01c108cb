"""The registry of pipeline stages: name -> entry point, and how to launch one.

The CLI dispatches through STAGES; the Airflow DAG launches each stage as its own
process (`python -m pipeline <stage>`) through ``launch``, as spark-submit would,
so the JVM and TensorFlow memory of one stage is freed before the next, and the
only thing that travels between tasks is the stage's small JSON summary.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The Airflow pool and queue of the stages that want the GPU (train, infer).
GPU_POOL = os.environ.get("WIKI_TOPICS_GPU_POOL", "gpu")
GPU_QUEUE = os.environ.get("WIKI_TOPICS_GPU_QUEUE", "gpu")
GPU_STAGES = ("train", "infer")


@dataclass(frozen=True)
class Stage:
    name: str
    entry: str  # "module:function", called with Settings, returns a summary dict
    help: str
    # train and report open MLflow runs of their own; the others get one from the CLI.
    own_mlflow_run: bool = False
    # Longer text for `python -m pipeline <stage> --help`.
    doc: str = ""
    # "module:function" giving inputs of the output beyond settings and upstream (infer: the model version).
    extra_inputs: str = ""

    def load(self, entry: str | None = None):
        module, func = (entry or self.entry).split(":")
        return getattr(importlib.import_module(module), func)

    def lineage_inputs(self, settings) -> dict:
        return self.load(self.extra_inputs)(settings) if self.extra_inputs else {}


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
        Stage("infer", "spark_jobs.batch_inference:run", "topic distributions for all images",
              extra_inputs="spark_jobs.batch_inference:model_inputs"),
        Stage("report", "spark_jobs.data_study:run", "HTML data-study report, logged to MLflow", True),
    ]
}

ORDER = list(STAGES)


class StageFailed(RuntimeError):
    pass


# Seconds a stage gets to exit after SIGTERM (Spark and MLflow close cleanly) before SIGKILL.
TERM_GRACE_S = 20.0


PARENT_ENV = "PIPELINE_PARENT_PID"


def die_with_parent() -> None:
    """Called first by a launched stage: SIGTERM it when its launcher dies, even by SIGKILL (Linux).

    Done in the stage rather than in a ``preexec_fn``, which is unsafe in the
    threaded Airflow task process; a launcher that died before the call is
    caught by comparing the parent pid.
    """
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(parent):
        os.kill(os.getpid(), signal.SIGTERM)


def kill_group(proc: subprocess.Popen, grace_s: float = TERM_GRACE_S) -> None:
    """SIGTERM the stage's whole process group (its Spark JVM, loader workers), SIGKILL what outlives grace_s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    # The leader may be gone while children of its group still run: the group id outlives it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def launch(stage: str, overrides: dict[str, str] | None = None, env: dict | None = None,
           force: bool = False, on_start=None) -> dict:
    """Run ``python -m pipeline <stage>`` in its own process group and return its summary.

    The stage writes its summary to a file named by ``--summary-file``; that
    file, not stdout, is what comes back. Output streams through to the
    caller's log. However the caller ends (an exception such as Airflow's
    timeout or termination, or SIGKILL via the child's parent-death signal),
    the stage's whole process group is terminated, so no orphaned Spark or
    training process races a retry (``die_with_parent`` covers a SIGKILLed
    launcher). ``on_start(proc)`` is called once the
    process runs (the Airflow operator keeps it for ``on_kill``). A non-zero
    exit raises StageFailed with the stage's last error line. ``force``
    runs the stage even when its recorded fingerprint says it is up to date.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(ORDER)}")
    with tempfile.TemporaryDirectory(prefix=f"stage-{stage}-") as tmp:
        summary_file = os.path.join(tmp, "summary.json")
        cmd = [sys.executable, "-m", "pipeline", stage, "--summary-file", summary_file, *(["--force"] if force else [])]
        for key, value in sorted((overrides or {}).items()):
            cmd += ["--set", f"{key}={value}"]
        proc_env = {**os.environ, **(env or {})}
        proc_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), proc_env.get("PYTHONPATH")]))
        proc_env[PARENT_ENV] = str(os.getpid())
        proc = subprocess.Popen(
            cmd, cwd=proc_env.get("PIPELINE_CWD", str(PROJECT_ROOT)), env=proc_env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True,
        )
        lines: list[str] = []
        try:
            if on_start is not None:
                on_start(proc)
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                lines = (lines + [line.rstrip("\n")])[-50:]
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                kill_group(proc)
        if rc != 0:
            errors = [ln for ln in lines if ln.startswith("error:")]
            raise StageFailed(f"stage {stage} exited {rc}: {errors[-1] if errors else lines[-1:]}")
        try:
            with open(summary_file, encoding="utf-8") as f:
                summary = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise StageFailed(f"stage {stage} exited 0 but left no summary in {summary_file}: {e}") from e
    return summary
