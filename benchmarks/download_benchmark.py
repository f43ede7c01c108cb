"""The shard stage's downloader against img2dataset, same images, same local server, same concurrency.

    python benchmarks/download_benchmark.py --images 2000 --latency-ms 50 \
        --img2dataset /path/to/venv/bin/img2dataset [--only ours|img2dataset]

Writes ``--images`` JPEGs (320 x 240, Commons-like names) in the
upload.wikimedia.org layout and serves them from a local HTTP server that adds
``--latency-ms`` to every request (closer to the real hosts than loopback) and
counts requests in flight. Then, each against a fresh server:

- **ours**: the shard stage's download phase (``spark_jobs.shard_images.download``):
  one process, ``per_host_concurrency`` = ``--connections``, originals fetched,
  checked and kept in the image store (re-encoded to the 120 px step);
- **img2dataset**: ``--processes_count 1 --thread_count <connections>``,
  webdataset output, 64 px center crop. It is not a dependency of this
  project: install it in a virtual environment of its own
  (``pip install img2dataset==1.47.0``) and pass its executable.

Prints one JSON line per tool (images/s, wall seconds, peak concurrency seen by
the server, share of the ideal ``connections / latency``) and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools.sample.dumps_server import DumpsServer  # noqa: E402
from pipeline.inputs.wit import commons_url, hash_path, image_key  # noqa: E402

UA = "wiki-image-topics-benchmark/0.1 (https://example.org/wiki-image-topics; bench@example.org)"


def make_images(root: Path, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    titles = []
    for i in range(n):
        title = f"Benchmark image {i:05d}.jpg"
        path = root / "wikipedia" / "commons" / hash_path(title) / title.replace(" ", "_")
        path.parent.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(base).resize((320, 240), Image.BILINEAR).save(path, quality=85)
        titles.append(title)
    return titles


def run_ours(base_url: str, titles: list[str], connections: int, work: Path) -> dict:
    from pipeline.config import load_settings
    from pipeline.inputs.store import ImageStore
    from spark_jobs.shard_images import download

    settings = load_settings({
        "paths.data_root": str(work / "lake"), "shard.user_agent": UA, "shard.mirror_url": base_url,
        "shard.originals": "true", "shard.per_host_concurrency": str(connections),
        "shard.bandwidth_bytes_per_s": "1000000000", "shard.shard_size": "1000",
        "shard.lock_dir": str(work / "locks"), "shard.progress_every_s": "3600",
    }, environ={})
    rows = [{"image_key": image_key(t), "file_title": t, "image_url": commons_url(t), "mime_type": "image/jpeg",
             "original_width": 320} for t in titles]
    t0 = time.perf_counter()
    result = download(iter(rows), len(rows), settings, ImageStore(str(work / "store")))
    wall = time.perf_counter() - t0
    return {"ok": result["status_counts"].get("ok", 0), "wall_s": wall}


def run_img2dataset(exe: str, base_url: str, titles: list[str], connections: int, work: Path) -> dict:
    urls = work / "urls.txt"
    urls.write_text("".join(commons_url(t).replace("https://upload.wikimedia.org", base_url) + "\n"
                            for t in titles))
    out = work / "i2d"
    cmd = [exe, "--url_list", str(urls), "--output_folder", str(out), "--processes_count", "1",
           "--thread_count", str(connections), "--output_format", "webdataset", "--image_size", "64",
           "--resize_mode", "center_crop", "--number_sample_per_shard", "1000", "--disable_all_reencoding",
           "False", "--enable_wandb", "False"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"img2dataset failed ({proc.returncode}): {proc.stderr[-2000:]}")
    ok = 0
    for stats in out.glob("*_stats.json"):
        ok += json.loads(stats.read_text()).get("successes", 0)
    return {"ok": ok, "wall_s": wall}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--connections", type=int, default=2)
    ap.add_argument("--img2dataset", default="", help="img2dataset executable (its own venv)")
    ap.add_argument("--only", choices=["ours", "img2dataset"], default=None)
    ap.add_argument("--work", default="", help="folder for images and outputs (default: a temp dir)")
    a = ap.parse_args(argv)
    work = Path(a.work or tempfile.mkdtemp(prefix="download-bench-"))
    images = work / "images"
    marker = images / f".made-{a.images}"
    if not marker.exists():
        titles = make_images(images, a.images)
        marker.write_text("")
    else:
        titles = [f"Benchmark image {i:05d}.jpg" for i in range(a.images)]
    ideal = a.connections / (a.latency_ms / 1000.0)
    tools = [a.only] if a.only else ["ours"] + (["img2dataset"] if a.img2dataset else [])
    rows = []
    for tool in tools:
        run_dir = Path(tempfile.mkdtemp(prefix=f"{tool}-", dir=work))
        with DumpsServer(images, latency_s=a.latency_ms / 1000.0) as server:
            if tool == "ours":
                res = run_ours(server.url, titles, a.connections, run_dir)
            else:
                res = run_img2dataset(a.img2dataset, server.url, titles, a.connections, run_dir)
            peak = server.max_inflight
        rate = res["ok"] / res["wall_s"]
        row = {"tool": tool, "images": a.images, "ok": res["ok"], "wall_s": round(res["wall_s"], 2),
               "images_per_s": round(rate, 1), "peak_concurrent_requests": peak,
               "ideal_images_per_s": round(ideal, 1), "share_of_ideal": round(rate / ideal, 3),
               "latency_ms": a.latency_ms, "connections": a.connections}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| tool | images ok | wall s | images/s | share of ideal | peak concurrent requests |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tool']} | {r['ok']} | {r['wall_s']} | {r['images_per_s']} | {r['share_of_ideal']:.0%} | "
              f"{r['peak_concurrent_requests']} |")
    if len(rows) == 2:
        print(f"\nours / img2dataset images/s: {rows[0]['images_per_s'] / rows[1]['images_per_s']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
