"""How a stage runs: in a process of its own, skipped when its output is up to date, recorded.

The Airflow DAG launches each stage as its own process (``launch``, which runs
``python -m pipeline <stage>``), as spark-submit would, so the JVM and
TensorFlow memory of one stage is freed before the next, and the only thing
that travels between tasks is the stage's small JSON summary. In that process
``run_stage`` calls the stage's entry point unless its recorded fingerprint
says its output is up to date, and records the summary with its lineage.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from pipeline.config import PROJECT_ROOT
from pipeline.lake.atomic import write_json
from pipeline.lake.layout import Layout
from pipeline.orchestration import lineage
from pipeline.orchestration.stages import ORDER, STAGES


def run_stage(command: str, settings, force: bool = False, started: float | None = None) -> dict:
    """Run one stage unless its recorded fingerprint says its output is up to date; record the summary."""
    started = time.time() if started is None else started
    stage = STAGES[command]
    extra = stage.lineage_inputs(settings)
    if not stage.verifies_itself and not force:
        record, why = lineage.fresh(settings, command, extra)
        if record is not None:
            print(f"{command}: skipped: {why}; --force runs it anyway", flush=True)
            return {**record, "skipped": True, "skip_reason": why, "seconds": round(time.time() - started, 1)}
        print(f"{command}: running: {why}", flush=True)
    summary = stage.load()(settings)
    summary = {"stage": command, "seconds": round(time.time() - started, 1), **summary}
    if summary.get("dump_date"):  # fetch resolved `latest` itself: file the summary under that date
        settings.paths.dump_date = summary["dump_date"]
    summary.update(lineage.stamp(settings, command, summary, extra))
    summary["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    summary["skipped"] = False
    layout = Layout.from_settings(settings)
    if not stage.own_mlflow_run:
        from pipeline.orchestration import tracking

        summary["mlflow_run_id"] = tracking.log_stage(settings, command, summary, stage.artifacts(layout) or None)
    write_json(layout.summary(command), summary)
    return summary


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
