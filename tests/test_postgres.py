"""The deployment's database path: Airflow's metadata DB and MLflow's backend store on a real,
throwaway PostgreSQL server (Debian's postgresql package), started and stopped here on loopback.

Airflow: `airflow db migrate`, then a scheduler, DAG processor and API server with LocalExecutor run
a DAG whose two tasks must overlap in time, which SQLite cannot do. The DAG is a small probe
written here, not wiki_topics (whose stages the end-to-end test runs). MLflow: tracking, the model
registry, aliases and the champion gate, against the same server.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
PROBE_DAG = '''
import time
from pathlib import Path
import pendulum
from airflow.sdk import dag, task

@dag(dag_id="pg_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def pg_probe():
    @task
    def hold(name: str):
        out = Path(__file__).with_name(name)
        out.write_text(f"{time.time()}\\n")
        time.sleep(8)
        out.write_text(out.read_text() + f"{time.time()}\\n")

    hold.override(task_id="left")("left.txt")
    hold.override(task_id="right")("right.txt")

pg_probe()
'''


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """(port, {user: password}) of a fresh PostgreSQL server with databases airflow and mlflow."""
    pg = _pg_bin()
    if pg is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine: "
                    "`apt-get install postgresql` (Debian) to run this test")
    # Not under pytest's temp folder: the server's user may not enter root's (mode 700).
    root = Path(tempfile.mkdtemp(prefix="wiki-topics-pg-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        as_postgres = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    data, sock = root / "data", root
    passwords = {u: secrets.token_hex(16) for u in ("postgres", "airflow", "mlflow")}
    pwfile = root / "pw"
    pwfile.write_text(passwords["postgres"] + "\n")
    if as_postgres:
        shutil.chown(pwfile, "postgres")
    init = subprocess.run([*as_postgres, str(pg / "initdb"), "-D", str(data), "-U", "postgres",
                           "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8"],
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    port = _free_port()
    subprocess.run([*as_postgres, str(pg / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60",
                    "-o", f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sock} "
                          "-c max_connections=200", "start"], check=True, capture_output=True, timeout=120)
    try:
        import psycopg2

        admin = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", password=passwords["postgres"],
                                 dbname="postgres")
        admin.autocommit = True
        with admin.cursor() as cur:
            for user in ("airflow", "mlflow"):
                cur.execute(f"CREATE USER {user} WITH PASSWORD %s", (passwords[user],))
                cur.execute(f"CREATE DATABASE {user} OWNER {user}")
        admin.close()
        yield port, passwords
    finally:
        subprocess.run([*as_postgres, str(pg / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def _airflow_env(tmp_path: Path, port: int, password: str, api_port: int) -> dict[str, str]:
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "pg_probe.py").write_text(PROBE_DAG)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://airflow:{password}@127.0.0.1:{port}/airflow",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
    }


def test_airflow_on_postgres_runs_tasks_in_parallel_with_local_executor(postgres, tmp_path):
    import psycopg2

    port, passwords = postgres
    api_port = _free_port()
    env = _airflow_env(tmp_path, port, passwords["airflow"], api_port)
    migrate = subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True,
                             timeout=600)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    logs = tmp_path / "component-logs"
    logs.mkdir()
    procs = [subprocess.Popen([str(BIN / "airflow"), *cmd], env=env, stdout=open(logs / f"{cmd[0]}.log", "w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
             for cmd in (["api-server", "--port", str(api_port)], ["scheduler"], ["dag-processor"])]
    db = psycopg2.connect(host="127.0.0.1", port=port, user="airflow", password=passwords["airflow"],
                          dbname="airflow")
    db.autocommit = True

    def query(sql, *args):
        with db.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()

    def wait(condition, what, timeout=240):
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert all(p.poll() is None for p in procs), \
                {p.args[1]: (logs / f"{p.args[1]}.log").read_text()[-2000:] for p in procs if p.poll() is not None}
            if condition():
                return
            time.sleep(1)
        tails = {p.args[1]: (logs / f"{p.args[1]}.log").read_text()[-1500:] for p in procs}
        raise AssertionError(f"timed out waiting for {what}: {tails}")

    try:
        wait(lambda: query("SELECT 1 FROM dag WHERE dag_id = 'pg_probe'"), "the DAG to be parsed")
        for cmd in (["dags", "unpause", "pg_probe"], ["dags", "trigger", "pg_probe"]):
            out = subprocess.run([str(BIN / "airflow"), *cmd], env=env, capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stderr[-2000:]
        wait(lambda: query("SELECT state FROM dag_run WHERE dag_id = 'pg_probe'")[0][0] in ("success", "failed"),
             "the DAG run to finish")
        assert query("SELECT state FROM dag_run WHERE dag_id = 'pg_probe'")[0][0] == "success"
        states = dict(query("SELECT task_id, state FROM task_instance WHERE dag_id = 'pg_probe'"))
        assert states == {"left": "success", "right": "success"}
        dags = Path(env["AIRFLOW__CORE__DAGS_FOLDER"])
        spans = {n: [float(x) for x in (dags / f"{n}.txt").read_text().split()] for n in ("left", "right")}
        # the two tasks ran at the same time: each started before the other ended
        assert spans["left"][0] < spans["right"][1] and spans["right"][0] < spans["left"][1], spans
    finally:
        db.close()
        for p in procs:
            try:
                os.killpg(p.pid, 15)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
                p.wait()


def test_mlflow_tracking_registry_and_champion_gate_on_postgres(postgres, tmp_path):
    import mlflow

    from pipeline.config import load_settings
    from pipeline.orchestration import tracking
    from tests.test_registry import _finished_run, _scored
    from training import registry

    port, passwords = postgres
    uri = f"postgresql+psycopg2://mlflow:{passwords['mlflow']}@127.0.0.1:{port}/mlflow"
    settings = load_settings({"tracking.tracking_uri": uri, "paths.state_dir": str(tmp_path / "state")}, environ={})
    try:
        tracking.configure(settings)
        fp = registry.test_fingerprint(["a", "b"])
        first = registry.register_and_promote(settings, *_finished_run(0.5), 0.5, fp, None)
        assert first["promoted"] and first["champion_uri"] == "models:/wiki-image-topics-v1.3/1"
        worse = registry.register_and_promote(settings, *_finished_run(0.4), 0.4, fp, _scored(settings, 0.5, fp))
        assert not worse["promoted"]
        better = registry.register_and_promote(settings, *_finished_run(0.6), 0.6, fp, _scored(settings, 0.5, fp))
        assert better["promoted"]
        c = tracking.client(settings)
        aliases = c.get_registered_model("wiki-image-topics-v1.3").aliases
        assert {a: str(v) for a, v in aliases.items()} == {"champion": "3", "challenger": "3"}
        # the store really is this server: the runs are in its tables
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=port, user="mlflow", password=passwords["mlflow"],
                               dbname="mlflow")
        with con.cursor() as cur:
            cur.execute("SELECT count(*) FROM runs")
            assert cur.fetchone()[0] == 3
            cur.execute("SELECT version FROM model_versions WHERE name = 'wiki-image-topics-v1.3' ORDER BY version")
            assert [v for (v,) in cur.fetchall()] == [1, 2, 3]
        con.close()
    finally:
        mlflow.set_tracking_uri("")
