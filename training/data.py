"""Backend-neutral input pipeline from the shard stage's WebDataset tars.

One pass over a split's tars indexes every labeled sample (the byte offset and
size of its JPEG inside its tar, plus its multi-hot vector from the JSON), so
batches are then read by random access: any batch can be built by any worker
(thread or process), and a seeded global permutation per epoch shuffles both
across and within shards. Unlabeled samples are skipped and counted.
"""

from __future__ import annotations

import io
import json
import math
import os
import tarfile
import threading
from dataclasses import dataclass, field

import fsspec
import numpy as np
import keras
from PIL import Image

from pipeline.errors import StageError
from pipeline.layout import Layout

STAGE = "train"


@dataclass
class ShardIndex:
    """Where each labeled sample of a split lives, and its targets."""

    split: str
    paths: list[str]
    shard: np.ndarray  # int32 index into paths
    offset: np.ndarray  # int64 byte offset of the jpg payload
    size: np.ndarray  # int64 jpg payload size
    keys: list[str]
    y: np.ndarray  # float32 (n, labels)
    unlabeled: int = 0
    taxonomy: str | None = None
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)


def shard_paths(split_dir: str) -> list[str]:
    fs, _, _ = fsspec.get_fs_token_paths(split_dir)
    if not fs.exists(split_dir):
        raise StageError(STAGE, split_dir, "missing shard directory (did the shard stage run?)")
    paths = sorted(p for p in fs.glob(split_dir.rstrip("/") + "/shard-*.tar"))
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    if protocol not in ("file", "local"):
        paths = [f"{protocol}://{p}" for p in paths]
    return paths


def _split_name(name: str) -> tuple[str, str]:
    """WebDataset convention: key = basename up to its first dot, the rest is the extension."""
    d, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{d}/{stem}" if d else stem), ext


def index_shards(
    paths: list[str],
    split: str,
    num_labels: int,
    hierarchical: bool,
    taxonomy: str | None = None,
) -> ShardIndex:
    """Index the labeled samples of ``paths``; a malformed sample is a StageError naming shard and key."""
    target = "multi_hot_hier" if hierarchical else "multi_hot"
    shard_ids, offsets, sizes, keys, ys = [], [], [], [], []
    unlabeled = 0
    for si, path in enumerate(paths):
        samples: dict[str, dict] = {}
        order: list[str] = []
        try:
            with fsspec.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    key, ext = _split_name(member.name)
                    if key not in samples:
                        samples[key] = {}
                        order.append(key)
                    if ext == "jpg":
                        samples[key]["jpg"] = (member.offset_data, member.size)
                    elif ext == "json":
                        samples[key]["json"] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError) as e:
            raise StageError(STAGE, path, f"unreadable tar shard: {e}") from e
        for key in order:
            s = samples[key]
            if "json" not in s:
                raise StageError(STAGE, path, f"sample {key!r} has no .json member")
            try:
                meta = json.loads(s["json"])
            except ValueError as e:
                raise StageError(STAGE, path, f"sample {key!r}: invalid JSON: {e}") from e
            if not meta.get("labeled"):
                unlabeled += 1
                continue
            if "jpg" not in s:
                raise StageError(STAGE, path, f"sample {key!r} has no .jpg member")
            if taxonomy is not None and meta.get("taxonomy") not in (None, taxonomy):
                raise StageError(
                    STAGE, path, f"sample {key!r} is labeled with taxonomy {meta.get('taxonomy')!r}, expected {taxonomy!r}"
                )
            vec = meta.get(target)
            if not isinstance(vec, list) or len(vec) != num_labels:
                raise StageError(
                    STAGE, path, f"sample {key!r}: {target} must be a list of {num_labels} 0/1 values, got {vec!r:.80}"
                )
            shard_ids.append(si)
            offsets.append(s["jpg"][0])
            sizes.append(s["jpg"][1])
            keys.append(key.rpartition("/")[2])
            ys.append(vec)
    return ShardIndex(
        split=split,
        paths=list(paths),
        shard=np.asarray(shard_ids, dtype="int32"),
        offset=np.asarray(offsets, dtype="int64"),
        size=np.asarray(sizes, dtype="int64"),
        keys=keys,
        y=np.asarray(ys, dtype="float32").reshape(len(keys), num_labels),
        unlabeled=unlabeled,
        taxonomy=taxonomy,
    )


def split_index(settings, split: str, num_labels: int, hierarchical: bool | None = None) -> ShardIndex:
    """Index one split of the shards for ``settings``; an empty split is a StageError."""
    split_dir = Layout.from_settings(settings).shard_dir(split)
    paths = shard_paths(split_dir)
    if not paths:
        raise StageError(STAGE, split_dir, f"split {split!r} has no shard-*.tar files")
    hier = settings.train.hierarchical if hierarchical is None else hierarchical
    index = index_shards(paths, split, num_labels, hier, taxonomy=settings.label.taxonomy)
    if len(index) == 0:
        raise StageError(
            STAGE, split_dir, f"split {split!r} has no labeled samples ({index.unlabeled} unlabeled) in {len(paths)} shard(s)"
        )
    return index


_LOCAL = threading.local()


def _handles() -> dict:
    """This thread's open shard files; dropped (and closed) when the thread ends.

    Per thread because seek+read must not interleave between loader workers;
    keyed by pid because a forked worker must not share its parent's file offsets.
    """
    cache = getattr(_LOCAL, "files", None)
    if cache is None or cache.get("__pid__") != os.getpid():
        cache = _LOCAL.files = {"__pid__": os.getpid()}
    return cache


def _handle(path: str):
    cache = _handles()
    f = cache.get(path)
    if f is None:
        f = cache[path] = fsspec.open(path, "rb").open()
    return f


def close_handles() -> None:
    """Close the calling thread's cached shard files."""
    cache = _handles()
    for path in [p for p in cache if p != "__pid__"]:
        try:
            cache.pop(path).close()
        except OSError:
            pass


def decode(data: bytes, image_size: int, where: str = "") -> np.ndarray:
    """JPEG/PNG bytes -> uint8 (image_size, image_size, 3), resized only when needed."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            if im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.BILINEAR)
            return np.asarray(im, dtype="uint8")
    except Exception as e:  # PIL raises many types for corrupt data
        raise StageError(STAGE, where or "<bytes>", f"cannot decode image: {e}") from e


def read_images(index: ShardIndex, rows, image_size: int) -> np.ndarray:
    """uint8 images for ``rows`` of ``index``, read in file order for locality."""
    rows = np.asarray(rows)
    out = np.empty((len(rows), image_size, image_size, 3), dtype="uint8")
    for pos in np.lexsort((index.offset[rows], index.shard[rows])):
        r = rows[pos]
        path = index.paths[index.shard[r]]
        f = _handle(path)
        f.seek(int(index.offset[r]))
        out[pos] = decode(f.read(int(index.size[r])), image_size, f"{path} (sample {index.keys[r]!r})")
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
