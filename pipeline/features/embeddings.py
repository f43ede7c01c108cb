"""The image features store: each stored image's pooled features under one image tower, computed once.

Pixels never change, so the ``embed`` stage runs each image of the image store
(``pipeline.inputs.store``) through a backbone's image tower once and keeps the
result next to the store, one folder per backbone fingerprint
(``training.model.backbone_fingerprint``: the tower's weights and input size)::

    <store>/features/<fingerprint>/backbone.json           which model version it came from
    <store>/features/<fingerprint>/batch-NNNNNN.parquet    one per store batch (shard-NNNNNN.tar)

A batch file holds ``image_key`` and ``features`` (fp16, little-endian, as
fixed-size binary) for every stored image of its shard, with the backbone's
fingerprint in the file's metadata; it is written to a temporary sibling and
renamed, so it is there whole or not at all. Shards are never rewritten, so a
batch file, once there, is complete for good: the next dump embeds only the
new shards. Features of another fingerprint are never read for this one.
"""

from __future__ import annotations

import io
import json
import re
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from pipeline.errors import StageError
from pipeline.lake.atomic import write_atomic

FEATURES = "features"
_SHARD = re.compile(r"shard-([0-9]{6,})\.tar$")
META_KEY = b"wiki_image_topics.features"


def features_root(store: str, fingerprint: str) -> str:
    return f"{store.rstrip('/')}/{FEATURES}/{fingerprint}"


def batch_file(root: str, shard: str) -> str:
    """The features file of a store shard (``shards/shard-000012.tar`` -> ``batch-000012.parquet``)."""
    m = _SHARD.search(shard)
    if not m:
        raise ValueError(f"not a store shard: {shard!r}")
    return f"{root}/batch-{m.group(1)}.parquet"


def write_batch(path: str, keys: list[str], features: np.ndarray, fingerprint: str, stage: str = "embed") -> None:
    """Write one batch file atomically: ``keys`` and their features (N x dim), stored as fp16."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    half = np.ascontiguousarray(features, dtype="<f2")
    if half.ndim != 2 or len(half) != len(keys):
        raise StageError(stage, path, f"features of shape {half.shape} for {len(keys)} images")
    dim = half.shape[1]
    column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(dim * 2), len(keys), [None, pa.py_buffer(half.tobytes())])
    meta = {META_KEY: json.dumps({"fingerprint": fingerprint, "dim": dim}).encode()}
    table = pa.table({"image_key": pa.array(keys, pa.string()), "features": column}).replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="none")  # fp16 noise barely compresses; reads stay memcpy-fast
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(Path(path), buf.getvalue())


def read_batch(path: str, fingerprint: str, stage: str) -> tuple[list[str], np.ndarray]:
    """(keys, float32 N x dim) of one batch file, checked: a missing, truncated or foreign file is a StageError."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except FileNotFoundError as e:
        raise StageError(stage, path, "features file is missing (run the embed stage)") from e
    except Exception as e:  # noqa: BLE001 - pyarrow's own error says what is wrong with the file
        raise StageError(stage, path, f"unreadable features file (truncated?): {e}") from e
    meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
    if meta.get("fingerprint") != fingerprint:
        raise StageError(stage, path, f"features of backbone {meta.get('fingerprint')!r}, expected {fingerprint!r}")
    column = table.column("features").combine_chunks()
    dim = int(meta["dim"])
    if column.type.byte_width != dim * 2 or column.null_count:
        raise StageError(stage, path, f"features column of {column.type} with {column.null_count} nulls, "
                                      f"expected {dim} fp16 values per image")
    values = np.frombuffer(column.buffers()[1], dtype="<f2", count=len(column) * dim,
                           offset=column.offset * dim * 2).reshape(len(column), dim)
    return table.column("image_key").to_pylist(), values.astype("float32")


def read_backbone(root: str) -> dict | None:
    path = Path(root) / "backbone.json"
    return json.loads(path.read_text()) if path.exists() else None


def write_backbone(root: str, info: dict) -> None:
    Path(root).mkdir(parents=True, exist_ok=True)
    write_atomic(Path(root) / "backbone.json", json.dumps(info, indent=2, sort_keys=True).encode())


def missing_shards(root: str, shards) -> list[str]:
    """The shards, of those given, that have no features file under ``root`` yet."""
    return [s for s in sorted(set(shards)) if not Path(batch_file(root, s)).exists()]


class FeatureIndex:
    """Features of given images, read by row from their batch files (a few files decoded at a time).

    ``shards[i]`` and ``keys[i]`` name row i's image; ``read(rows)`` returns float32
    (len(rows), dim). Files are decoded whole and kept in a small LRU, so rows
    read in shard order (``training.data`` shuffles within windows of shards)
    decode each file about once an epoch, and memory stays at ``cache_files``
    files whatever the number of images.
    """

    def __init__(self, root: str, fingerprint: str, shards, keys, stage: str, cache_files: int = 64):
        import pyarrow.parquet as pq

        self.root, self.fingerprint, self.stage = root, fingerprint, stage
        self.files = sorted({batch_file(root, s) for s in shards})
        where = {f: i for i, f in enumerate(self.files)}
        self.file = np.asarray([where[batch_file(root, s)] for s in shards], dtype="int32")
        self.row = np.full(len(keys), -1, dtype="int64")
        self.dim = 0
        by_file = np.argsort(self.file, kind="stable")
        bounds = np.searchsorted(self.file[by_file], np.arange(len(self.files) + 1))
        for i, f in enumerate(self.files):
            try:
                file_keys = pq.read_table(f, columns=["image_key"]).column("image_key").to_pylist()
                self.dim = self.dim or int(json.loads(pq.read_schema(f).metadata[META_KEY])["dim"])
            except FileNotFoundError as e:
                raise StageError(stage, f, "features file is missing (run the embed stage)") from e
            except Exception as e:  # noqa: BLE001
                raise StageError(stage, f, f"unreadable features file (truncated?): {e}") from e
            pos = {k: j for j, k in enumerate(file_keys)}
            for r in by_file[bounds[i]:bounds[i + 1]]:
                self.row[r] = pos.get(keys[r], -1)
        if (self.row < 0).any():
            r = int(np.nonzero(self.row < 0)[0][0])
            raise StageError(stage, self.files[self.file[r]], f"no features for image {keys[r]!r} "
                                                              f"({int((self.row < 0).sum())} images without)")
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_files = max(1, cache_files)
        self._lock = threading.Lock()

    def _matrix(self, i: int) -> np.ndarray:
        with self._lock:
            if i in self._cache:
                self._cache.move_to_end(i)
                return self._cache[i]
        _, values = read_batch(self.files[i], self.fingerprint, self.stage)
        with self._lock:
            self._cache[i] = values
            while len(self._cache) > self._cache_files:
                self._cache.popitem(last=False)
        return values

    def read(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype="int64")
        out = np.empty((len(rows), self.dim), dtype="float32")
        for i in np.unique(self.file[rows]):
            sel = np.nonzero(self.file[rows] == i)[0]
            out[sel] = self._matrix(int(i))[self.row[rows[sel]]]
        return out
