"""docker-compose.yml, checked without a Docker engine: wiring, no secret in the file, every secret
required, ports on loopback, a GPU worker; every service's command exists in the image; and the
MLflow server's own start script, run here on loopback, refuses requests without a password."""

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "docker-compose.yml").read_text()
PROJECT_IMAGES = {"wiki-image-topics:latest", "wiki-image-topics:gpu"}


def _compose():
    return yaml.safe_load(TEXT)


def test_services_are_the_real_engines():
    services = _compose()["services"]
    for name in ["postgres", "redis", "mlflow", "spark-master", "spark-worker", "airflow-init",
                 "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                 "airflow-worker", "airflow-worker-gpu"]:
        assert name in services, name
    assert services["airflow-scheduler"]["command"] == ["airflow", "scheduler"]
    assert services["spark-worker"]["command"][-1] == "spark://spark-master:7077"


def test_wiring_between_services():
    services = _compose()["services"]
    env = services["airflow-scheduler"]["environment"]
    assert env["SPARK_MASTER"] == "spark://spark-master:7077"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "postgresql+psycopg2://" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    # every env var the stages read is a real setting (or Airflow's, MLflow's client's, the DAG's)
    from pipeline.config import Settings

    known = {f.metadata["env"] for sec in dataclasses.fields(Settings)
             for f in dataclasses.fields(sec.default_factory())}
    for key in env:
        assert key.startswith(("AIRFLOW__", "MLFLOW_TRACKING_", "WIKI_TOPICS_")) or key in known, key
    # the DAG's GPU pool and queue are the ones the GPU worker serves and airflow-init creates
    from pipeline.orchestration.stages import GPU_POOL, GPU_QUEUE

    assert env["WIKI_TOPICS_GPU_POOL"] == GPU_POOL and env["WIKI_TOPICS_GPU_QUEUE"] == GPU_QUEUE
    assert f"airflow pools set {GPU_POOL} " in services["airflow-init"]["command"][-1]
    gpu_command = services["airflow-worker-gpu"]["command"]
    assert gpu_command[gpu_command.index("--queues") + 1] == GPU_QUEUE
    worker = services["airflow-worker"]["command"]
    assert worker[worker.index("--queues") + 1] == env["AIRFLOW__CELERY__DEFAULT_QUEUE"]


def test_no_secret_is_written_in_the_deployment():
    for literal in ("airflow:airflow", "mlflow:mlflow", "change-me", "POSTGRES_PASSWORD:", "password1234"):
        assert literal not in TEXT, literal
    for path in [ROOT / "docker-compose.yml", *sorted(p for p in (ROOT / "docker").rglob("*") if p.is_file()),
                 ROOT / ".env.example"]:
        text = path.read_text()
        # a password or key is only ever read from a secret file
        for m in re.finditer(r"(?i)(password|secret|fernet|jwt)[a-z_]*[ \t]*[:=][ \t]*(\S*)", text):
            if re.search(r":'[a-z_]+'", m.group(0)):
                continue  # a psql variable, set from a secret file
            value = m.group(2).strip("\"'")
            assert value.startswith(("$", "/run/secrets/", "cat", "sh", "${", "admin", "\"$", "[", "?")) or value == "", \
                (path.name, m.group(0))
        assert not re.search(r"PASSWORD\s+'[^:]", text), path.name  # no literal in SQL either
    services = _compose()["services"]
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|FERNET|JWT", key):
                assert key.endswith(("_FILE", "_CMD")) and "/run/secrets/" in str(value), (name, key)
    # every secret a service reads is one it was given
    for name, service in services.items():
        given = set(service.get("secrets") or [])
        used = set(re.findall(r"/run/secrets/([a-z_]+)", json.dumps(service)))
        assert used <= given, (name, used - given)


def test_every_variable_is_required_or_safe_and_listed_in_env_example():
    names = set()
    defaults = {"BIND_ADDRESS": "127.0.0.1", "BASE_IMAGE": "python:3.11-slim-bookworm", "POSTGRES_IMAGE": "postgres:16",
                "REDIS_IMAGE": "redis:7"}  # the official images users pull
    for m in re.finditer(r"(?<!\$)\$\{([A-Z_]+)(:?[-?])?([^}]*)\}", TEXT):
        name, op, rest = m.groups()
        names.add(name)
        if name in defaults:
            assert op == ":-" and rest == defaults[name], m.group(0)
        else:
            assert op == ":?" and rest, m.group(0)  # unset: compose refuses, saying what to set
    example = (ROOT / ".env.example").read_text()
    for name in names:
        assert re.search(rf"^{name}=", example, re.M), name
    secrets = _compose()["secrets"]
    for secret in secrets:
        assert secret in example, secret  # .env.example says what each secret file is
        assert secrets[secret]["file"].startswith("${SECRETS_DIR:?")


def test_ports_are_published_on_loopback_only():
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("${BIND_ADDRESS:-127.0.0.1}:"), (name, port)
    assert re.search(r"^BIND_ADDRESS=127\.0\.0\.1$", (ROOT / ".env.example").read_text(), re.M)


def test_the_gpu_worker_reserves_a_gpu_and_uses_the_gpu_build():
    gpu = _compose()["services"]["airflow-worker-gpu"]
    assert gpu["profiles"] == ["gpu"]  # a machine without a GPU brings the rest up
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"] and devices[0]["count"] >= 1
    assert gpu["build"]["args"]["TENSORFLOW"].startswith("tensorflow[and-cuda]==")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG TENSORFLOW" in dockerfile and "pip uninstall -y tensorflow-cpu" in dockerfile
    pinned = re.search(r"^tensorflow[-_]cpu==(\S+)$", (ROOT / "requirements.lock").read_text(), re.M).group(1)
    assert gpu["build"]["args"]["TENSORFLOW"].endswith(f"=={pinned}")  # the same version as the CPU build


def test_every_service_command_exists_in_the_image():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "requirements.lock" in dockerfile and "openjdk-17" in dockerfile and "COPY docker/ docker/" in dockerfile
    lock = (ROOT / "requirements.lock").read_text()
    for package in ["psycopg2-binary", "asyncpg==", "apache-airflow==", "apache-airflow-providers-celery==", "redis==",
                    "pyspark==", "mlflow==", "Flask-WTF=="]:
        assert package in lock, package
    bin_dir = Path(sys.executable).parent  # this venv holds requirements.lock, as the image does
    airflow_commands = []
    for name, service in _compose()["services"].items():
        if service.get("image") not in PROJECT_IMAGES:
            continue
        command = service["command"]
        if command[0].startswith("/opt/wiki-image-topics/"):
            script = ROOT / command[0].removeprefix("/opt/wiki-image-topics/")
            assert script.exists() and os.access(script, os.X_OK), name
            airflow_commands += [c.split() for c in re.findall(r"exec (airflow [a-z-]+)", script.read_text())]
        elif command[:2] == ["sh", "-c"]:
            airflow_commands += [c.split() for c in re.findall(r"(airflow [a-z]+ [a-z]+)", command[2])]
        else:
            assert (bin_dir / command[0]).exists(), (name, command[0])
            if command[0] == "airflow":
                airflow_commands.append(command)
    # the Airflow subcommands parse (celery's exist only with the CeleryExecutor configured)
    code = ("import json, sys; from airflow.cli.cli_parser import get_parser; p = get_parser(); "
            "[p.parse_args(c[1:]) for c in json.loads(sys.argv[1])]")
    args = {("pools", "set"): ["gpu", "1", "x"], ("users", "list"): [],
            ("users", "create"): ["-u", "admin", "-r", "Admin", "-f", "A", "-l", "B", "-e", "a@b", "-p", "x"]}
    checked = [c + args.get(tuple(c[1:3]), []) for c in airflow_commands]
    out = subprocess.run([sys.executable, "-c", code, json.dumps(checked)], capture_output=True, text=True,
                         env={**os.environ, "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                              "AIRFLOW_HOME": "/tmp/compose-airflow-home"}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert {c[1] for c in checked} >= {"scheduler", "dag-processor", "triggerer", "celery", "api-server", "db", "pools",
                                       "users"}
    from importlib.metadata import entry_points

    assert "basic-auth" in {e.name for e in entry_points(group="mlflow.app")}  # mlflow --app-name basic-auth


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_mlflow_server_refuses_requests_without_the_admin_password(tmp_path):
    """docker/mlflow-server.sh itself, on loopback with SQLite, with the compose file's allowed hosts:
    MLflow's basic-auth app is on, and it answers the name the stages use (mlflow:5000), not any name."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "mlflow_admin_password").write_text("s3cret-for-this-test\n")
    (secrets / "mlflow_flask_secret").write_text("flask-key-for-this-test\n")
    port = _free_port()
    env = {**os.environ, "SECRETS": str(secrets), "MLFLOW_DB_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "MLFLOW_HOST": "127.0.0.1", "MLFLOW_PORT": str(port), "MLFLOW_WORKERS": "1", "MLFLOW_ARTIFACTS": str(tmp_path / "art"),
           # the compose file's, and this test's own port on loopback
           "MLFLOW_ALLOWED_HOSTS": _compose()["services"]["mlflow"]["environment"]["MLFLOW_ALLOWED_HOSTS"]
           + f",127.0.0.1:{port}",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    server = subprocess.Popen([str(ROOT / "docker" / "mlflow-server.sh")], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1"

    def get(auth=None, host=None):
        request = urllib.request.Request(url)
        if host:
            request.add_header("Host", host)
        if auth:
            request.add_header("Authorization", "Basic " + b64encode(auth.encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    try:
        deadline = time.time() + 120
        while True:
            try:
                status = get()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert server.poll() is None and time.time() < deadline, server.stderr.read().decode()[-2000:]
                time.sleep(0.5)
        assert status == 401
        assert get("admin:wrong") == 401
        assert get("admin:s3cret-for-this-test") == 200
        # MLflow 3.5+ checks the Host header (DNS rebinding): the compose service name passes, others do not
        assert get("admin:s3cret-for-this-test", host="mlflow:5000") == 200
        assert get("admin:s3cret-for-this-test", host="evil.example:5000") == 403
        # the pipeline's clients sign in from a password file, as the compose services do
        from pipeline.config import load_settings
        from pipeline.orchestration import tracking

        environ = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD_FILE": str(secrets / "mlflow_admin_password")}
        os.environ.update(environ)
        try:
            os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
            settings = load_settings({"tracking.tracking_uri": f"http://127.0.0.1:{port}",
                                      "paths.state_dir": str(tmp_path / "state")}, environ={})
            assert tracking.configure(settings)
        finally:
            for key in [*environ, "MLFLOW_TRACKING_PASSWORD"]:
                os.environ.pop(key, None)
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)


@pytest.mark.parametrize("script", ["mlflow-server.sh", "postgres-init.sh", "standins.sh",
                                    "standins/postgres-entrypoint.sh"])
def test_the_start_scripts_are_valid_shell(script):
    assert subprocess.run(["sh", "-n", str(ROOT / "docker" / script)]).returncode == 0


def test_healthchecks_order_and_restarts_follow_airflows_compose_file():
    """As Airflow's own docker-compose.yaml: a healthcheck on every long-running service, workers start
    after a healthy API server, everything else after a healthy database and broker and a finished
    airflow-init, and every long-running service restarts after a crash."""
    services = _compose()["services"]
    for name, service in services.items():
        if name == "airflow-init":
            assert service["restart"] == "no"
            continue
        assert service["restart"] == "always", name
        if name.startswith("airflow-") or name in ("postgres", "redis", "mlflow"):
            assert service["healthcheck"]["test"], name
        if name.startswith("airflow-"):
            needs = service["depends_on"]
            assert needs["postgres"]["condition"] == needs["redis"]["condition"] == "service_healthy", name
            assert needs["airflow-init"]["condition"] == "service_completed_successfully", name
    for worker in ("airflow-worker", "airflow-worker-gpu"):
        assert services[worker]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
        assert "inspect ping" in services[worker]["healthcheck"]["test"][-1]
    assert services["airflow-triggerer"]["command"][:2] == ["airflow", "triggerer"]
    assert "TriggererJob" in services["airflow-triggerer"]["healthcheck"]["test"][-1]
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"
    assert "8974/health" in services["airflow-scheduler"]["healthcheck"]["test"][-1]


def test_a_production_auth_manager_and_images_that_build_anywhere():
    services = _compose()["services"]
    env = services["airflow-apiserver"]["environment"]
    # Airflow's docs: the simple auth manager is for development and testing only
    assert env["AIRFLOW__CORE__AUTH_MANAGER"] == "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
    assert "apache-airflow-providers-fab==" in (ROOT / "requirements.lock").read_text()
    assert "airflow users create" in services["airflow-init"]["command"][-1]
    assert services["postgres"]["image"] == "${POSTGRES_IMAGE:-postgres:16}"
    assert services["redis"]["image"] == "${REDIS_IMAGE:-redis:7}"
    for name in ("mlflow", "airflow-worker-gpu"):
        assert services[name]["build"]["args"]["BASE_IMAGE"] == "${BASE_IMAGE:-python:3.11-slim-bookworm}"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm" in dockerfile and "FROM ${BASE_IMAGE}" in dockerfile
    assert "python3 -m venv /opt/venv" in dockerfile and "USER 50000" in dockerfile


def test_the_celery_executor_loads_and_outlives_the_longest_stage():
    """The CeleryExecutor the compose file configures imports in the locked environment (Celery 5.7
    broke the provider's import, found by the first bring-up), and Redis redelivers no task before the
    longest stage's timeout."""
    code = "from airflow.providers.celery.executors import celery_executor_utils"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                              "AIRFLOW_HOME": "/tmp/compose-airflow-home"})
    assert out.returncode == 0, out.stderr[-2000:]
    from pipeline.orchestration.stages import STAGES

    env = _compose()["services"]["airflow-worker"]["environment"]
    longest = max(stage.timeout_hours for stage in STAGES.values())
    assert int(env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"]) > longest * 3600


def test_the_model_server_is_a_service_of_its_own_behind_a_token():
    """Its own image from requirements-serve.lock (no Airflow, Spark or JVM), the champion from the MLflow
    server, every request behind the token secret, alive before the first night, after MLflow."""
    server = _compose()["services"]["model-server"]
    assert server["build"]["dockerfile"] == "docker/model-server.Dockerfile"
    assert server["image"] not in PROJECT_IMAGES
    dockerfile = (ROOT / server["build"]["dockerfile"]).read_text()
    assert "requirements-serve.lock" in dockerfile and "requirements.lock" not in dockerfile.replace("-serve.lock", "")
    assert "openjdk" not in dockerfile and "USER 50000" in dockerfile
    assert server["command"][:3] == ["python", "-m", "serving"]
    port = server["command"][server["command"].index("--port") + 1]
    assert server["ports"] == [f"${{BIND_ADDRESS:-127.0.0.1}}:{port}:{port}"]
    env = server["environment"]
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["SERVE_TOKEN_FILE"] == "/run/secrets/model_server_token"
    assert set(server["secrets"]) == {"mlflow_admin_password", "model_server_token"}
    assert f"127.0.0.1:{port}/livez" in " ".join(server["healthcheck"]["test"])
    assert server["depends_on"]["mlflow"]["condition"] == "service_healthy"
    lock = (ROOT / "requirements-serve.lock").read_text()
    for package in ("kserve==0.21.0", "tensorflow-cpu==2.21.0", "keras==3.15.1", "mlflow==3.17.2"):
        assert package in lock, package
    assert "apache-airflow" not in lock and "pyspark" not in lock
