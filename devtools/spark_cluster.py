"""A Spark standalone cluster (one master, N workers) on this machine, from the pip-installed PySpark.

What ``python -m devtools spark-cluster`` and the tests start, so the stages run with
``SPARK_MASTER=spark://...`` against real separate executor JVMs, as on a cluster: each worker in
its own working directory, with an environment that does not have the project on its path (the
driver ships the project's code, ``pipeline.orchestration.spark.ship_project``). The daemons are the classes
``sbin/start-master.sh`` and ``start-worker.sh`` run, started with ``spark-class``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def spark_home() -> str:
    import pyspark

    return os.path.dirname(pyspark.__file__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"spark daemon exited with {proc.returncode}; its log {log}:\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"spark daemon did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s; log {log}")


@dataclass
class StandaloneCluster:
    """``with StandaloneCluster(folder, workers=2) as c: ... c.master_url ...``"""

    folder: str
    workers: int = 2
    cores_per_worker: int = 1
    memory_per_worker: str = "2g"
    start_timeout_s: float = 120.0
    master_url: str = ""
    _procs: list = field(default_factory=list, repr=False)

    def _env(self, workdir: Path) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPARK_HOME", "PYSPARK_PYTHON")}
        env.update(SPARK_HOME=spark_home(), SPARK_LOCAL_IP="127.0.0.1", SPARK_LOG_DIR=str(workdir),
                   SPARK_NO_DAEMONIZE="1")
        return env

    def _start(self, name: str, args: list[str], port: int) -> None:
        workdir = Path(self.folder).resolve() / name
        workdir.mkdir(parents=True, exist_ok=True)
        log = workdir / f"{name}.log"
        cmd = [os.path.join(spark_home(), "bin", "spark-class"), *args]
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, cwd=workdir, env=self._env(workdir), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self._procs.append(proc)
        _wait_for_port(port, proc, log, self.start_timeout_s)

    def start(self) -> "StandaloneCluster":
        port = free_port()
        self._start("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(free_port())], port)
        self.master_url = f"spark://127.0.0.1:{port}"
        for i in range(self.workers):
            wport = free_port()
            work = Path(self.folder).resolve() / f"worker-{i}"
            self._start(f"worker-{i}", ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                                        "--port", str(wport), "--webui-port", str(free_port()),
                                        "--cores", str(self.cores_per_worker), "--memory", self.memory_per_worker,
                                        "--work-dir", str(work / "work"), self.master_url], wport)
        self._wait_registered()
        return self

    def _wait_registered(self) -> None:
        """Until the master's log says every worker registered (a driver started earlier gets no executors)."""
        log = Path(self.folder).resolve() / "master" / "master.log"
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if log.read_text(errors="replace").count("Registering worker") >= self.workers:
                return
            time.sleep(0.2)
        raise RuntimeError(f"not all {self.workers} workers registered with {self.master_url}; see {log}")

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self._procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._procs.clear()

    def __enter__(self) -> "StandaloneCluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def main(args) -> int:
    """``python -m devtools spark-cluster``: run a cluster in the foreground until Ctrl-C / SIGTERM."""
    folder = args.folder or os.path.join(".state", "spark-cluster")
    cluster = StandaloneCluster(folder, workers=args.workers, cores_per_worker=args.cores,
                                memory_per_worker=args.memory)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with cluster:
        print(f"SPARK_MASTER={cluster.master_url}", flush=True)
        print(f"{args.workers} workers; logs under {os.path.abspath(folder)}; Ctrl-C stops them", flush=True)
        try:
            while not stop and all(p.poll() is None for p in cluster._procs):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0
