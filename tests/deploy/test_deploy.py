"""The docker-compose deployment, brought up for real (`make test-deploy`; not part of `make test`).

As an operator would: the images built (local stand-ins for Docker Hub's where it cannot be reached),
every service but the GPU worker up and healthy on loopback, the sample's publishers serving the
inputs as in `make demo`, a night triggered through Airflow's REST API with a token from the API
server, and its outputs read back: the data tables from the lake volume, compared row for row with
the same stages run outside the stack, and the champion from the MLflow server's REST API.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from tests.deploy import stack as st

pytestmark = pytest.mark.deploy

SAMPLE = {"images": 400, "categories": 600, "seed": 3}
DUMP_DATE = "20260101"
PROJECT = "witdeploy"
AIRFLOW = "http://127.0.0.1:8080"
MLFLOW = "http://127.0.0.1:5000"
# The stage settings of the stack's override file, for the same stages run outside it.
STAGE_ENV = {"WEIGHTS": "none", "IMAGE_SIZE": "32", "EPOCHS": "3", "BATCH_SIZE": "32", "SHARD_SIZE": "500",
             "PER_HOST_CONCURRENCY": "8"}
# The night's data tables, compared row for row with the stages run outside the stack.
TABLES = ["ingest/categories", "ingest/category_edges", "ingest/file_links", "graph/category_depth",
          "labels/v1.3/refined-rules/category_labels", "labels/v1.3/refined-rules/file_labels",
          "wit/v1.3/refined-rules/images"]


LOOPBACK = ("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:")


def listening() -> dict[int, str]:
    """Port -> the address it listens on, for every listening TCP socket of this machine (`ss -ltn`)."""
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    return {int(line.split()[3].rsplit(":", 1)[1]): line.split()[3] for line in out.splitlines()}


def http(method: str, url: str, body=None, headers: dict | None = None, timeout: float = 60):
    """(status, parsed JSON or text) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        **({"Content-Type": "application/json"} if data else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


class Airflow:
    """Airflow's REST API as an operator uses it: a token from the API server, then /api/v2."""

    def __init__(self, password: str):
        status, body = http("POST", f"{AIRFLOW}/auth/token", {"username": "admin", "password": password})
        assert status in (200, 201), (status, body)
        self.headers = {"Authorization": f"Bearer {body['access_token']}"}

    def __call__(self, method: str, path: str, body=None):
        status, out = http(method, f"{AIRFLOW}/api/v2{path}", body, self.headers)
        assert status < 300, (method, path, status, out)
        return out

    def trigger(self, conf: dict | None = None) -> str:
        self("PATCH", "/dags/wiki_topics", {"is_paused": False})
        run = self("POST", "/dags/wiki_topics/dagRuns",
                   {"logical_date": datetime.now(timezone.utc).isoformat(), "conf": conf or {}})
        return run["dag_run_id"]

    def tasks(self, run_id: str) -> dict[str, dict]:
        rows = self("GET", f"/dags/wiki_topics/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {r["task_id"]: r for r in rows}

    def wait(self, run_id: str, timeout_s: float, during=None) -> str:
        """The run's final state; ``during(tasks)`` is called at each poll (the fault injector)."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            state = self("GET", f"/dags/wiki_topics/dagRuns/{run_id}")["state"]
            if state in ("success", "failed"):
                return state
            if during:
                during(self.tasks(run_id))
            time.sleep(5)
        return "timed out"

    def log(self, run_id: str, task: str, attempt: int) -> str:
        path = f"/dags/wiki_topics/dagRuns/{run_id}/taskInstances/{task}/logs/{attempt}?full_content=true"
        status, out = http("GET", f"{AIRFLOW}/api/v2{path}", headers={**self.headers, "Accept": "application/json"})
        return json.dumps(out)


@dataclass
class Deployment:
    stack: st.Stack
    secrets: dict
    work: Path
    host_lake: Path
    figures: dict = field(default_factory=dict)
    listening_before: dict = field(default_factory=dict)  # what listened before the stack came up

    def airflow(self) -> Airflow:
        return Airflow(self.secrets["airflow_admin_password"])

    def running_runs(self) -> list[dict]:
        """The MLflow server's runs in state RUNNING, from its REST API."""
        status, experiments = self.mlflow("/api/2.0/mlflow/experiments/search?max_results=100")
        if status != 200:
            return []
        token = base64.b64encode(f"admin:{self.secrets['mlflow_admin_password']}".encode()).decode()
        status, found = http("POST", f"{MLFLOW}/api/2.0/mlflow/runs/search",
                             {"experiment_ids": [e["experiment_id"] for e in experiments["experiments"]],
                              "filter": "attributes.status = 'RUNNING'", "max_results": 100},
                             {"Authorization": f"Basic {token}"})
        assert status == 200, found
        return found.get("runs", [])

    def mlflow(self, path: str, auth: bool = True):
        token = base64.b64encode(f"admin:{self.secrets['mlflow_admin_password']}".encode()).decode()
        return http("GET", f"{MLFLOW}{path}", headers={"Authorization": f"Basic {token}"} if auth else {})

    @property
    def lake(self) -> Path:
        return self.stack.volume_path("lake") / "lake"


def _publish(work: Path):
    """The sample, served as in `make demo`: dumps, WIT and images on loopback."""
    from devtools.sample import dumps_server, generator, server

    sample = work / "sample"
    generator.generate_sample(str(sample), dump_date=DUMP_DATE, **SAMPLE)
    published = dumps_server.publish([sample / "dumps"], sample / "wit", work / "published")
    dumps = dumps_server.DumpsServer(work / "published").start()
    images_url, stop_images = server.serve(str(sample / "images"))
    env = {"DUMPS_URL": dumps.url, "WIT_URL": f"{dumps.url}/{dumps_server.WIT_PATH}/",
           "WIT_FILES": ",".join(published["wit_files"]), "WIKI_MIRROR_URL": images_url}
    return env, lambda: (stop_images(), dumps.stop())


def _stages_outside(work: Path, inputs: dict) -> Path:
    """fetch .. shard as `python -m pipeline <stage>` in local[2], on the same inputs: the reference."""
    from devtools.demo import DEMO_USER_AGENT, SMALL_DATA_JVM

    lake = work / "outside"
    env = {**os.environ, **inputs, **STAGE_ENV, "DATA_ROOT": str(lake / "lake"), "STATE_DIR": str(lake / "state"),
           "DUMPS_DIR": str(lake / "dumps"), "WIT_DIR": str(lake / "wit"), "DUMP_DATE": DUMP_DATE,
           "USER_AGENT": DEMO_USER_AGENT, "SPARK_MASTER": "local[2]", "SPARK_JAVA_OPTIONS": SMALL_DATA_JVM,
           "PYTHONPATH": str(st.ROOT)}
    for stage in ("fetch", "ingest", "graph", "label", "wit", "shard"):
        out = subprocess.run([sys.executable, "-m", "pipeline", stage], env=env, cwd=st.ROOT, capture_output=True,
                             text=True, timeout=1200)
        assert out.returncode == 0, (stage, out.stdout[-3000:], out.stderr[-3000:])
    return lake / "lake"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    from devtools.demo import DEMO_USER_AGENT

    work = tmp_path_factory.mktemp("deploy")
    logs = Path(os.environ.get("DEPLOY_LOGS", work / "logs"))
    logs.mkdir(parents=True, exist_ok=True)
    engine = st.Engine(logs / "dockerd.log").start()
    inputs, stop_publishers = _publish(work)
    stack = None
    try:
        host_lake = _stages_outside(work, inputs)
        figures = {}
        t = time.time()
        images = st.base_images(logs / "standins.log")
        figures["base_images_s"] = round(time.time() - t, 1)
        secrets = st.make_secrets(work / "secrets")
        stack = st.Stack(PROJECT, {**images, **inputs, "SECRETS_DIR": str(work / "secrets"),
                                   "USER_AGENT": DEMO_USER_AGENT}, logs / "compose.log")
        stack.down()  # what an interrupted run left
        before = listening()
        t = time.time()
        stack.compose("build", timeout=3600)
        figures["build_s"] = round(time.time() - t, 1)
        t = time.time()
        stack.compose("up", "-d", "--wait", "--wait-timeout", "900", timeout=1200)
        figures["up_s"] = round(time.time() - t, 1)
        yield Deployment(stack, secrets, work, host_lake, figures, before)
    finally:
        if stack is not None:
            for service in ("airflow-worker", "airflow-scheduler", "airflow-apiserver", "airflow-init", "mlflow",
                            "postgres", "spark-master", "spark-worker", "airflow-dag-processor", "airflow-triggerer"):
                (logs / f"{service}.log").write_text(stack.logs(service))
            if not os.environ.get("DEPLOY_KEEP"):
                stack.down()
        stop_publishers()
        engine.stop()


def _table(path: Path) -> pd.DataFrame:
    return _frame(pd.read_parquet(path))


def _frame(df: pd.DataFrame) -> pd.DataFrame:
    for c in df.columns:  # arrays compare as tuples
        if df[c].map(lambda v: hasattr(v, "__len__") and not isinstance(v, (str, bytes))).any():
            df[c] = df[c].map(lambda v: tuple(v) if v is not None else None)
    return df.sort_values(list(df.columns)).reset_index(drop=True)


def _images(lake: Path) -> tuple[pd.DataFrame, dict]:
    """The run's image index without where each image lies (the store's shards fill in the order
    downloads finish), and each stored image's bytes by key, as a digest."""
    import hashlib

    index = pd.read_parquet(lake / DUMP_DATE / "image_index" / "v1.3" / "refined-rules")
    (store,) = [p for p in (lake / "images").iterdir() if p.is_dir()]  # one store: one image setting
    digests = {}
    for key, shard, offset, size in index.loc[index.status == "ok", ["image_key", "shard", "offset", "size"]].itertuples(index=False):
        with open(store / shard, "rb") as f:
            f.seek(int(offset))
            digests[key] = hashlib.sha256(f.read(int(size))).hexdigest()
    return _frame(index.drop(columns=["shard", "offset"])), digests


def assert_same_outputs(lake: Path, reference: Path) -> None:
    """The night's data tables equal the stages run outside the stack, row for row; the image index too,
    with the same bytes stored for every image (shard and offset aside)."""
    for table in TABLES:
        pd.testing.assert_frame_equal(_table(lake / DUMP_DATE / table), _table(reference / DUMP_DATE / table),
                                      obj=table)
    (index, stored), (want_index, want_stored) = _images(lake), _images(reference)
    pd.testing.assert_frame_equal(index, want_index, obj="image_index")
    assert stored == want_stored and len(stored) > 300


def test_a_night_through_the_stack(deployment, report_metric):
    """Triggered through the REST API, polled to success; its tables equal the stages run outside."""
    af = deployment.airflow()
    t = time.time()
    run_id = af.trigger()
    state = af.wait(run_id, timeout_s=2400)
    deployment.figures["night_s"] = round(time.time() - t, 1)
    tasks = af.tasks(run_id)
    assert state == "success", {k: v["state"] for k, v in tasks.items()}
    assert all(tasks[s]["state"] == "success" for s in ("fetch", "label", "train", "infer", "report"))

    lake = deployment.lake / DUMP_DATE
    assert list((lake / "predictions" / "v1.3" / "refined-rules").glob("*.parquet"))
    assert (lake / "reports" / "v1.3" / "refined-rules" / "report.html").exists()
    assert_same_outputs(deployment.lake, deployment.host_lake)

    # the champion, from the MLflow server's REST API with the admin's credentials
    status, body = deployment.mlflow("/api/2.0/mlflow/registered-models/alias?name=wiki-image-topics-v1.3&alias=champion")
    assert status == 200, body
    version = body["model_version"]
    status, run = deployment.mlflow(f"/api/2.0/mlflow/runs/get?run_id={version['run_id']}")
    assert status == 200 and run["run"]["info"]["status"] == "FINISHED"
    metrics = {m["key"]: m["value"] for m in run["run"]["data"]["metrics"]}
    assert "test_macro_auc_pr" in metrics
    for key, value in deployment.figures.items():
        report_metric(f"deploy: {key}", value)


SERVER = "http://127.0.0.1:8082"


def test_the_model_server_answers_for_the_champion(deployment):
    """The compose file's model server follows the night's champion from the MLflow server: behind its
    token, it gives the night's Parquet for the lake's own images (by bytes and by Commons title)."""
    import numpy as np
    import pyarrow.parquet as pq

    from pipeline.config import load_settings
    from pipeline.inputs.store import read_payload, store_root
    from pipeline.lake.layout import Layout

    token = {"Authorization": f"Bearer {deployment.secrets['model_server_token']}"}
    deadline = time.time() + 180
    while time.time() < deadline and http("GET", f"{SERVER}/v1/models/wiki-image-topics", headers=token)[0] != 200:
        time.sleep(3)
    status, info = http("GET", f"{SERVER}/info", headers=token)
    assert status == 200, info
    _, alias = deployment.mlflow("/api/2.0/mlflow/registered-models/alias?name=wiki-image-topics-v1.3&alias=champion")
    assert (info["model"]["version"], info["model"]["alias"]) == (alias["model_version"]["version"], "champion")

    settings = load_settings({"paths.data_root": str(deployment.lake), "paths.dump_date": DUMP_DATE}, environ={})
    index = pq.read_table(Layout.from_settings(settings).image_index).to_pandas()
    index = index[index["status"] == "ok"].head(16)
    store = store_root(settings)
    images = [base64.b64encode(read_payload(f"{store}/{r.shard}", r.offset, r.size)).decode() for r in index.itertuples()]
    predicted = pd.read_parquet(deployment.lake / DUMP_DATE / "predictions" / "v1.3" / "refined-rules")
    predicted = predicted.set_index("image_key").loc[index["image_key"]]
    slugs = [label["slug"] for label in info["labels"]]
    names = [label["name"] for label in info["labels"]]
    for instances in ([{"image": b} for b in images], [{"title": t} for t in index["file_title"]]):
        status, out = http("POST", f"{SERVER}/v1/models/wiki-image-topics:predict", {"instances": instances}, token)
        assert status == 200, out
        served = np.array([[p["probabilities"][n] for n in names] for p in out["predictions"]])
        # 1e-5: the image tower's fp16 rounding shows batch composition at about 1e-6 (tests/serving)
        np.testing.assert_allclose(served, predicted[[f"p_{s}" for s in slugs]].to_numpy(), atol=1e-5, rtol=0)
    assert http("POST", f"{SERVER}/v1/models/wiki-image-topics:predict", {"instances": instances})[0] == 401
    assert http("GET", f"{SERVER}/")[0] == 200  # the page is open; it asks for the token


def test_security_on_the_live_stack(deployment):
    """Without credentials MLflow and Airflow's API refuse; nothing listens beyond loopback; no secret in
    any container's configuration or image layer; the Airflow services run as a non-root user."""
    status, _ = deployment.mlflow("/api/2.0/mlflow/experiments/search?max_results=1", auth=False)
    assert status == 401
    assert http("GET", f"{AIRFLOW}/api/v2/dags")[0] == 401
    assert http("POST", f"{AIRFLOW}/auth/token", {"username": "admin", "password": "wrong"})[0] == 401

    ports = listening()
    for port in (5432, 6379, 5000, 8080, 7077, 8974, 8082):
        assert port in ports, port
    opened = {p: a for p, a in ports.items() if p not in deployment.listening_before}
    assert not [a for a in opened.values() if not a.startswith(LOOPBACK)], opened

    secrets = [v for v in deployment.secrets.values()]
    containers = [c["Name"] for c in deployment.stack.containers()]
    inspected = st.sh(["docker", "inspect", *containers]).stdout
    assert not [s for s in secrets if s in inspected]
    for image in ("wiki-image-topics:latest", "wiki-image-topics-server:latest"):
        history = st.sh(["docker", "history", "--no-trunc", image]).stdout
        assert not [s for s in secrets if s in history], image
    for service in ("airflow-apiserver", "airflow-scheduler", "airflow-worker", "airflow-dag-processor",
                    "airflow-triggerer", "mlflow", "model-server"):
        uid = st.sh(["docker", "exec", deployment.stack.container(service), "id", "-u"]).stdout.strip()
        assert uid == "50000", (service, uid)


class Faults:
    """The faults of one night, each at its own stage, injected from the run's task states as they are
    polled: PostgreSQL restarted once ingest is done (at the next task's start, polled every 5 s), the
    worker killed during label, the scheduler restarted during wit, MLflow stopped while train runs
    and started again once that attempt failed."""

    def __init__(self, deployment: "Deployment"):
        self.deployment, self.stack, self.done, self.events = deployment, deployment.stack, set(), []

    def note(self, what: str) -> None:
        self.events.append((time.strftime("%H:%M:%S"), what))

    def __call__(self, tasks: dict[str, dict]) -> None:
        state = {k: v["state"] for k, v in tasks.items()}
        if state.get("ingest") == "success" and "postgres" not in self.done:
            self.done.add("postgres")
            self.stack.compose("restart", "postgres")
            self.note(f"PostgreSQL restarted after ingest (graph: {state.get('graph')})")
        if state.get("label") == "running" and "worker" not in self.done:
            self.done.add("worker")
            pid = st.sh(["docker", "inspect", "-f", "{{.State.Pid}}", self.stack.container("airflow-worker")]).stdout
            os.kill(int(pid), 9)  # the container's init, from outside: a crash, not a stop
            self.note("worker container killed (SIGKILL) during label")
        if state.get("wit") == "running" and "scheduler" not in self.done:
            self.done.add("scheduler")
            self.stack.compose("restart", "airflow-scheduler")
            self.note("scheduler restarted during wit")
        if state.get("train") == "running" and "mlflow" not in self.done and self.deployment.running_runs():
            self.done.add("mlflow")  # once train's MLflow run exists: the outage must not leave it RUNNING
            self.stack.compose("stop", "mlflow")
            self.note("MLflow stopped while train runs, its MLflow run started")
        if "mlflow" in self.done and "mlflow back" not in self.done and \
                (tasks.get("train", {}).get("try_number", 0) > 1 or state.get("train") in ("up_for_retry", "failed")):
            self.done.add("mlflow back")
            self.stack.compose("start", "mlflow")
            self.note(f"MLflow started again (train: {state.get('train')})")


def test_faults_survived_with_nothing_lost(deployment, report_metric):
    """A second night, every stage forced to run again, through four faults: it completes, its tables
    equal the uninterrupted stages', the failed train attempt names the MLflow server, and no MLflow
    run is left RUNNING."""
    af = deployment.airflow()
    faults = Faults(deployment)
    t = time.time()
    run_id = af.trigger({"force": True})
    state = af.wait(run_id, timeout_s=2400, during=faults)
    seconds = round(time.time() - t, 1)
    tasks = af.tasks(run_id)
    assert state == "success", ({k: (v["state"], v["try_number"]) for k, v in tasks.items()}, faults.events)
    assert faults.done >= {"postgres", "worker", "scheduler", "mlflow", "mlflow back"}, faults.events
    assert tasks["label"]["try_number"] > 1 and tasks["train"]["try_number"] > 1
    af = deployment.airflow()
    assert "mlflow:5000" in af.log(run_id, "train", 1)

    assert_same_outputs(deployment.lake, deployment.host_lake)
    assert deployment.running_runs() == []
    deployment.figures["fault_night_s"] = seconds
    for when, what in faults.events:
        report_metric(f"deploy fault at {when}", what)
    report_metric("deploy: night with four faults (s)", seconds)
