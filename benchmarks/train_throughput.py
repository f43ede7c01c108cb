"""Training and inference throughput (images/s) of the topic model, and of the shard loader alone.

    KERAS_BACKEND=tensorflow python benchmarks/train_throughput.py --backbones B0,B2 --image-size 64 \
        --batch-size 128 --steps 20 [--inputs image,image+text] \
        [--index data/<date>/image_index/v1.3/headJ+depth --store data/images/<fp>]

Synthetic in-memory arrays always; with ``--index`` and ``--store`` (a run's
image index and the image store) also training from the store and loader-only speed. The
first epoch/call (tracing, compilation) is excluded from every timing. Prints
one JSON line.

``--paired R`` compares the first two ``--inputs`` modes the way a noisy machine allows: both
models are built and warmed up, then trained in turn, ``--steps`` steps each, R times, and the
figure is the median over the R rounds of (time per step of the second) / (time per step of the
first), with its range. Drift of the machine's speed hits both sides of a round alike.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.features.texts import DEFAULT_FIELDS  # noqa: E402


def _model(backbone, size, labels, lr, jit, inputs="image"):
    import keras

    from pipeline.features.texts import TextEncoding
    from training.losses import make_loss
    from training.model import build_model

    enc = TextEncoding(DEFAULT_FIELDS)
    model = build_model(labels, backbone, "none", size, inputs=inputs, text_shape=enc.shape, text_vocab=enc.vocab,
                        drop_text=0.2 if inputs == "image+text" else 0.0,
                        drop_image=0.1 if inputs == "image+text" else 0.0)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=make_loss("bce"), jit_compile=jit)
    return model


def _synthetic(inputs, n, size, labels):
    """Random images and token ids (about a third padding, as short captions leave), random labels."""
    from pipeline.features.texts import TextEncoding

    rng = np.random.default_rng(0)
    fields, tokens = TextEncoding(DEFAULT_FIELDS).shape
    x = {}
    if inputs != "text":
        x["image"] = rng.integers(0, 256, (n, size, size, 3)).astype("float32")
    if inputs != "image":
        ids = rng.integers(1, 32768, (n, fields, tokens)).astype("int32")
        x["text"] = np.where(rng.random(ids.shape) < 0.33, 0, ids).astype("int32")
    if inputs == "image+text":  # as training.data feeds it: every indexed image has bytes
        x["has_image"] = np.ones((n, 1), dtype="float32")
    return x, (rng.random((n, labels)) < 0.1).astype("float32")


def bench_synthetic(backbone, size, batch, steps, labels, jit, inputs="image") -> dict:
    from training.model import predict_probs

    n = batch * steps
    x, y = _synthetic(inputs, n, size, labels)
    model = _model(backbone, size, labels, 1e-3, jit, inputs)
    feed = x["image"] if inputs == "image" else x
    first = {k: v[:batch] for k, v in x.items()}
    model.fit(first["image"] if inputs == "image" else first, y[:batch], batch_size=batch, epochs=1, verbose=0)
    t = time.perf_counter()
    model.fit(feed, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
    train_ips = n / (time.perf_counter() - t)
    predict_probs(model, first, batch)
    t = time.perf_counter()
    predict_probs(model, x, batch)
    infer_ips = n / (time.perf_counter() - t)
    return {"train_images_per_s": round(train_ips, 1), "predict_images_per_s": round(infer_ips, 1), "images": n}


def bench_shards(index_path, store, backbone, size, batch, steps, labels, hierarchical, workers, jit,
                 inputs="image") -> dict:
    from pipeline.features.texts import TextEncoding
    from training import data
    from training.inputs import InputSpec, ModelInputs

    index = data.read_index(index_path, "train", labels, hierarchical, store)
    if len(index) == 0:
        raise SystemExit(f"{index_path}: no labeled, stored train images")
    ds = data.ShardBatches(index, batch, InputSpec(size, TextEncoding(DEFAULT_FIELDS)), ModelInputs(inputs),
                           shuffle=True, workers=workers)
    steps = min(steps, len(ds))
    t = time.perf_counter()
    seen = sum(len(ds[i][1]) for i in range(steps))  # decode + batch, single thread
    loader_ips = seen / (time.perf_counter() - t)
    model = _model(backbone, size, labels, 1e-3, jit, inputs)
    model.fit(ds, epochs=1, steps_per_epoch=1, verbose=0)  # warm-up
    t = time.perf_counter()
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
    train_ips = min(steps * ds.batch_size, len(index)) / (time.perf_counter() - t)
    return {"loader_images_per_s": round(loader_ips, 1), "train_images_per_s": round(train_ips, 1), "samples": len(index)}


def bench_paired(modes, backbone, size, batch, steps, labels, jit, rounds, index_path="", store="",
                 hierarchical=True, workers=2) -> dict:
    """Per-step time of modes[1] over modes[0], trained in turn (module docstring)."""
    from pipeline.features.texts import TextEncoding
    from training import data
    from training.inputs import InputSpec, ModelInputs

    n = batch * steps
    fits = []
    for mode in modes[:2]:
        model = _model(backbone, size, labels, 1e-3, jit, mode)
        if index_path:
            index = data.read_index(index_path, "train", labels, hierarchical, store)
            ds = data.ShardBatches(index, batch, InputSpec(size, TextEncoding(DEFAULT_FIELDS)), ModelInputs(mode),
                                   shuffle=True, workers=workers)
            model.fit(ds, epochs=1, steps_per_epoch=1, verbose=0)  # warm-up

            def fit(model=model, ds=ds):
                t = time.perf_counter()
                model.fit(ds, epochs=1, steps_per_epoch=min(steps, len(ds)), verbose=0)
                return time.perf_counter() - t
        else:
            x, y = _synthetic(mode, n, size, labels)
            feed = x["image"] if mode == "image" else x
            first = feed[:batch] if mode == "image" else {k: v[:batch] for k, v in x.items()}
            model.fit(first, y[:batch], batch_size=batch, epochs=1, verbose=0)  # warm-up

            def fit(model=model, feed=feed, y=y):
                t = time.perf_counter()
                model.fit(feed, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
                return time.perf_counter() - t
        fits.append(fit)
    ratios, times = [], ([], [])
    for _ in range(rounds):
        a, b = fits[0](), fits[1]()
        times[0].append(a)
        times[1].append(b)
        ratios.append(b / a)
    return {"modes": list(modes[:2]), "rounds": rounds, "steps_per_round": steps,
            "ratio_median": round(float(np.median(ratios)), 3),
            "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
            "s_per_step_median": [round(float(np.median(t)) / steps, 4) for t in times],
            "source": "store" if index_path else "in-memory arrays"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="B0,B2")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--labels", type=int, default=31)
    ap.add_argument("--index", default="", help="a run's image index (optional)")
    ap.add_argument("--store", default="", help="the image store folder the index points into")
    ap.add_argument("--flat", action="store_true", help="read multi_hot instead of multi_hot_hier")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--jit", action="store_true")
    ap.add_argument("--inputs", default="image", help="comma-separated train.inputs modes to time")
    ap.add_argument("--paired", type=int, default=0, metavar="R",
                    help="time the first two --inputs modes in turn, R rounds each (module docstring)")
    a = ap.parse_args(argv)

    import keras

    out = {
        "backend": keras.backend.backend(),
        "devices": [str(d) for d in keras.distribution.list_devices()],
        "image_size": a.image_size,
        "batch_size": a.batch_size,
        "steps": a.steps,
        "jit_compile": a.jit,
        "synthetic": {},
        "shards": {},
    }
    modes = [m.strip() for m in a.inputs.split(",") if m.strip()]
    if a.paired:
        if len(modes) < 2:
            raise SystemExit("--paired needs two --inputs modes")
        out["paired"] = {}
        for backbone in [b.strip() for b in a.backbones.split(",") if b.strip()]:
            out["paired"][backbone] = bench_paired(modes, backbone, a.image_size, a.batch_size, a.steps, a.labels,
                                                   a.jit, a.paired, a.index, a.store, not a.flat, a.workers)
        print(json.dumps(out, sort_keys=True))
        return 0
    for backbone in [b.strip() for b in a.backbones.split(",") if b.strip()]:
        for mode in modes:
            key = backbone if modes == ["image"] else f"{backbone}/{mode}"
            out["synthetic"][key] = bench_synthetic(backbone, a.image_size, a.batch_size, a.steps, a.labels,
                                                    a.jit, mode)
            if a.index:
                out["shards"][key] = bench_shards(a.index, a.store, backbone, a.image_size, a.batch_size, a.steps,
                                                  a.labels, not a.flat, a.workers, a.jit, mode)
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
