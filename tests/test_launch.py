"""Stages as the DAG launches them: a killed task leaves no process behind, a retry gives the same
output, and a stage whose recorded inputs did not change does no work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import PROJECT_ROOT, load_settings
from pipeline.lake.layout import Layout
from pipeline.orchestration import lineage
from pipeline.orchestration.runner import StageFailed, launch

DATE = "20260101"


def _group(pgid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live process of process group ``pgid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] != "Z" and int(fields[2]) == pgid:
                out.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except (OSError, ValueError):
            continue
    return out


def _wait_for_jvm(pgid: int, timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        jvms = [pid for pid, cmd in _group(pgid) if "java" in cmd]
        if jvms:
            return jvms[0]
        time.sleep(0.2)
    raise AssertionError(f"no Spark JVM appeared in process group {pgid}")


def _gone(pgid: int, timeout: float = 30) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not _group(pgid):
            return True
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    from devtools.sample.generator import generate_sample

    root = tmp_path_factory.mktemp("launch")
    generate_sample(str(root / "sample"), seed=5, images=60, categories=300, dump_date=DATE, with_images=False)
    env = {"DUMPS_DIR": str(root / "sample" / "dumps"), "WIT_DIR": str(root / "sample" / "wit"),
           "DUMPS_URL": "", "WIT_URL": "", "STATE_DIR": str(root / "state"), "SPARK_MASTER": "local[1]"}
    return root, env


def _overrides(root: Path, name: str, **extra) -> dict[str, str]:
    return {"paths.data_root": str(root / name), "paths.dump_date": DATE, **extra}


def _tables(root: Path, name: str) -> dict[str, pd.DataFrame]:
    layout = Layout.from_settings(load_settings(_overrides(root, name), environ={}))
    return {t: pd.read_parquet(layout.ingest(t)).sort_values(list(pd.read_parquet(layout.ingest(t)).columns))
            .reset_index(drop=True) for t in ("categories", "category_edges", "file_links")}


@pytest.fixture(scope="module")
def clean(lake):
    """One uninterrupted ingest (the lineage test's first run, later changed there) and its tables as read then."""
    root, env = lake
    summary = launch("ingest", _overrides(root, "clean"), env=env)
    assert summary["stage"] == "ingest" and not summary["skipped"]  # read from the summary file
    return summary, _tables(root, "clean")


def test_killing_a_task_kills_the_stage_group_and_a_retry_gives_the_same_output(lake, clean):
    from pipeline.orchestration.operator import StageOperator

    root, env = lake

    op = StageOperator(task_id="ingest", stage="ingest", dump_date=DATE)
    started, failure = threading.Event(), []

    def run():
        try:
            launch("ingest", _overrides(root, "killed"), env=env,
                   on_start=lambda proc: (op._started(proc), started.set()))
        except StageFailed as e:
            failure.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    assert started.wait(60)
    pgid = op._proc.pid
    jvm = _wait_for_jvm(pgid)
    op.on_kill()  # what Airflow calls when the task is terminated or times out
    worker.join(60)
    assert failure and "exited" in str(failure[0])
    assert _gone(pgid), _group(pgid)
    assert not Path(f"/proc/{jvm}").exists() or "Z" in Path(f"/proc/{jvm}/stat").read_text().split()[2]

    retry = launch("ingest", _overrides(root, "killed"), env=env)
    assert not retry["skipped"]
    for table, frame in clean[1].items():
        pd.testing.assert_frame_equal(_tables(root, "killed")[table], frame, obj=table)


def test_a_sigkilled_launcher_takes_its_stage_along(lake):
    root, env = lake
    code = ("import sys; from pipeline.orchestration.runner import launch; "
            f"launch('ingest', {{'paths.data_root': {str(root / 'orphan')!r}, 'paths.dump_date': '{DATE}'}}, "
            "on_start=lambda p: print('PGID', p.pid, flush=True))")
    launcher = subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT_ROOT, env={**os.environ, **env},
                                stdout=subprocess.PIPE, text=True)
    pgid = None
    for line in launcher.stdout:
        if line.startswith("PGID"):
            pgid = int(line.split()[1])
            break
    assert pgid
    _wait_for_jvm(pgid)
    launcher.send_signal(signal.SIGKILL)  # the OOM killer, a lost worker: no on_kill runs
    launcher.wait()
    assert _gone(pgid, timeout=60), _group(pgid)


def test_an_unchanged_stage_is_skipped_and_a_changed_input_reruns_it(lake, clean):
    root, env = lake
    overrides = _overrides(root, "clean")
    first = clean[0]
    graph = launch("graph", overrides, env=env)
    assert not graph["skipped"]
    again = launch("ingest", overrides, env=env)
    assert again["skipped"] and again["fingerprint"] == first["fingerprint"]
    assert "same inputs" in again["skip_reason"] and again["finished_at"] == first["finished_at"]
    forced = launch("ingest", overrides, env=env, force=True)
    assert not forced["skipped"] and forced["fingerprint"] == first["fingerprint"]
    assert launch("graph", overrides, env=env)["skipped"]  # same upstream fingerprint: nothing to redo

    # a setting ingest depends on changes: ingest reruns, and graph, whose input it is, after it
    changed = {**overrides, "spark.max_reject_share": "0.001"}
    settings = load_settings(changed, environ=env)
    record, why = lineage.fresh(settings, "ingest")
    assert record is None and "settings" in why
    rerun = launch("ingest", changed, env=env)
    assert not rerun["skipped"] and rerun["fingerprint"] != first["fingerprint"]
    record, why = lineage.fresh(settings, "graph")
    assert record is None and "upstream" in why
    # a setting graph does not depend on (the download politeness) changes nothing
    polite = load_settings({**changed, "shard.per_host_concurrency": "1"}, environ=env)
    assert lineage.fingerprint(polite, "graph") == lineage.fingerprint(settings, "graph")
    # output deleted by hand: the record no longer stands for it
    import shutil

    shutil.rmtree(Layout.from_settings(settings).ingest("categories"))
    record, why = lineage.fresh(settings, "ingest")
    assert record is None and "is gone" in why
