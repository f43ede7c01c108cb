"""The nightly heads retrain and infer at full-scale shapes, on stored features (issue 43).

Synthetic 1280-d fp16 features for ``--images`` images (default 3.9M, 80% train), 31 labels
whose positives depend on the features, written as the ``embed`` stage writes them
(``pipeline.features.embeddings``, one file per 1,000-image shard). Then the product's own
code: ``training.data.ShardBatches`` streaming ``training.inputs`` features into
``training.model.build_head``, ``--epochs`` epochs, and the heads over every image, file by
file, as ``infer`` reads them. Prints wall times and the peak RSS of this process.

    .venv/bin/python benchmarks/heads_nightly.py --images 3900000 --epochs 2 --dir /tmp/heads-bench
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DIM, LABELS, SHARD = 1280, 31, 1000


def write(root: Path, images: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Features files and the targets; returns (y, shard of each image)."""
    from pipeline.features.embeddings import batch_file, write_batch

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((DIM, LABELS)).astype("float32") / np.sqrt(DIM)
    bias = np.quantile(rng.standard_normal(10_000), 0.9)  # ~10% positives per label
    y = np.empty((images, LABELS), dtype="float32")
    shards = []
    for n, start in enumerate(range(0, images, SHARD)):
        rows = min(SHARD, images - start)
        x = rng.standard_normal((rows, DIM)).astype("float32")
        y[start:start + rows] = ((x @ w + 0.5 * rng.standard_normal((rows, LABELS))) > bias).astype("float32")
        shard = f"shards/shard-{n:06d}.tar"
        path = batch_file(str(root), shard)
        if not Path(path).exists():
            write_batch(path, [f"k{start + i}" for i in range(rows)], x, "bench")
        shards += [shard] * rows
    return y, shards


def index(root: Path, y, shards, rows, split: str):
    from training.data import ShardIndex

    names = sorted(set(shards[i] for i in rows))
    where = {p: i for i, p in enumerate(names)}
    idx = ShardIndex(split=split, paths=[f"store/{p}" for p in names],
                     shard=np.asarray([where[shards[i]] for i in rows], dtype="int32"),
                     offset=np.zeros(len(rows), "int64"), size=np.zeros(len(rows), "int64"),
                     keys=[f"k{i}" for i in rows], y=y[rows])
    from training.data import attach_features

    return attach_features(idx, str(root), "bench")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=3_900_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--dir", default="/tmp/heads-bench")
    args = p.parse_args(argv)

    import keras

    from training.data import ShardBatches
    from training.inputs import InputSpec, ModelInputs
    from training.losses import make_loss
    from training.model import build_head, predict_probs

    root = Path(args.dir)
    t0 = time.perf_counter()
    y, shards = write(root, args.images)
    t_write = time.perf_counter() - t0
    n_train = int(args.images * 0.8)
    inputs, spec = ModelInputs("features"), InputSpec(feature_dim=DIM)
    t0 = time.perf_counter()
    train = index(root, y, shards, np.arange(n_train), "train")
    t_index = time.perf_counter() - t0
    model = build_head(LABELS, inputs, spec)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=make_loss("weighted_bce", positives=y[:n_train].sum(0), total=n_train))
    ds = ShardBatches(train, args.batch, spec, inputs, shuffle=True, drop_remainder=True, workers=1)
    t0 = time.perf_counter()
    model.fit(ds, epochs=args.epochs, verbose=2)
    t_fit = time.perf_counter() - t0

    from pipeline.features.embeddings import batch_file, read_batch

    t0 = time.perf_counter()
    predicted = 0
    for shard in sorted(set(shards)):  # infer: every image, file by file
        _, x = read_batch(batch_file(str(root), shard), "bench", "infer")
        predicted += len(predict_probs(model, {"features": x}, args.batch))
    t_infer = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"images": args.images, "train_images": n_train, "epochs": args.epochs, "batch": args.batch,
                      "write_s": round(t_write, 1), "index_s": round(t_index, 1), "fit_s": round(t_fit, 1),
                      "fit_per_epoch_s": round(t_fit / args.epochs, 1), "infer_s": round(t_infer, 1),
                      "predicted": predicted, "nightly_s": round(t_index + t_fit + t_infer, 1),
                      "peak_rss_mb": round(peak)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
