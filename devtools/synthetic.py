"""Synthetic images in the image store plus a run index, following the shard stage's contract.

For tests and benchmarks. Images depend on the labels (one solid colour per
label, an image with two labels is split in halves, plus noise), so a small
model can learn them. Each image also gets texts in the index's text columns:
names, dates and filler words, and with ``complementary`` the words of the
topics its pixels do not show (``devtools.sample.captions.TOPIC_WORDS``):
each of an image's labels is shown in the pixels only, named in the texts
only, or both, so neither input alone tells every label and the two together
do.
"""

from __future__ import annotations

import hashlib
import io
import os
import random

import numpy as np
from PIL import Image

from devtools.sample import captions
from pipeline.inputs.store import Attempt, ImageStore, index_schema, store_root
from pipeline.labels.taxonomy import Taxonomy
from pipeline.lake.layout import SPLITS, Layout

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


# Where a label of a complementary image shows: pixels only, texts only, both.
WHERE = ("image", "text", "both")
WHERE_SHARES = (0.4, 0.4, 0.2)


def _texts(rng: random.Random, named: list[str]) -> dict:
    """Index text columns for an image whose texts name the labels ``named`` (maybe none)."""
    words = [captions.TOPIC_WORDS[lab][0][rng.randrange(4)] for lab in named]
    caption = " ".join([*words, rng.choice(captions.FILLER), captions.person_name(rng)])
    return {
        "page_titles": [rng.choice(captions.PLACES).title()],
        "section_titles": [],
        "reference_captions": [caption] if (words or rng.random() < 0.5) else [],
        "attribution_captions": [f"English: {captions.date_text(rng)}"] if rng.random() < 0.5 else [],
        "alt_captions": [],
    }


def write_images(settings, sizes: dict[str, int], shard_size: int = 100, seed: int = 0, size: int = 32,
                 used_labels=DEFAULT_LABELS, unlabeled_every: int = 0, complementary: bool = False) -> dict:
    """Store synthetic images for every split in ``sizes`` and write the run's image index.

    Returns {"store": root, "index": path, "shards": [tar paths]}.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    tax = Taxonomy.load(settings.label.taxonomy)
    names = tax.names
    colours = label_colours(len(used_labels))
    store = ImageStore(store_root(settings))
    writer = store.writer(shard_size)
    rows = []
    for split, n in sizes.items():
        rng = np.random.default_rng([seed, SPLITS.index(split) if split in SPLITS else 99])
        for i in range(n):
            k = 2 if rng.random() < 0.3 else 1
            chosen = sorted(rng.choice(len(used_labels), size=k, replace=False).tolist())
            labels = [n_ for n_ in names if n_ in {used_labels[j] for j in chosen}]
            labeled = not (unlabeled_every and i % unlabeled_every == unlabeled_every - 1)
            labels = labels if labeled else []
            hier = tax.with_ancestors(labels)
            title = f"File:Synthetic {split} {i}.jpg"
            key = hashlib.sha1(title.encode()).hexdigest()[:16]
            # the texts' own generator, so the pixels are the same with or without them
            trng = random.Random(f"{seed}-{split}-{i}")
            shown, named = chosen, []
            if complementary:
                where = {j: trng.choices(WHERE, WHERE_SHARES)[0] for j in chosen}
                shown = [j for j in chosen if where[j] != "text"]
                named = [used_labels[j] for j in chosen if where[j] != "image"]
            buf = io.BytesIO()
            Image.fromarray(make_image(shown, colours, size, rng)).save(buf, format="JPEG", quality=90)
            writer.add(Attempt(key, title, f"synthetic://{key}", "ok", payload=buf.getvalue(), ext="jpg",
                               width=size, height=size, bytes=len(buf.getvalue()), attempts=1, mime="image/jpeg"))
            rows.append({"image_key": key, "file_title": title, "split": split, "labeled": labeled,
                         "labels": labels, "labels_hier": hier,
                         "multi_hot": [float(v) for v in tax.multi_hot(labels)],
                         "multi_hot_hier": [float(v) for v in tax.multi_hot(hier)], **_texts(trng, named)})
    writer.commit()
    located = {}
    for path in store.manifest_files():
        for r in pq.read_table(path).to_pylist():
            located[r["image_key"]] = r
    for r in rows:
        m = located[r["image_key"]]
        r.update(status="ok", shard=m["shard"], offset=m["offset"], size=m["size"], error=None)
    index = Layout.from_settings(settings).image_index
    os.makedirs(index, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=index_schema()), os.path.join(index, "part-0.parquet"))
    return {"store": str(store.root), "index": index,
            "shards": sorted(str(p) for p in store.shards.glob("shard-*.tar"))}
