"""Models of all three input modes, trained on a synthetic store and run through `infer`, and the model
server started from its own environment (``make serve-venv``) beside them.

The store's images are also put where a local mirror of upload.wikimedia.org
(``devtools.sample.server``) serves them as Commons originals, so a title
request goes through the same URL, downloader and store check as the shard
stage, and must give the Parquet's figures too.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from pipeline.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
SERVE_PYTHON = ROOT / ".venv-serve" / "bin" / "python"
MODEL = "wiki-image-topics-v1.3"
SIZES = {"train": 384, "validation": 32, "threshold": 64, "test": 96}
TRAIN = {
    "train.image_size": "32", "train.backbone": "B0", "train.weights": "none", "train.epochs": "1",
    "train.batch_size": "16", "train.learning_rate": "2e-3", "train.workers": "1", "train.text_vocab": "4096",
    "label.taxonomy": "v1.3",
}
MODES = ("image", "text", "image+text")
USER_AGENT = "wiki-image-topics-tests/1.0 (https://example.org/tests; tests@example.org) requests"

pytestmark = pytest.mark.serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """{mode: (settings, train summary, predictions DataFrame by image_key)} on one synthetic store."""
    import pyarrow.parquet as pq

    from devtools import synthetic
    from pipeline.lake.layout import Layout
    from spark_jobs import batch_inference
    from training import train

    root = tmp_path_factory.mktemp("serving")
    base = {"paths.data_root": str(root / "data"), "paths.state_dir": str(root / "state"), **TRAIN}
    synthetic.write_images(load_settings(base, environ={}), SIZES, shard_size=100, complementary=True)
    out = {}
    for mode in MODES:
        s = load_settings({**base, "train.inputs": mode}, environ={})
        summary = train.run(s)
        uri = f"models:/{MODEL}/{summary['model_version']}"
        s = dataclasses.replace(s, tracking=dataclasses.replace(s.tracking, model_uri=uri))
        batch_inference.run(s)
        predictions = pq.read_table(Layout.from_settings(s).predictions).to_pandas().set_index("image_key")
        # each mode's table moves aside before the next run writes its own
        os.rename(Layout.from_settings(s).predictions, root / f"predictions-{mode.replace('+', '_')}")
        out[mode] = (s, summary, predictions)
    return out


class ModelServer:
    """``python -m serving`` in .venv-serve, on a free loopback port."""

    def __init__(self, settings, log: Path, sets: dict, token: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = "wiki-image-topics"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        sets = {"serve.port": self.port, "serve.watch_interval_s": 1, **sets}
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHONPATH"))}
        env.update(STATE_DIR=settings.paths.state_dir, DATA_ROOT=settings.paths.data_root, USER_AGENT=USER_AGENT)
        cmd = [str(SERVE_PYTHON), "-m", "serving", "--taxonomy", settings.label.taxonomy]
        for k, v in sets.items():
            cmd += ["--set", f"{k}={v}"]
        self.log = log
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120.0) -> "ModelServer":
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"model server exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/v1/models/{self.name}", headers=self.headers, timeout=2).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"model server not ready in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def predict(self, instances, **kw):
        return requests.post(f"{self.url}/v1/models/{self.name}:predict", json={"instances": instances},
                             headers=self.headers, timeout=60, **kw)

    def info(self) -> dict:
        return requests.get(f"{self.url}/info", headers=self.headers, timeout=10).json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def serve_python():
    if not SERVE_PYTHON.exists():
        pytest.fail(f"{SERVE_PYTHON} is missing: `make test-serve` builds it (make serve-venv)")
    return SERVE_PYTHON


@pytest.fixture
def model_server(serve_python, tmp_path):
    """A factory: model_server(settings, {"section.field": value}) -> a ready ModelServer, stopped after the test."""
    started = []

    def start(settings, sets: dict, ready: bool = True, token: str | None = None):
        server = ModelServer(settings, tmp_path / f"server-{len(started)}.log", sets, token)
        started.append(server)
        return server.wait_ready() if ready else server

    yield start
    for server in started:
        server.stop()
