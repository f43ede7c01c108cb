"""Backend-neutral input pipeline: the run's image index plus the image store.

The shard stage's index (``Layout.image_index``) gives, for every image of the
run, its split, its multi-hot targets and where its bytes are in the store
(tar, byte offset, size). So a split's index is read from Parquet without
opening a tar, and batches are read by random access: any batch can be built
by any worker (thread or process), and a seeded global permutation per epoch
shuffles both across and within shards. Images are resized when read
(``pipeline.features.imaging.preprocess``), so another ``train.image_size`` needs no new
download. Unlabeled images and images the store has no bytes for are counted,
not used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import keras
import numpy as np

from pipeline.errors import StageError
from pipeline.features.imaging import ImageError, preprocess
from pipeline.features.texts import TEXT_COLUMNS
from pipeline.inputs.store import close_handles, read_payload, store_root  # noqa: F401  (close_handles re-exported)
from pipeline.lake.layout import Layout

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
    source: str = ""  # the image index it was read from
    texts: object = None  # pyarrow Table of the text columns, row-aligned; read on demand (read_texts)
    features: object = None  # pipeline.features.embeddings.FeatureIndex, row-aligned (attach_features)

    @property
    def shard_names(self) -> list[str]:
        """Each row's shard, relative to the store (``shards/shard-NNNNNN.tar``)."""
        names = [p.rsplit("/", 2) for p in self.paths]
        return [f"{names[i][-2]}/{names[i][-1]}" for i in self.shard]

    def __len__(self) -> int:
        return len(self.keys)


def read_index(index_path: str, split: str, num_labels: int, hierarchical: bool, store: str) -> ShardIndex:
    """The labeled, stored images of ``split`` in the run's image index at ``index_path``."""
    import pyarrow.dataset as ds

    from pipeline.lake.atomic import exists

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
        source=index_path,
    )


def _text_table(index: ShardIndex):
    """The index's text columns for ``index``'s images, in its row order (read once, kept)."""
    if index.texts is None:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        dataset = ds.dataset(index.source, format="parquet")
        missing = [c for c in ("file_title", *TEXT_COLUMNS) if c not in dataset.schema.names]
        if missing:
            raise StageError(STAGE, index.source, f"the image index has no text columns {missing} "
                                                  f"(written before texts were indexed: re-run the shard stage)")
        table = dataset.to_table(columns=["image_key", "file_title", *TEXT_COLUMNS],
                                 filter=ds.field("split") == index.split)
        where = pc.index_in(pa.array(index.keys, pa.string()), table.column("image_key"))
        if where.null_count:
            raise StageError(STAGE, index.source, f"{where.null_count} images of split {index.split!r} "
                                                  f"have no row with texts")
        index.texts = table.take(where).drop_columns(["image_key"])
    return index.texts


def read_texts(index: ShardIndex, rows, encoding) -> "np.ndarray":
    """Text ids (rows, fields, tokens) for ``rows`` of ``index``, by ``encoding`` (``pipeline.features.texts``)."""
    import pyarrow as pa

    table = _text_table(index).select(encoding.columns).take(pa.array(np.asarray(rows, dtype="int64")))
    return encoding.encode_rows(table.to_pylist())


def read_inputs(index: ShardIndex, rows, inputs, spec) -> dict:
    """The model inputs for ``rows`` (``training.inputs.ModelInputs.read``: each input reads its own part)."""
    return inputs.read(index, rows, spec)


def attach_features(index: ShardIndex, root: str, fingerprint: str) -> ShardIndex:
    """Give ``index`` its images' stored features (``pipeline.features.embeddings``); StageError where any lacks them."""
    from pipeline.features.embeddings import FeatureIndex

    index.features = FeatureIndex(root, fingerprint, index.shard_names, index.keys, STAGE)
    return index


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
    """Batches (x, y float32 multi-hot) of one split, reshuffled every epoch.

    x is the dict ``inputs`` reads (``training.inputs``: float32 NHWC 0..255 ``image``,
    int32 ``text`` ids, float32 ``features``), or the bare image array for a model
    that reads pixels only. ``drop_remainder`` (for training) leaves out each
    epoch's last, partial batch, as ``tf.data`` and PyTorch do: every step then
    has one shape, so the train step is traced once (a second shape retraces it,
    seconds of CPU for EfficientNet), and BatchNormalization never sees a batch
    of a few images. The reshuffle leaves out other images each epoch.

    Stored features are read by file, so their order is shuffled as WebDataset
    shuffles: shards in a new order each epoch, images within windows of
    ``window_shards`` shards. Memory stays at a window's features whatever the split's size.
    """

    def __init__(
        self,
        index: ShardIndex,
        batch_size: int,
        spec,
        inputs,
        shuffle: bool = True,
        seed: int = 0,
        workers: int = 1,
        use_multiprocessing: bool = False,
        max_queue_size: int = 10,
        drop_remainder: bool = False,
        window_shards: int = 32,
    ):
        super().__init__(workers=max(1, workers), use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        if len(index) == 0:
            raise StageError(STAGE, index.split, f"split {index.split!r} has no labeled samples")
        self.index = index
        self.batch_size = max(1, min(int(batch_size), len(index)))
        self.spec, self.inputs = spec, inputs
        if inputs.reads_words:
            _text_table(index)  # read once here, not by every loader thread at once
        self.shuffle = shuffle
        self.drop_remainder = drop_remainder
        self.seed = seed
        self.window_shards = max(1, window_shards)
        self.epoch = 0
        self._set_order()

    def _set_order(self):
        n = len(self.index)
        if not self.shuffle:
            self.order = np.arange(n)
            return
        rng = np.random.default_rng([self.seed, self.epoch])
        if not self.inputs.reads_features:
            self.order = rng.permutation(n)
            return
        # rows are in shard order: shuffle the shards, then the rows within each window of shards
        shards = rng.permutation(len(self.index.paths))
        rank = np.empty_like(shards)
        rank[shards] = np.arange(len(shards))
        by_shard = np.argsort(rank[self.index.shard], kind="stable")
        window = rank[self.index.shard[by_shard]] // self.window_shards
        self.order = by_shard[np.lexsort((rng.random(n), window))]

    def __len__(self) -> int:
        if self.drop_remainder:
            return len(self.index) // self.batch_size
        return math.ceil(len(self.index) / self.batch_size)

    def __getitem__(self, i):
        rows = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        x = self.inputs.read(self.index, rows, self.spec)
        if "image" in x:
            x["image"] = x["image"].astype("float32")
        return (x["image"] if list(x) == ["image"] else x), self.index.y[rows]

    def on_epoch_end(self):
        self.epoch += 1
        self._set_order()


def load_inputs(index: ShardIndex, inputs, spec) -> dict:
    """A whole (small) split's model inputs in memory (``inputs.read`` over every row)."""
    return inputs.read(index, np.arange(len(index)), spec)
