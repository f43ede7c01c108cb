"""The image store: every image fetched once, for every dump date, taxonomy and heuristics.

Pixels do not change when the category graph does, so images live apart from
labels, keyed by ``image_key`` only, under one folder per image settings
fingerprint (what the bytes depend on: thumbnail width, originals, checks)::

    <images_root>/<fingerprint>/settings.json
    <images_root>/<fingerprint>/shards/shard-NNNNNN.tar      WebDataset tars
    <images_root>/<fingerprint>/manifest/batch-NNNNNN.parquet one per shard written

A tar holds ``<key>.<jpg|png|gif|webp>`` (the bytes as fetched) and
``<key>.json`` (the image's own metadata: key, title, size, mime, source;
never labels or splits). Each batch file lists every image attempted while
its shard was open: where its payload is (shard, byte offset, size) or why it
failed. The manifest, the union of the batch files with the newest row per
image, is the truth: a tar without its batch file was cut by a kill, is
deleted on the next run, and its images are fetched again. Shards are only
ever added, never rewritten or renumbered.

Labels are joined at read time: the ``shard`` stage writes, per run, an index
(``Layout.image_index``) joining the run's WIT images with the manifest, and
training and inference read payloads by offset (``read_payload``).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import re
import socket
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import StageError
from pipeline.lake.atomic import write_atomic
from pipeline.features.texts import TEXT_COLUMNS

MANIFEST_COLUMNS = ("image_key", "file_title", "source_url", "status", "shard", "offset", "size", "ext",
                    "width", "height", "bytes", "attempts", "fetched_at", "error", "batch")
# Statuses a later run retries (with shard.retry_transient); the others are final.
TRANSIENT = ("timeout", "connection_error", "request_error", "http_429")
TRANSIENT_PREFIX = "http_5"  # any 5xx


def transient_col(status):
    """Spark column: the image's last attempt failed transiently (TRANSIENT, or any 5xx)."""
    return status.isin(*TRANSIENT) | status.startswith(TRANSIENT_PREFIX)


def is_transient(status: str) -> bool:
    """``transient_col`` for one status, in Python."""
    return status in TRANSIENT or status.startswith(TRANSIENT_PREFIX)


def manifest_schema():
    import pyarrow as pa

    return pa.schema([
        ("image_key", pa.string()), ("file_title", pa.string()), ("source_url", pa.string()),
        ("status", pa.string()), ("shard", pa.string()), ("offset", pa.int64()), ("size", pa.int64()),
        ("ext", pa.string()), ("width", pa.int32()), ("height", pa.int32()), ("bytes", pa.int64()),
        ("attempts", pa.int32()), ("fetched_at", pa.timestamp("ms", tz="UTC")), ("error", pa.string()),
        ("batch", pa.int64()),
    ])


def index_schema():
    """The per-run index the shard stage writes: WIT images joined with the store manifest and their texts."""
    import pyarrow as pa

    hot = pa.list_(pa.float32())
    return pa.schema([
        ("image_key", pa.string()), ("file_title", pa.string()), ("split", pa.string()),
        ("labeled", pa.bool_()), ("labels", pa.list_(pa.string())), ("labels_hier", pa.list_(pa.string())),
        ("multi_hot", hot), ("multi_hot_hier", hot), ("status", pa.string()), ("shard", pa.string()),
        ("offset", pa.int64()), ("size", pa.int64()), ("error", pa.string()),
        *[(c, pa.list_(pa.string())) for c in TEXT_COLUMNS],
    ])


def image_settings(shard_cfg) -> dict:
    """What the stored bytes depend on; the store's folder is named for its hash."""
    from pipeline.inputs.download import standard_width

    return {"thumb_width": standard_width(shard_cfg.thumb_width, shard_cfg.thumbnail_steps),
            "originals": bool(shard_cfg.originals), "min_side": shard_cfg.min_side,
            "max_pixels": shard_cfg.max_pixels, "jpeg_quality": shard_cfg.jpeg_quality}


def fingerprint(shard_cfg) -> str:
    text = json.dumps(image_settings(shard_cfg), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def store_root(settings) -> str:
    from pipeline.lake.layout import join

    base = settings.paths.images_root or join(settings.paths.data_root, "images")
    return join(base, fingerprint(settings.shard))


def shard_name(n: int) -> str:
    return f"shard-{n:06d}.tar"


def batch_name(n: int) -> str:
    return f"batch-{n:06d}.parquet"


_NUM = re.compile(r"^(?:shard|batch)-([0-9]{6,})\.(?:tar|parquet)$")


def _numbers(folder: Path) -> set[int]:
    if not folder.exists():
        return set()
    return {int(m.group(1)) for p in folder.iterdir() if (m := _NUM.match(p.name))}


# ---------------------------------------------------------------- writing
@dataclass
class Attempt:
    """One image's outcome, as the downloader hands it to the writer."""

    image_key: str
    file_title: str
    source_url: str | None
    status: str
    payload: bytes | None = None
    ext: str | None = None
    width: int | None = None
    height: int | None = None
    bytes: int = 0
    attempts: int = 0
    error: str | None = None
    mime: str | None = None


class ImageStore:
    """A local (or mounted) image store folder; ``open_writer`` holds its lock."""

    def __init__(self, root: str, image_settings_: dict | None = None):
        if "://" in root and not root.startswith("file://"):
            raise StageError("shard", root, "the image store must be a local or mounted directory")
        self.root = Path(root.removeprefix("file://"))
        self.shards = self.root / "shards"
        self.manifest = self.root / "manifest"
        self.settings = image_settings_

    # -- reading
    def manifest_files(self) -> list[str]:
        return sorted(str(p) for p in self.manifest.glob("batch-*.parquet")) if self.manifest.exists() else []

    # -- writing
    def lock(self) -> "StoreLock":
        return StoreLock(self.root / ".lock")

    def recover(self) -> dict:
        """Delete what a killed run left: temp files, and tars that have no batch file."""
        removed = {"temp_files": 0, "orphan_shards": 0}
        for folder in (self.shards, self.manifest):
            if folder.exists():
                for p in folder.iterdir():
                    if ".__tmp-" in p.name:
                        p.unlink()
                        removed["temp_files"] += 1
        for n in _numbers(self.shards) - _numbers(self.manifest):
            (self.shards / shard_name(n)).unlink()
            removed["orphan_shards"] += 1
        return removed

    def next_number(self) -> int:
        return max(_numbers(self.shards) | _numbers(self.manifest), default=-1) + 1

    def writer(self, shard_size: int) -> "BatchWriter":
        self.root.mkdir(parents=True, exist_ok=True)
        self.shards.mkdir(exist_ok=True)
        self.manifest.mkdir(exist_ok=True)
        if self.settings is not None:
            meta = self.root / "settings.json"
            if not meta.exists():
                write_atomic(meta, json.dumps(self.settings, indent=2, sort_keys=True).encode())
        return BatchWriter(self, shard_size, self.next_number())


class StoreLock:
    """An exclusive ``flock`` on the store: a second run on the same store is refused, never interleaved."""

    def __init__(self, path: Path):
        self.path, self.fd = path, None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise StageError("shard", str(self.path.parent),
                                 f"another run is writing this image store ({holder or 'unknown holder'}); "
                                 "one run at a time") from e
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


class BatchWriter:
    """Appends attempts to the current shard; every ``shard_size`` stored images it commits a batch.

    A commit renames the finished tar into place, then writes the batch file
    listing the tar's images and the failures seen meanwhile: until the batch
    file exists, nothing reads the tar.
    """

    def __init__(self, store: ImageStore, shard_size: int, number: int):
        self.store, self.shard_size, self.number = store, max(1, int(shard_size)), number
        self.rows: list[dict] = []
        self.stored = 0
        self.committed: list[int] = []
        self._tar = self._file = self._tmp = None

    def _open_tar(self) -> None:
        self._tmp = self.store.shards / f"{shard_name(self.number)}.__tmp-{os.getpid()}"
        self._file = open(self._tmp, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w|", format=tarfile.PAX_FORMAT)

    def _add_member(self, name: str, data: bytes) -> int:
        """Write one tar member; returns the byte offset of its data."""
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o444
        info.uname = info.gname = "wiki"
        header = info.tobuf(self._tar.format, self._tar.encoding, self._tar.errors)
        offset = self._tar.offset + len(header)
        self._tar.addfile(info, io.BytesIO(data))
        return offset

    def add(self, a: Attempt) -> None:
        row = {"image_key": a.image_key, "file_title": a.file_title, "source_url": a.source_url,
               "status": a.status, "shard": None, "offset": None, "size": None, "ext": None,
               "width": a.width, "height": a.height, "bytes": int(a.bytes), "attempts": int(a.attempts),
               "fetched_at": int(time.time() * 1000), "error": a.error, "batch": self.number}
        if a.status == "ok":
            if self._tar is None:
                self._open_tar()
            offset = self._add_member(f"{a.image_key}.{a.ext}", a.payload)
            meta = {"image_key": a.image_key, "file_title": a.file_title, "width": a.width, "height": a.height,
                    "bytes": len(a.payload), "mime": a.mime, "ext": a.ext, "source_url": a.source_url}
            self._add_member(f"{a.image_key}.json", json.dumps(meta, ensure_ascii=False, sort_keys=True).encode())
            row.update(shard=f"shards/{shard_name(self.number)}", offset=offset, size=len(a.payload), ext=a.ext)
            self.stored += 1
        self.rows.append(row)
        if self.stored >= self.shard_size:
            self.commit()

    def commit(self) -> None:
        """Make the current shard (if any) and its batch file durable; start the next number."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.rows:
            return
        if self._tar is not None:
            self._tar.close()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self.store.shards / shard_name(self.number))
            self._tar = self._file = self._tmp = None
        table = pa.Table.from_pylist(self.rows, schema=manifest_schema())
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf)
        write_atomic(self.store.manifest / batch_name(self.number), buf.getvalue().to_pybytes())
        self.committed.append(self.number)
        self.rows, self.stored = [], 0
        self.number += 1

    def abort(self) -> None:
        """Drop the open shard (a killed or failed run): its images are fetched again next time."""
        if self._file is not None:
            self._file.close()
            self._tmp.unlink(missing_ok=True)
        self._tar = self._file = self._tmp = None
        self.rows, self.stored = [], 0


# ---------------------------------------------------------------- reading payloads
_LOCAL = threading.local()


def _handles() -> dict:
    """This thread's open shard files, keyed by pid so a forked worker never shares its parent's offsets."""
    cache = getattr(_LOCAL, "files", None)
    if cache is None or cache.get("__pid__") != os.getpid():
        cache = _LOCAL.files = {"__pid__": os.getpid()}
    return cache


def read_payload(path: str, offset: int, size: int) -> bytes:
    """The ``size`` bytes at ``offset`` of a store tar: one image, without reading the rest of the tar."""
    import fsspec

    cache = _handles()
    f = cache.get(path)
    if f is None:
        f = cache[path] = fsspec.open(path, "rb").open()
    f.seek(int(offset))
    data = f.read(int(size))
    if len(data) != int(size):
        raise StageError("read", path, f"{size} bytes expected at offset {offset}, got {len(data)}: truncated shard")
    return data


def close_handles() -> None:
    cache = _handles()
    for path in [p for p in cache if p != "__pid__"]:
        try:
            cache.pop(path).close()
        except OSError:
            pass
