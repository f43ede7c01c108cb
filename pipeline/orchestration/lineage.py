"""What each stage's output depends on, recorded next to it, so an unchanged stage is not run again.

A stage's *fingerprint* hashes its inputs: the fingerprints its upstream
stages recorded (so a change anywhere upstream reaches everything below it),
the settings that matter to it, the taxonomy file (and for a labeler with rules,
its rules file), and for ``infer`` the model
version it predicts with. ``fetch`` is the root: its fingerprint is the
checksums of the files it verified, so a dump republished under the same date
reruns everything. The CLI records the fingerprint in the stage's summary
(``Layout.summary``); when the recorded one equals the one a run would have
and the stage's output is there, the stage does no work and returns the
recorded summary marked ``skipped`` (``--force`` recomputes anyway).

A nightly run on an unchanged dump therefore ends after ``fetch`` has checked
its files, and trains and registers nothing. A ``shard`` run capped by
``shard.max_downloads`` is never fresh while it left images to fetch, nor one
that ended with transient failures to retry (``shard.retry_transient``); its
fingerprint then also hashes what its index holds (``progress``), so each night
of a backfill trains and predicts on the images fetched so far, and a retry that
fetched nothing new changes nothing downstream.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from pipeline.inputs.wit import WIT_GLOB
from pipeline.labels.rules import LabelRules
from pipeline.labels.taxonomy import TAXONOMY_DIR
from pipeline.labels.traversal import parse_labeler
from pipeline.lake.atomic import exists, filesystem, read_json
from pipeline.lake.layout import TABLES, Layout, join
from pipeline.orchestration.stages import STAGES


def _setting(settings, key: str):
    section, _, name = key.partition(".")
    value = getattr(settings, section)
    if name:
        return getattr(value, name)
    return {k: v for k, v in dataclasses.asdict(value).items()
            if value.__dataclass_fields__[k].metadata.get("changes_outputs", True)}


def taxonomy_sha256(taxonomy: str) -> str | None:
    path = TAXONOMY_DIR / f"{taxonomy}.yaml"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def digest(value) -> str:
    text = json.dumps(value, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def recorded(layout: Layout, stage: str) -> dict | None:
    path = layout.summary(stage)
    return read_json(path) if exists(path) else None


def inputs(settings, stage: str, extra: dict | None = None) -> dict:
    """What ``stage``'s output depends on, for this run's settings and the upstream records."""
    layout = Layout.from_settings(settings)
    record = STAGES[stage]
    upstream = {}
    for up in record.upstream:
        done = recorded(layout, up)
        upstream[up] = (done or {}).get("fingerprint")
        if STAGES[up].verifies_itself and done is None:  # inputs placed by hand, no fetch run: their sizes and mtimes
            upstream[up] = local_fingerprint(settings)
    out = {
        "stage": stage,
        "dump_date": layout.dump_date,
        "upstream": upstream,
        "settings": {key: _setting(settings, key) for key in record.settings},
        **(extra or {}),
    }
    if record.reads_taxonomy:
        out["taxonomy_sha256"] = taxonomy_sha256(settings.label.taxonomy)
    if record.reads_label_rules and _uses_rules(settings.label.heuristics):  # the stages below see it through label's record
        out["label_rules_sha256"] = LabelRules.sha256(settings.label.taxonomy)
    return out


def _uses_rules(heuristics: str) -> bool:
    try:
        return parse_labeler(heuristics).rules
    except ValueError:  # an unknown labeler: the stage itself says so
        return False


def fingerprint(settings, stage: str, extra: dict | None = None) -> str:
    return digest(inputs(settings, stage, extra))


def fresh(settings, stage: str, extra: dict | None = None) -> tuple[dict | None, str]:
    """(the recorded summary, why) when ``stage`` need not run again, else (None, why it must)."""
    layout = Layout.from_settings(settings)
    record = recorded(layout, stage)
    if record is None:
        return None, "no earlier run of this stage for this dump"
    if record.get("left_for_later_runs"):
        return None, f"its last run left {record['left_for_later_runs']} images for a later run (shard.max_downloads)"
    if record.get("transient_to_retry"):
        return None, (f"its last run ended with {record['transient_to_retry']} transient download failures to "
                      "retry (shard.retry_transient)")
    want = inputs(settings, stage, extra)
    if None in want["upstream"].values():
        return None, "an upstream stage has no recorded fingerprint"
    if record.get("fingerprint") != digest(want):
        before = record.get("inputs") or {}
        changed = sorted(k for k in set(want) | set(before) if want.get(k) != before.get(k))
        return None, f"its inputs changed ({', '.join(changed) or 'fingerprint'})"
    missing = [p for p in STAGES[stage].outputs(layout) if not exists(p)]
    if missing:
        return None, f"its output {missing[0]} is gone"
    return record, f"same inputs as the run that finished at {record.get('finished_at', '?')} (fingerprint {record['fingerprint']})"


def local_fingerprint(settings) -> str:
    """``fetch``'s fingerprint for inputs used as they are (offline): the dump's and WIT's sizes and mtimes."""
    layout = Layout.from_settings(settings)
    paths = [layout.dump(t) for t in TABLES]
    fs = filesystem(settings.paths.wit_dir)
    paths += sorted(fs.glob(join(settings.paths.wit_dir, WIT_GLOB)))
    files = {}
    for path in paths:
        if exists(path):
            info = filesystem(path).info(path)
            files[path.rsplit("/", 1)[-1]] = {"size": info.get("size"), "mtime_ns": str(info.get("mtime"))}
    return file_fingerprint(files)


def file_fingerprint(files: dict) -> str:
    """``fetch``'s fingerprint: the verified checksums (or, offline, sizes and mtimes) of the input files."""
    return digest({name: {k: v for k, v in meta.items() if k in ("digest", "sha256", "size", "mtime_ns", "bytes")}
                   for name, meta in sorted(files.items())})


def stamp(settings, stage: str, summary: dict, extra: dict | None = None) -> dict:
    """What the CLI records with a finished run's summary: its ``inputs`` and ``fingerprint``."""
    if STAGES[stage].verifies_itself:
        files = {**summary.get("dump_files", {}), **summary.get("wit_files", {})}
        return {"fingerprint": file_fingerprint(files) if files else local_fingerprint(settings)}
    want = inputs(settings, stage, extra)
    if summary.get("left_for_later_runs") or summary.get("transient_to_retry"):
        # a capped shard run, or one with failures to retry: the same inputs may give more next time
        want["progress"] = summary["status_counts"]
    return {"inputs": want, "fingerprint": digest(want)}


def taken(layout: Layout, stage: str) -> dict | None:
    """The extra inputs ``stage`` takes from finished stages' records (infer: the champion train left),
    named as its ``extra_inputs`` name them: by the setting's field."""
    takes = STAGES[stage].takes
    if not takes:
        return None
    out = {}
    for setting, (up, key) in takes.items():
        out[setting.rsplit(".", 1)[-1]] = (recorded(layout, up) or {}).get(key)
    return out


def pipeline_done(settings, dump_date: str) -> dict | None:
    """``report``'s record when every stage is up to date for ``dump_date``, else None.

    What the DAG's first task asks, so a night with nothing new starts no
    stage at all. ``infer`` is checked against the champion ``train`` recorded.
    """
    pinned = dataclasses.replace(settings, paths=dataclasses.replace(settings.paths, dump_date=dump_date))
    layout = Layout.from_settings(pinned)
    if any(recorded(layout, s.name) is None for s in STAGES.values() if s.verifies_itself):
        return None
    record = None
    for stage in STAGES.values():
        if stage.verifies_itself:
            continue
        # what the stage itself would add: the values it takes from the records (infer: the champion),
        # else its own extra inputs (embed: the backbone's fingerprint)
        extra = taken(layout, stage.name) if stage.takes else stage.lineage_inputs(pinned)
        record, _ = fresh(pinned, stage.name, extra)
        if record is None:
            return None
    return record
