"""Stage ``embed``: the backbone's image features of every stored image of the run, computed once.

For each store shard holding an image of the run's index with bytes, and no
features file yet under the backbone's fingerprint, every stored image of that
shard goes through the one preprocessing (``pipeline.features.imaging.preprocess``)
and the backbone's image tower (``training.backbone``), and its fp16 features
are written next to the image store (``pipeline.features.embeddings``), one file
per shard, atomically. Shards never change, so a new dump embeds only the
shards its new images went to, and a night on the same dump embeds nothing; a
new backbone embeds every image once, under its own fingerprint.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pipeline.errors import StageError
from pipeline.features import embeddings
from pipeline.features.imaging import ImageError, preprocess
from pipeline.inputs.store import ImageStore, read_payload, store_root
from pipeline.lake.atomic import require_input
from pipeline.lake.layout import Layout
from training import backbone as backbones

STAGE = "embed"


def run_shards(index_path: str) -> list[str]:
    """The store shards holding the run's images that have bytes."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    table = ds.dataset(index_path, format="parquet").to_table(columns=["shard"], filter=ds.field("status") == "ok")
    return sorted(pc.unique(table.column("shard")).to_pylist())


def shard_images(store: str, shard: str) -> list[tuple[str, int, int]]:
    """(image key, byte offset, size) of every stored image of ``shard``, from its batch file in the manifest."""
    import pyarrow.parquet as pq

    manifest = Path(ImageStore(store).manifest) / Path(embeddings.batch_file("", shard)).name
    if not manifest.exists():
        raise StageError(STAGE, str(manifest), f"the store has no batch file for {shard}")
    table = pq.read_table(manifest, columns=["image_key", "status", "shard", "offset", "size"]).to_pylist()
    return [(r["image_key"], r["offset"], r["size"]) for r in table if r["status"] == "ok" and r["shard"] == shard]


def embed_shard(tower, store: str, shard: str, image_size: int, batch_size: int, pool) -> tuple[list[str], np.ndarray]:
    """(keys, float32 features) of every stored image of one shard, decoded by ``pool``'s threads."""
    from training.model import predict_probs

    path = f"{store.rstrip('/')}/{shard}"
    images = shard_images(store, shard)

    def pixels(item):
        key, offset, size = item
        try:
            return preprocess(read_payload(path, offset, size), image_size)
        except ImageError as e:
            raise StageError(STAGE, path, f"image {key!r} at byte {offset}: {e}") from e

    out = [np.zeros((0, int(tower.output.shape[-1])), "float32")]
    for start in range(0, len(images), batch_size):  # one batch of pixels in memory at a time
        x = np.stack(list(pool.map(pixels, images[start:start + batch_size]))).astype("float32")
        rows = len(x)  # padded to one shape, so the tower is traced once, whatever the shards' sizes
        x = np.concatenate([x, np.zeros((batch_size - rows, *x.shape[1:]), "float32")])
        out.append(predict_probs(tower, x, batch_size)[:rows])
    return [k for k, _, _ in images], np.concatenate(out)


def run(settings) -> dict:
    """Embed what is missing; returns the stage summary."""
    layout = Layout.from_settings(settings)
    index_path = require_input(STAGE, layout.image_index, "image index (from the shard stage)")
    backbone = backbones.resolve(settings)
    summary = {"stage": STAGE, "backbone": None, "shards": 0, "shards_embedded": 0, "images_embedded": 0}
    if backbone is None:
        # The first night of a taxonomy: nothing to embed with until a model with an image tower is champion.
        return {**summary, "reason": "no backbone: no registered model with an image tower "
                                     f"({settings.embed.backbone_uri or 'champion'}); train fine-tunes one"}
    store = store_root(settings)
    root = backbone.features_root(settings)
    shards = run_shards(index_path)
    todo = embeddings.missing_shards(root, shards)
    summary.update(backbone=backbone.as_dict(), features=root, shards=len(shards))
    t0, images = time.perf_counter(), 0
    if todo:
        tower = backbones.load_tower(settings, backbone)
        embeddings.write_backbone(root, backbone.as_dict())
        with ThreadPoolExecutor(max(1, settings.embed.decode_threads)) as pool:
            for shard in todo:
                keys, features = embed_shard(tower, store, shard, backbone.image_size, settings.embed.batch_size, pool)
                embeddings.write_batch(embeddings.batch_file(root, shard), keys, features, backbone.fingerprint)
                images += len(keys)
    seconds = time.perf_counter() - t0
    summary.update(shards_embedded=len(todo), images_embedded=images, seconds=round(seconds, 2),
                   images_per_s=round(images / seconds, 1) if images else None,
                   pruned=prune(store, backbone.fingerprint) if settings.embed.prune_other_backbones else [])
    return summary


def prune(store: str, keep: str) -> list[str]:
    """Remove the features of every backbone but ``keep``; returns the fingerprints removed."""
    folder = Path(store) / embeddings.FEATURES
    gone = [p.name for p in folder.iterdir() if p.is_dir() and p.name != keep] if folder.exists() else []
    for name in gone:
        shutil.rmtree(folder / name)
    return gone
