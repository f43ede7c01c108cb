"""Backend-neutral input pipeline: the run's image index plus the image store.

The shard stage's index (``Layout.image_index``) gives, for every image of the
run, its split, its multi-hot targets and where its bytes are in the store
(tar, byte offset, size). So a split's index is read from Parquet without
opening a tar, and batches are read by random access: any batch can be built
by any worker (thread or process), and a seeded global permutation per epoch
shuffles both across and within shards. Images are resized when read
(``pipeline.imaging.preprocess``), so another ``train.image_size`` needs no new
download. Unlabeled images and images the store has no bytes for are counted,
not used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import keras
import numpy as np

from pipeline.errors import StageError
from pipeline.imaging import ImageError, preprocess
from pipeline.layout import Layout
from pipeline.store import close_handles, read_payload, store_root  # noqa: F401  (close_handles re-exported)

STAGE = "train"


@dataclass
class ShardIndex:
    """Where each labeled, stored image of a split lives, and its targets."""

    split: str
    paths: list[str]
    shard: np.ndarray  # int32 index into paths
    offset: np.ndarray  # int64 byte offset of the payload in its tar
    size: np.ndarray  # int64 payload size
    keys: list[str]
    y: np.ndarray  # float32 (n, labels)
    unlabeled: int = 0
    missing: int = 0  # labeled, but the store has no bytes (download failed)
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)


def read_index(index_path: str, split: str, num_labels: int, hierarchical: bool, store: str) -> ShardIndex:
    """The labeled, stored images of ``split`` in the run's image index at ``index_path``."""
    import pyarrow.dataset as ds

    from pipeline.atomic import exists

    if not exists(index_path):
        raise StageError(STAGE, index_path, "missing image index (did the shard stage run for this dump date?)")
    target = "multi_hot_hier" if hierarchical else "multi_hot"
    table = ds.dataset(index_path, format="parquet").to_table(
        columns=["image_key", "labeled", "status", "shard", "offset", "size", target],
        filter=ds.field("split") == split,
    )
    labeled = table.column("labeled").to_numpy(zero_copy_only=False)
    ok = (table.column("status").to_numpy(zero_copy_only=False) == "ok")
    unlabeled, missing = int((~labeled & ok).sum()), int((labeled & ~ok).sum())
    import pyarrow as pa

    table = table.filter(pa.array(labeled & ok)).sort_by([("shard", "ascending"), ("offset", "ascending")])
    shards = table.column("shard").to_pylist()
    paths = sorted(set(shards))
    where = {p: i for i, p in enumerate(paths)}
    hot = table.column(target)
    y = np.asarray(hot.combine_chunks().flatten().to_numpy(zero_copy_only=False), dtype="float32") \
        if len(table) else np.zeros(0, dtype="float32")
    if len(table) and y.size != len(table) * num_labels:
        raise StageError(STAGE, index_path, f"{target} holds {y.size // max(1, len(table))} labels per image, "
                                            f"the taxonomy has {num_labels}")
    return ShardIndex(
        split=split,
        paths=[f"{store.rstrip('/')}/{p}" for p in paths],
        shard=np.asarray([where[p] for p in shards], dtype="int32"),
        offset=table.column("offset").to_numpy().astype("int64"),
        size=table.column("size").to_numpy().astype("int64"),
        keys=table.column("image_key").to_pylist(),
        y=y.reshape(len(table), num_labels),
        unlabeled=unlabeled,
        missing=missing,
    )


def split_index(settings, split: str, num_labels: int, hierarchical: bool | None = None) -> ShardIndex:
    """Index one split for ``settings``; a split with no labeled, stored image is a StageError."""
    path = Layout.from_settings(settings).image_index
    hier = settings.train.hierarchical if hierarchical is None else hierarchical
    index = read_index(path, split, num_labels, hier, store_root(settings))
    if len(index) == 0:
        raise StageError(STAGE, path, f"split {split!r} has no labeled, stored images "
                                      f"({index.unlabeled} unlabeled, {index.missing} without bytes)")
    return index


def read_images(index: ShardIndex, rows, image_size: int) -> np.ndarray:
    """uint8 images for ``rows`` of ``index``, read in file order for locality."""
    rows = np.asarray(rows)
    out = np.empty((len(rows), image_size, image_size, 3), dtype="uint8")
    for pos in np.lexsort((index.offset[rows], index.shard[rows])):
        r = rows[pos]
        path = index.paths[index.shard[r]]
        data = read_payload(path, int(index.offset[r]), int(index.size[r]))
        try:
            out[pos] = preprocess(data, image_size)
        except ImageError as e:
            raise StageError(STAGE, path, f"sample {index.keys[r]!r} at byte {index.offset[r]}: {e}") from e
    return out


class ShardBatches(keras.utils.PyDataset):
    """Batches (x float32 NHWC 0..255, y float32 multi-hot) of one split, reshuffled every epoch."""

    def __init__(
        self,
        index: ShardIndex,
        batch_size: int,
        image_size: int,
        shuffle: bool = True,
        seed: int = 0,
        workers: int = 1,
        use_multiprocessing: bool = False,
        max_queue_size: int = 10,
    ):
        super().__init__(workers=max(1, workers), use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        if len(index) == 0:
            raise StageError(STAGE, index.split, f"split {index.split!r} has no labeled samples")
        self.index = index
        self.batch_size = max(1, min(int(batch_size), len(index)))
        self.image_size = image_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self._set_order()

    def _set_order(self):
        n = len(self.index)
        if self.shuffle:
            self.order = np.random.default_rng([self.seed, self.epoch]).permutation(n)
        else:
            self.order = np.arange(n)

    def __len__(self) -> int:
        return math.ceil(len(self.index) / self.batch_size)

    def __getitem__(self, i):
        rows = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        x = read_images(self.index, rows, self.image_size).astype("float32")
        return x, self.index.y[rows]

    def on_epoch_end(self):
        self.epoch += 1
        self._set_order()


def load_arrays(index: ShardIndex, image_size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A whole (small) split in memory: uint8 images, float32 targets, keys."""
    return read_images(index, np.arange(len(index)), image_size), index.y, list(index.keys)
