"""Atomic, idempotent outputs.

Every stage writes into a temporary sibling of its output and swaps it in only
when complete, so a retried task or a re-run replaces the output whole and a
reader never sees half of one. Paths go through fsspec; only local (or
mounted) filesystems are supported, where the swap is a rename.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path

import fsspec

from pipeline.errors import StageError


def filesystem(path: str):
    fs, _, _ = fsspec.get_fs_token_paths(path)
    return fs


def exists(path: str) -> bool:
    return filesystem(path).exists(path)


def temp_sibling(path: str, tag: str = "tmp") -> str:
    return f"{path.rstrip('/')}.__{tag}-{uuid.uuid4().hex[:12]}"


def commit(tmp: str, final: str) -> None:
    """Replace ``final`` by ``tmp`` (a file or a directory)."""
    fs = filesystem(final)
    old = None
    if fs.exists(final):
        old = temp_sibling(final, "old")
        fs.mv(final, old, recursive=True)
    fs.mv(tmp, final, recursive=True)
    if old is not None:
        fs.rm(old, recursive=True)


@contextlib.contextmanager
def output_path(final: str):
    """Yield a temporary path to write to; swap it in on success, delete it on failure."""
    tmp = temp_sibling(final)
    fs = filesystem(final)
    fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
    try:
        yield tmp
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp, recursive=True)
        raise
    commit(tmp, final)


def write_spark(df, final: str, fmt: str = "parquet", mode_options: dict | None = None) -> str:
    """Write a DataFrame to ``final`` atomically."""
    with output_path(final) as tmp:
        df.write.format(fmt).options(**(mode_options or {})).save(tmp)
    return final


def write_text(final: str, text: str) -> str:
    with output_path(final) as tmp:
        with fsspec.open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return final


def write_json(final: str, obj) -> str:
    return write_text(final, json.dumps(obj, indent=2, sort_keys=True, default=str))


def read_json(path: str):
    with fsspec.open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def require_input(stage: str, path: str, what: str = "input") -> str:
    """Fail with a StageError when an input path is missing."""
    if not exists(path):
        raise StageError(stage, path, f"missing {what} (did the previous stage run for this dump date?)")
    return path


def write_atomic(path, data: bytes) -> None:
    """Write a local file whole or not at all: a temporary sibling, fsync, rename."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.__tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
