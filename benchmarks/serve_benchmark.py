"""The model server against `mlflow models serve`, side by side, one run: the same champion, images, machine.

Runs in the serving environment (``make serve-venv``), on a state folder where
the demo ran (``make demo`` leaves the champion in ``.state``):

    .venv-serve/bin/python benchmarks/serve_benchmark.py --state-dir .state --data-root data

For each server and each number of concurrent users (1, 8, 32), locust
(``benchmarks/serve_locustfile.py``) sends one stored image per request, back to
back, for ``--seconds``, after a warm-up; it reports requests/s, p50/p95/p99
latency and failures, and this script the server's peak RSS (all its
processes). The servers:

- ``model-server``: ``python -m serving`` (one process, micro-batching);
- ``model-server, no batching``: the same with ``serve.max_batch=1``, to measure what batching gains;
- ``mlflow models serve -w 2``: one worker per core, ``--env-manager local`` (what a user would run).

Then the decompression bomb: ``--bombs`` requests carrying a PNG that declares
30000x30000 pixels, against the model server, with its RSS before and after.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stored_images(data_root: str, dump_date: str | None, n: int) -> list[str]:
    """Base64 of the first ``n`` stored images of the image index (what batch inference reads)."""
    import pyarrow.parquet as pq

    sys.path.insert(0, str(ROOT))
    from pipeline.config import load_settings
    from pipeline.inputs.store import read_payload, store_root
    from pipeline.lake.layout import Layout

    overrides = {"paths.data_root": data_root, **({"paths.dump_date": dump_date} if dump_date else {})}
    settings = load_settings(overrides)
    if not dump_date:
        dates = sorted(p.name for p in Path(data_root).iterdir() if p.name.isdigit())
        settings.paths.dump_date = dates[-1]
    index = pq.read_table(Layout.from_settings(settings).image_index).to_pandas()
    index = index[index["status"] == "ok"].head(n)
    store = store_root(settings)
    return [base64.b64encode(read_payload(f"{store}/{r.shard}", r.offset, r.size)).decode("ascii")
            for r in index.itertuples(index=False)]


class Peak:
    """Polls a process tree's total RSS every 0.2 s."""

    def __init__(self, pid: int):
        self.proc, self.peak, self._stop, self._thread = psutil.Process(pid), 0, threading.Event(), None

    def rss(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.2)

    def __enter__(self):
        self.peak = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stop.clear()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def wait_ready(url: str, proc, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


def locust(target: str, host: str, users: int, seconds: int, images: str, out: str) -> dict:
    env = {**os.environ, "TARGET": target, "IMAGES": images}
    cmd = [str(BIN / "locust"), "-f", str(ROOT / "benchmarks" / "serve_locustfile.py"), "--headless",
           "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--host", host, "--csv", out,
           "--only-summary", "--stop-timeout", "10", "--loglevel", "WARNING"]
    subprocess.run(cmd, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(f"{out}_stats.csv", encoding="utf-8") as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")

    def number(key):  # locust writes N/A where no request finished
        return float(row[key]) if row[key] not in ("", "N/A") else float("nan")

    return {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
            "rps": number("Requests/s"), "p50_ms": number("50%"), "p95_ms": number("95%"), "p99_ms": number("99%")}


def start(kind: str, args, port: int):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(STATE_DIR=args.state_dir, DATA_ROOT=args.data_root, PATH=f"{BIN}:{env['PATH']}")
    state = Path(args.state_dir).resolve()
    if kind.startswith("model-server"):
        cmd = [str(BIN / "python"), "-m", "serving", "--port", str(port),
               "--taxonomy", args.taxonomy, "--state-dir", str(state)]
        if "no batching" in kind:
            cmd += ["--set", "serve.max_batch=1"]
        ready = f"http://127.0.0.1:{port}/v1/models/wiki-image-topics"
        cwd = ROOT
    else:
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{state / 'mlflow.db'}"
        cmd = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{args.model}@champion", "-p", str(port),
               "-h", "127.0.0.1", "-w", str(args.mlflow_workers), "--env-manager", "local"]
        ready = f"http://127.0.0.1:{port}/ping"
        cwd = tempfile.mkdtemp(prefix="mlflow-serve-")  # outside the checkout: the model's own code
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(ready, proc)
    return proc


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def bomb_effect(host: str, pid: int, n: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from tests.serving.bad_inputs import png_bomb

    body = {"instances": [{"image": base64.b64encode(png_bomb()).decode("ascii")}]}
    peak = Peak(pid)
    before = peak.rss()
    statuses = {}
    with peak:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            for code in pool.map(lambda _: requests.post(f"{host}/v1/models/wiki-image-topics:predict",
                                                         json=body, timeout=60).status_code, range(n)):
                statuses[code] = statuses.get(code, 0) + 1
    return {"requests": n, "statuses": statuses, "rss_before_mb": round(before / 2**20, 1),
            "rss_peak_mb": round(peak.peak / 2**20, 1), "rss_after_mb": round(peak.rss() / 2**20, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state-dir", default=".state")
    p.add_argument("--data-root", default="data")
    p.add_argument("--dump-date", default=None)
    p.add_argument("--taxonomy", default="v1.3", help="the demo's taxonomy (its champion is <model>-<taxonomy>)")
    p.add_argument("--users", default="1,8,32")
    p.add_argument("--seconds", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--mlflow-workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--bombs", type=int, default=40)
    p.add_argument("--servers", default="model-server,model-server, no batching,mlflow models serve",
                   help="comma-separated (names as in the table)")
    p.add_argument("--out", default=None, help="also write the results here as JSON")
    args = p.parse_args(argv)
    args.model = f"wiki-image-topics-{args.taxonomy}"
    users = [int(u) for u in args.users.split(",")]
    names = ["model-server", "model-server, no batching", "mlflow models serve"]
    servers = [n for n in names if n in args.servers]

    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    images = work / "images.json"
    images.write_text(json.dumps(stored_images(args.data_root, args.dump_date, args.images)))
    results = {"machine": f"{os.cpu_count()} cores, {round(psutil.virtual_memory().total / 2**30)} GiB",
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": args.seconds,
               "images": args.images, "servers": {}}
    for name in servers:
        port = free_port()
        host = f"http://127.0.0.1:{port}"
        proc = start(name, args, port)
        target = "mlflow" if name.startswith("mlflow") else "kserve"
        rows = {}
        try:
            locust(target, host, max(users), args.warmup, str(images), str(work / "warmup"))
            for u in users:
                with Peak(proc.pid) as peak:
                    row = locust(target, host, u, args.seconds, str(images), str(work / f"{target}-{u}"))
                row["peak_rss_mb"] = round(peak.peak / 2**20, 1)
                rows[u] = row
                print(f"{name:28s} {u:3d} users: {row}", flush=True)
            if name == "model-server" and args.bombs:
                results["bomb"] = bomb_effect(host, proc.pid, args.bombs)
                print(f"bomb: {results['bomb']}", flush=True)
        finally:
            stop(proc)
        results["servers"][name] = rows

    print("\n| server | users | requests/s | p50 ms | p95 ms | p99 ms | failures | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, rows in results["servers"].items():
        for u, r in rows.items():
            print(f"| {name} | {u} | {r['rps']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | "
                  f"{r['failures']} of {r['requests']} | {r['peak_rss_mb']:.0f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
