"""The ``fetch`` stage: find a complete Commons dump, download it and WIT, verified.

Wikimedia publishes each run of a wiki at ``<dumps_url>/<wiki>/YYYYMMDD/`` and
describes it in that directory's ``dumpstatus.json``: one job per table, with
a status (waiting, in-progress, done, failed, skipped) and, once done, its
files with size, md5 and sha1. A date counts as complete only when the job of
every table the configured categorylinks layout needs is ``done``; a date
still in progress is skipped, never half used. The ``latest/`` directory is
never read: its links can point into different runs.

Files land in ``dumps_dir`` under their published names, verified (see
``pipeline.inputs.transfer``); a small record per date in ``dumps_dir/.fetch/``
(size, mtime, checksum) lets a re-run skip verified files without hashing
tens of gigabytes again. WIT publishes no checksums, so each TSV is fetched
once, checked to be a complete gzip stream of the announced length, and its
size and sha256 recorded in ``wit_dir/wit-manifest.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import date as Date
from pathlib import Path
from urllib.parse import urljoin

from pipeline.errors import StageError
from pipeline.inputs.transfer import Expected, Transfers, file_digest, gzip_end_error
from pipeline.lake.layout import DUMP_DATE_RE, LATEST, resolve_dump_date

log = logging.getLogger("pipeline.inputs.fetch")
STAGE = "fetch"
JOBS = {
    "page": "pagetable",
    "categorylinks": "categorylinkstable",
    "linktarget": "linktargettable",
    "page_props": "pagepropstable",
    "redirect": "redirecttable",
}
_LISTED_DATE = re.compile(r'href="(?:\./)?([0-9]{8})/?"')
WIT_MANIFEST = "wit-manifest.json"


def tables(fetch_cfg) -> tuple[list[str], list[str]]:
    """(required, optional) tables for the configured categorylinks layout.

    The current layout names parents only by ``cl_target_id``, so linktarget
    is required; the legacy one carries ``cl_to`` and uses linktarget only
    when published. ``redirect`` is optional, as ingest treats it.
    """
    layout = fetch_cfg.categorylinks_layout
    if layout == "current":
        return ["page", "categorylinks", "linktarget", "page_props"], ["redirect"]
    if layout == "legacy":
        return ["page", "categorylinks", "page_props"], ["linktarget", "redirect"]
    raise StageError(STAGE, "fetch.categorylinks_layout", f"{layout!r} is neither 'current' nor 'legacy'")


def dump_name(wiki: str, date: str, table: str) -> str:
    return f"{wiki}-{date}-{table}.sql.gz"


class DumpServer:
    """The run directories of one wiki on a dumps server (Wikimedia's or a mirror)."""

    def __init__(self, http: Transfers, base_url: str, wiki: str):
        self.http, self.base, self.wiki = http, base_url.rstrip("/"), wiki

    def run_url(self, date: str) -> str:
        return f"{self.base}/{self.wiki}/{date}/"

    def dates(self) -> list[str]:
        """Run dates in the directory listing of ``<base>/<wiki>/``, ascending (``latest/`` ignored)."""
        listing = self.http.get_text(f"{self.base}/{self.wiki}/")
        return sorted(set(_LISTED_DATE.findall(listing or "")))

    def status(self, date: str, missing_ok: bool = True) -> dict | None:
        url = self.run_url(date) + "dumpstatus.json"
        text = self.http.get_text(url, missing_ok=missing_ok)
        if text is None:
            return None
        try:
            status = json.loads(text)
        except json.JSONDecodeError as e:
            raise StageError(STAGE, url, f"not JSON: {e}") from e
        if not isinstance(status, dict) or not isinstance(status.get("jobs"), dict):
            raise StageError(STAGE, url, "no 'jobs' object: not a dumpstatus.json")
        return status

    def checksums(self, date: str, algo: str) -> dict[str, str]:
        """The run's ``<wiki>-<date>-<algo>sums.txt`` (lines ``<hex>  <file name>``), {} when absent."""
        text = self.http.get_text(self.run_url(date) + f"{self.wiki}-{date}-{algo}sums.txt", missing_ok=True)
        out = {}
        for line in (text or "").splitlines():
            parts = line.split()
            if len(parts) == 2:
                out[parts[1].lstrip("*")] = parts[0].lower()
        return out


def run_state(status: dict, required: list[str]) -> tuple[str, str]:
    """("complete" | "failed" | "in-progress", why) for a run's dumpstatus."""
    jobs = status.get("jobs", {})
    failed = [JOBS[t] for t in required if jobs.get(JOBS[t], {}).get("status") in ("failed", "skipped")]
    if failed:
        return "failed", ", ".join(f"{j} {jobs[j]['status']}" for j in failed)
    waiting = [f"{JOBS[t]} {jobs.get(JOBS[t], {}).get('status', 'missing')}"
               for t in required if jobs.get(JOBS[t], {}).get("status") != "done"]
    if waiting:
        return "in-progress", ", ".join(waiting)
    return "complete", ""


def newest_complete(server: DumpServer, required: list[str], on_or_before: str | None = None) -> str:
    """The newest run date whose required jobs are all done (and not after ``on_or_before``)."""
    dates = server.dates()
    for date in reversed(dates):
        if on_or_before and date > on_or_before:
            continue
        status = server.status(date)
        if status is None:
            log.info("fetch: %s has no dumpstatus.json yet; skipped", server.run_url(date))
            continue
        state, why = run_state(status, required)
        if state == "complete":
            return date
        if state == "failed":
            log.warning("fetch: dump %s has failed jobs (%s); skipped", date, why)
        else:
            log.info("fetch: dump %s is not complete (%s); skipped", date, why)
    bound = f" on or before {on_or_before}" if on_or_before else ""
    raise StageError(STAGE, f"{server.base}/{server.wiki}/",
                     f"no complete {server.wiki} dump{bound} among {len(dates)} run dates "
                     f"(needs {', '.join(JOBS[t] for t in required)} done)")


def _as_date(value) -> str | None:
    """YYYYMMDD of a date, datetime, pendulum or ISO string; None for None."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = value.strip()
        if DUMP_DATE_RE.match(value):
            return value
        value = Date.fromisoformat(value[:10])
    return f"{value.year:04d}{value.month:02d}{value.day:02d}"


def run_date(settings, requested: str | None = None, logical_date=None) -> str:
    """The dump date of one pipeline run, resolved once and then pinned.

    In this order: ``requested`` (the run's ``dump_date`` param: YYYYMMDD or
    ``latest``); else the newest complete dump on or before ``logical_date``
    (a scheduled or backfill run); else the ``paths.dump_date`` setting.
    ``latest`` and logical dates ask the dumps server, or, with
    ``fetch.dumps_url`` empty, look at what is in ``dumps_dir``.
    """
    choice = (requested or "").strip() or None
    bound = None
    if choice is None and logical_date is not None:
        choice, bound = LATEST, _as_date(logical_date)
    choice = choice or settings.paths.dump_date.strip()
    if choice != LATEST or not settings.fetch.dumps_url:
        return resolve_dump_date(dataclasses.replace(settings.paths, dump_date=choice), bound)
    required, _ = tables(settings.fetch)
    with _client(settings) as http:
        return newest_complete(DumpServer(http, settings.fetch.dumps_url, settings.paths.wiki), required, bound)


def _client(settings) -> Transfers:
    return Transfers(settings.fetch, settings.shard.user_agent)


# ------------------------------------------------------------------ dumps
def _local_dir(path: str, what: str) -> Path:
    if "://" in path and not path.startswith("file://"):
        raise StageError(STAGE, path, f"{what} must be a local or mounted directory to download into")
    return Path(path.removeprefix("file://"))


def _record_path(dumps_dir: Path, wiki: str, date: str) -> Path:
    return dumps_dir / ".fetch" / f"{wiki}-{date}.json"


def _read_record(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _stat_key(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _recorded(path: Path, entry: dict | None) -> bool:
    """True when ``path`` is still the file ``entry`` recorded as verified (same size and mtime)."""
    return path.exists() and bool(entry) and {k: entry.get(k) for k in ("size", "mtime_ns")} == _stat_key(path)


def _already_verified(path: Path, entry: dict | None, expected: Expected) -> bool:
    """True when ``path`` is the expected file: by its record (no hashing) or by hashing it once."""
    if not path.exists():
        return False
    if _recorded(path, entry) and (not expected.digest or entry.get("digest") == expected.digest.lower()):
        return True
    if expected.size is not None and path.stat().st_size != expected.size:
        return False
    return bool(expected.digest) and file_digest(path, expected.algo) == expected.digest.lower()


def _expected(server: DumpServer, date: str, name: str, meta: dict, sums: dict) -> Expected:
    """Size and the strongest checksum published for a file: dumpstatus sha1, md5, then the sums files."""
    size = meta.get("size")
    size = int(size) if isinstance(size, int) or (isinstance(size, str) and size.isdigit()) else None
    for algo in ("sha1", "md5"):
        if meta.get(algo):
            return Expected(size, algo, str(meta[algo]).lower())
    for algo in ("sha1", "md5"):
        if algo not in sums:
            sums[algo] = server.checksums(date, algo)
        if name in sums[algo]:
            return Expected(size, algo, sums[algo][name])
    raise StageError(STAGE, server.run_url(date) + name, "no sha1 or md5 published (dumpstatus.json, sums files)")


def fetch_dumps(settings, date: str, http: Transfers) -> dict:
    """Download and verify the tables of dump ``date`` into ``dumps_dir``; skip verified files."""
    cfg, wiki = settings.fetch, settings.paths.wiki
    dumps_dir = _local_dir(settings.paths.dumps_dir, "paths.dumps_dir")
    server = DumpServer(http, cfg.dumps_url, wiki)
    status = server.status(date, missing_ok=False)
    required, optional = tables(cfg)
    state, why = run_state(status, required)
    if state != "complete":
        raise StageError(STAGE, server.run_url(date) + "dumpstatus.json", f"dump {date} is not complete: {why}")
    jobs = status["jobs"]
    wanted = list(required)
    for table in optional:
        job_status = jobs.get(JOBS[table], {}).get("status", "missing")
        if job_status == "done":
            wanted.append(table)
        else:
            log.info("fetch: optional %s is %s in dump %s; not fetched", JOBS[table], job_status, date)
    record_path = _record_path(dumps_dir, wiki, date)
    record = _read_record(record_path)
    sums: dict = {}
    plan = []
    for table in wanted:
        name = dump_name(wiki, date, table)
        meta = jobs[JOBS[table]].get("files", {}).get(name)
        if meta is None:
            raise StageError(STAGE, server.run_url(date) + "dumpstatus.json",
                             f"job {JOBS[table]} is done but lists no file {name}")
        url = urljoin(cfg.dumps_url.rstrip("/") + "/", meta.get("url", f"{wiki}/{date}/{name}").lstrip("/"))
        plan.append((table, name, url, _expected(server, date, name, meta, sums)))

    def one(item):
        table, name, url, expected = item
        path = dumps_dir / name
        if _already_verified(path, record.get(name), expected):
            log.info("fetch: %s already here and verified; not downloaded", name)
            return name, {"table": table, "bytes": path.stat().st_size, "downloaded_bytes": 0, "skipped": True,
                          "algo": expected.algo, "digest": expected.digest}
        done = http.download(url, path, expected)
        return name, {"table": table, **done, "skipped": False}

    results = {}
    with ThreadPoolExecutor(max_workers=max(1, cfg.connections), thread_name_prefix="fetch") as pool:
        for name, result in pool.map(one, plan):
            results[name] = result
            path = dumps_dir / name
            record[name] = {**_stat_key(path), "algo": result["algo"], "digest": result["digest"]}
    _write_record(record_path, record)
    return results


def apply_retention(dumps_dir: Path, wiki: str, keep: int, current: str) -> list[str]:
    """Delete the files of all but the newest ``keep`` dump dates (never ``current``); 0 keeps all."""
    if keep <= 0 or not dumps_dir.exists():
        return []
    pattern = re.compile(rf"^{re.escape(wiki)}-([0-9]{{8}})-")
    dates = sorted({m.group(1) for p in dumps_dir.iterdir() if (m := pattern.match(p.name))})
    kept = set(dates[-keep:]) | {current}
    removed = [d for d in dates if d not in kept]
    for d in removed:
        for p in dumps_dir.iterdir():
            if p.name.startswith(f"{wiki}-{d}-"):
                p.unlink()
        _record_path(dumps_dir, wiki, d).unlink(missing_ok=True)
        log.info("fetch: removed dump %s from %s (fetch.keep_dumps=%d)", d, dumps_dir, keep)
    return removed


# ------------------------------------------------------------------ WIT
def fetch_wit(settings, http: Transfers) -> dict:
    """Fetch each configured WIT TSV once: a complete gzip of the announced size, sha256 recorded."""
    cfg = settings.fetch
    wit_dir = _local_dir(settings.paths.wit_dir, "paths.wit_dir")
    manifest_path = wit_dir / WIT_MANIFEST
    manifest = _read_record(manifest_path)
    base = cfg.wit_url.rstrip("/") + "/"

    def one(name: str):
        path, url = wit_dir / name, base + name
        entry = manifest.get(name)
        if _recorded(path, entry):
            log.info("fetch: %s already here and verified; not downloaded", name)
            return name, {"bytes": entry["size"], "downloaded_bytes": 0, "skipped": True, "sha256": entry["sha256"]}
        if path.exists():  # placed by hand or an earlier version: check it as if just fetched
            announced = http.content_length(url)
            problem = gzip_end_error(path)
            if not problem and announced is not None and announced != path.stat().st_size:
                problem = f"size {path.stat().st_size} differs from the {announced} bytes {url} announces"
            if not problem:
                return name, {"bytes": path.stat().st_size, "downloaded_bytes": 0, "skipped": True,
                              "sha256": file_digest(path, "sha256")}
            log.warning("fetch: %s in wit_dir is not usable (%s); downloading it again", name, problem)
        done = http.download(url, path, Expected(), verify=gzip_end_error)
        return name, {**done, "skipped": False, "sha256": file_digest(path, "sha256")}

    results = {}
    with ThreadPoolExecutor(max_workers=max(1, cfg.connections), thread_name_prefix="fetch-wit") as pool:
        for name, result in pool.map(one, list(cfg.wit_files)):
            results[name] = result
            manifest[name] = {**_stat_key(wit_dir / name), "sha256": result["sha256"], "url": base + name}
    _write_record(manifest_path, manifest)
    return results


def wit_file_problem(path: str) -> str | None:
    """Why the WIT file ``path`` is incomplete, or None: a file fetch verified (and that has not
    changed since) is trusted as recorded; any other is read once to its gzip end."""
    local = Path(path.removeprefix("file://"))
    if "://" in path.removeprefix("file://") or not local.exists():
        return None  # an object store: left to the reader
    if _recorded(local, _read_record(local.parent / WIT_MANIFEST).get(local.name)):
        return None
    return gzip_end_error(local)


# ------------------------------------------------------------------ the stage
def run(settings) -> dict:
    """Stage entry point: resolve the dump date, fetch its tables and WIT, apply retention."""
    date = run_date(settings)
    summary: dict = {"dump_date": date, "dumps_dir": settings.paths.dumps_dir, "wit_dir": settings.paths.wit_dir}
    if not settings.fetch.dumps_url and not settings.fetch.wit_url:
        summary["notes"] = ["fetch.dumps_url and fetch.wit_url are empty: inputs are used as they are"]
        return summary
    with _client(settings) as http:
        dumps = fetch_dumps(settings, date, http) if settings.fetch.dumps_url else {}
        wit = fetch_wit(settings, http) if settings.fetch.wit_url else {}
        downloaded = http.bytes_downloaded
    removed = apply_retention(_local_dir(settings.paths.dumps_dir, "paths.dumps_dir"), settings.paths.wiki,
                              settings.fetch.keep_dumps, date) if settings.fetch.dumps_url else []
    files = {**dumps, **wit}
    summary.update({
        "dump_files": dumps,
        "wit_files": wit,
        "files_downloaded": sum(not f["skipped"] for f in files.values()),
        "files_already_verified": sum(f["skipped"] for f in files.values()),
        "bytes_downloaded": downloaded,
        "removed_dump_dates": removed,
    })
    return summary
