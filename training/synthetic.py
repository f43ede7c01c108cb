"""Synthetic WebDataset shards following the shard stage's contract, for tests and benchmarks.

Images depend on the labels (one solid colour per label, an image with two
labels is split in halves, plus noise), so a small model can learn them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os

import numpy as np
from PIL import Image

from pipeline.layout import SPLITS, Layout
from pipeline.taxonomy import Taxonomy

DEFAULT_LABELS = ("Plants", "Animals", "Space", "Architecture", "Maps & Flags", "People", "Sports", "Art")


def label_colours(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 3)).astype("float32")


def make_image(labels_idx, colours, size: int, rng) -> np.ndarray:
    img = np.zeros((size, size, 3), dtype="float32")
    parts = np.array_split(np.arange(size), max(1, len(labels_idx)))
    for cols, j in zip(parts, labels_idx):
        img[:, cols] = colours[j]
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype("uint8")


def write_split(
    out_dir: str,
    split: str,
    n: int,
    taxonomy: Taxonomy,
    size: int = 32,
    shard_size: int = 100,
    used_labels=DEFAULT_LABELS,
    seed: int = 0,
    unlabeled_every: int = 0,
) -> list[str]:
    """Write ``n`` samples of ``split`` into ``out_dir/shard-NNNNNN.tar``; returns the shard paths."""
    import webdataset as wds

    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng([seed, SPLITS.index(split) if split in SPLITS else 99])
    names = taxonomy.names
    colours = label_colours(len(used_labels))
    paths = []
    writer = None
    for i in range(n):
        if i % shard_size == 0:
            if writer is not None:
                writer.close()
            path = os.path.join(out_dir, f"shard-{i // shard_size:06d}.tar")
            paths.append(path)
            writer = wds.TarWriter(path)
        k = 2 if rng.random() < 0.3 else 1
        chosen = sorted(rng.choice(len(used_labels), size=k, replace=False).tolist())
        labels = [n_ for n_ in names if n_ in {used_labels[j] for j in chosen}]
        hier = taxonomy.with_ancestors(labels)
        labeled = not (unlabeled_every and i % unlabeled_every == unlabeled_every - 1)
        title = f"File:Synthetic {split} {i}.jpg"
        key = hashlib.sha1(title.encode()).hexdigest()[:16]
        buf = io.BytesIO()
        Image.fromarray(make_image(chosen, colours, size, rng)).save(buf, format="JPEG", quality=90)
        meta = {
            "image_key": key,
            "file_title": title,
            "split": split,
            "labeled": labeled,
            "labels": labels if labeled else [],
            "labels_hier": hier if labeled else [],
            "multi_hot": taxonomy.multi_hot(labels if labeled else []),
            "multi_hot_hier": taxonomy.multi_hot(hier if labeled else []),
            "taxonomy": taxonomy.version,
            "page_titles": [],
            "reference_captions": [],
            "attribution_captions": [],
            "alt_captions": [],
        }
        writer.write({"__key__": key, "jpg": buf.getvalue(), "json": json.dumps(meta).encode()})
    if writer is not None:
        writer.close()
    return paths


def write_shards(settings, sizes: dict[str, int], shard_size: int = 100, seed: int = 0, **kw) -> dict[str, list[str]]:
    """Synthetic shards for every split in ``sizes`` at ``Layout.shard_dir(split)``."""
    tax = Taxonomy.load(settings.label.taxonomy)
    layout = Layout.from_settings(settings)
    return {
        split: write_split(layout.shard_dir(split), split, n, tax, settings.shard.image_size, shard_size, seed=seed, **kw)
        for split, n in sizes.items()
    }
