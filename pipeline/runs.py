"""Which dump dates the whole pipeline has already processed, and with which settings.

A backfill over a month gives the DAG one run per logical date, and most of
them resolve to a dump an earlier run of the backfill already processed. The
DAG's last task records each finished run's dump date with a fingerprint of
the settings its outputs depend on; a later run that resolves to the same
date with the same fingerprint does nothing (unless forced).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time

from pipeline.atomic import exists, read_json, write_json
from pipeline.layout import Layout
from pipeline.taxonomy import TAXONOMY_DIR

# What the outputs depend on: every setting of these sections, plus these single fields.
OUTPUT_SECTIONS = ("label", "wit", "train")
OUTPUT_FIELDS = ("spark.max_reject_share", "shard.thumb_width", "shard.thumbnail_steps", "shard.originals",
                 "shard.jpeg_quality", "shard.min_side", "shard.max_pixels", "fetch.categorylinks_layout",
                 "fetch.wit_files", "tracking.model_name")


def output_settings(settings) -> dict:
    out = {name: dataclasses.asdict(getattr(settings, name)) for name in OUTPUT_SECTIONS}
    for key in OUTPUT_FIELDS:
        section, name = key.split(".")
        out[key] = getattr(getattr(settings, section), name)
    taxonomy = TAXONOMY_DIR / f"{settings.label.taxonomy}.yaml"
    if taxonomy.exists():
        out["taxonomy_sha256"] = hashlib.sha256(taxonomy.read_bytes()).hexdigest()
    return out


def fingerprint(settings) -> str:
    text = json.dumps(output_settings(settings), sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _pinned(settings, dump_date: str):
    paths = dataclasses.replace(settings.paths, dump_date=dump_date)
    return dataclasses.replace(settings, paths=paths)


def record_path(settings, dump_date: str) -> str:
    return Layout.from_settings(_pinned(settings, dump_date)).summary("run")


def processed(settings, dump_date: str) -> dict | None:
    """The record of an earlier finished run of ``dump_date`` with the same settings, else None."""
    path = record_path(settings, dump_date)
    if not exists(path):
        return None
    record = read_json(path)
    return record if record.get("fingerprint") == fingerprint(settings) else None


def mark_processed(settings, dump_date: str, summary: dict | None = None) -> str:
    """Record that the whole pipeline finished for ``dump_date`` with these settings."""
    path = record_path(settings, dump_date)
    write_json(path, {"dump_date": dump_date, "fingerprint": fingerprint(settings),
                      "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "settings": output_settings(settings), "summary": summary or {}})
    return path
