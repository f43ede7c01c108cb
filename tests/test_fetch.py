"""The fetch stage against a local dumps server in Wikimedia's layout, misbehaving on purpose."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from devtools.sample.dumps_server import WIT_PATH, DumpsServer, publish, publish_run
from pipeline.config import load_settings
from pipeline.errors import StageError
from pipeline.inputs import fetch
from pipeline.inputs.transfer import Expected, Transfers, gzip_end_error

ROOT = Path(__file__).resolve().parent.parent
UA = "wiki-image-topics-tests/0.1 (https://example.org/tests; tests@example.org)"
DATE, FAILED, IN_PROGRESS = "20260101", "20260110", "20260115"
TABLES = ("page", "categorylinks", "linktarget", "page_props", "redirect")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    from devtools.sample.generator import generate_sample

    root = tmp_path_factory.mktemp("fetch")
    generate_sample(str(root / "sample"), seed=5, images=60, categories=80, with_images=False, dump_date=DATE)
    info = publish(root / "sample" / "dumps", root / "sample" / "wit", root / "published",
                   in_progress_date=IN_PROGRESS, failed_date=FAILED)
    return root, info


@pytest.fixture()
def server(published):
    root, _ = published
    with DumpsServer(root / "published", latency_s=0.01) as s:
        yield s


def make_settings(server, tmp_path, **over):
    base = {
        "fetch.dumps_url": server.url,
        "fetch.wit_url": f"{server.url}/{WIT_PATH}/",
        "fetch.wit_files": "wit_v1.train.all-00000-of-00010.tsv.gz,wit_v1.train.all-00001-of-00010.tsv.gz",
        "fetch.backoff_s": "0.01",
        "paths.dumps_dir": str(tmp_path / "dumps"),
        "paths.wit_dir": str(tmp_path / "wit"),
        "paths.dump_date": "latest",
        "shard.user_agent": UA,
    }
    return load_settings({**base, **over}, environ={})


def sha1(path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def test_latest_skips_in_progress_and_failed_runs_and_never_reads_latest_dir(server, tmp_path, caplog):
    caplog.set_level(logging.INFO, "pipeline.inputs.fetch")
    s = make_settings(server, tmp_path)
    assert fetch.run_date(s) == DATE
    assert f"dump {IN_PROGRESS} is not complete" in caplog.text
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(FAILED in r.getMessage() and "failed" in r.getMessage() for r in warnings)
    assert not [r for r in server.requests if "/latest" in r["path"]]


def test_fetch_downloads_verifies_and_a_rerun_downloads_nothing(published, server, tmp_path):
    root, _ = published
    s = make_settings(server, tmp_path)
    summary = fetch.run(s)
    assert summary["dump_date"] == DATE
    assert summary["files_downloaded"] == 7 and summary["files_already_verified"] == 0
    for table in TABLES:
        name = f"commonswiki-{DATE}-{table}.sql.gz"
        assert sha1(tmp_path / "dumps" / name) == sha1(root / "sample" / "dumps" / name)
    assert not list((tmp_path / "dumps").glob("*.part"))
    manifest = json.loads((tmp_path / "wit" / fetch.WIT_MANIFEST).read_text())
    for name, entry in manifest.items():
        assert entry["sha256"] == hashlib.sha256((root / "sample" / "wit" / name).read_bytes()).hexdigest()
    before = len(server.file_requests())
    again = fetch.run(s)
    assert again["files_downloaded"] == 0 and again["files_already_verified"] == 7
    assert again["bytes_downloaded"] == 0
    assert len(server.file_requests()) == before
    # every request named the configured User-Agent; never more than 2 connections at once
    assert {r["user_agent"] for r in server.requests} == {UA}
    assert server.max_connections <= 2 and server.max_inflight <= 2
    assert server.max_inflight == 2  # both connections were used


def test_at_most_the_configured_connections(server, tmp_path):
    s = make_settings(server, tmp_path, **{"fetch.connections": "1"})
    fetch.run(s)
    assert server.max_connections == 1 and server.max_inflight == 1


def test_dropped_connection_resumes_with_range_byte_identical(published, server, tmp_path):
    root, _ = published
    name = f"commonswiki-{DATE}-categorylinks.sql.gz"
    server.faults.drop_after[name] = [1000, 2500]
    s = make_settings(server, tmp_path, **{"fetch.wit_url": ""})
    fetch.run(s)
    got = [r for r in server.file_requests() if r["path"].endswith(name)]
    assert [r["range"] for r in got] == [None, "bytes=1000-", "bytes=3500-"]
    assert [r["status"] for r in got] == [200, 206, 206]
    assert (tmp_path / "dumps" / name).read_bytes() == (root / "sample" / "dumps" / name).read_bytes()


def test_checksum_mismatch_retries_once_then_succeeds(published, server, tmp_path):
    root, _ = published
    name = f"commonswiki-{DATE}-page.sql.gz"
    server.faults.corrupt[name] = 1
    fetch.run(make_settings(server, tmp_path, **{"fetch.wit_url": ""}))
    assert len([r for r in server.file_requests() if r["path"].endswith(name)]) == 2
    assert sha1(tmp_path / "dumps" / name) == sha1(root / "sample" / "dumps" / name)


def test_checksum_mismatch_twice_fails_naming_file_and_checksums(published, server, tmp_path):
    root, _ = published
    name = f"commonswiki-{DATE}-page.sql.gz"
    server.faults.corrupt[name] = 2
    with pytest.raises(StageError) as e:
        fetch.run(make_settings(server, tmp_path, **{"fetch.wit_url": "", "fetch.connections": "1"}))
    msg = str(e.value)
    assert name in msg and "sha1 mismatch" in msg and sha1(root / "sample" / "dumps" / name) in msg
    assert not (tmp_path / "dumps" / name).exists()
    assert not (tmp_path / "dumps" / (name + ".part")).exists()


def test_requested_date_that_does_not_exist_fails_naming_the_url(server, tmp_path):
    with pytest.raises(StageError) as e:
        fetch.run(make_settings(server, tmp_path, **{"paths.dump_date": "20250601"}))
    assert f"{server.url}/commonswiki/20250601/dumpstatus.json" in str(e.value) and "404" in str(e.value)


def test_requested_date_in_progress_is_refused(server, tmp_path):
    with pytest.raises(StageError, match="not complete: categorylinkstable in-progress"):
        fetch.run(make_settings(server, tmp_path, **{"paths.dump_date": IN_PROGRESS}))
    assert not (tmp_path / "dumps").exists() or not list((tmp_path / "dumps").glob("*.sql.gz"))


def test_retry_after_is_honoured_on_429_and_503(published, server, tmp_path):
    root, _ = published
    name = f"commonswiki-{DATE}-linktarget.sql.gz"
    server.faults.status[name] = [(429, "2"), (503, "3")]
    slept = []
    s = make_settings(server, tmp_path)
    with Transfers(s.fetch, UA, sleep=slept.append) as http:
        url = f"{server.url}/commonswiki/{DATE}/{name}"
        data = (root / "sample" / "dumps" / name).read_bytes()
        http.download(url, tmp_path / name, Expected(len(data), "sha1", hashlib.sha1(data).hexdigest()))
    assert slept == [2.0, 3.0]
    assert (tmp_path / name).read_bytes() == data


def test_retry_after_beyond_the_limit_fails(server, tmp_path):
    name = "dumpstatus.json"
    server.faults.status[name] = [(503, "7200")]
    with pytest.raises(StageError, match="retry after 7200 s"):
        fetch.run(make_settings(server, tmp_path, **{"paths.dump_date": DATE}))


def test_placeholder_user_agent_is_refused_for_wikimedia(tmp_path):
    s = load_settings({"paths.dumps_dir": str(tmp_path)}, environ={})
    with Transfers(s.fetch, s.shard.user_agent) as http, pytest.raises(ValueError, match="set USER_AGENT"):
        http.get_text("https://dumps.wikimedia.org/commonswiki/")


def test_sha1_missing_falls_back_to_md5_then_to_the_sums_files(published, tmp_path):
    root, _ = published
    src = root / "sample" / "dumps"
    files = {t: src / f"commonswiki-{DATE}-{t}.sql.gz" for t in TABLES}
    pub = tmp_path / "pub"
    run_dir = publish_run(pub, "commonswiki", DATE, files)
    status = json.loads((run_dir / "dumpstatus.json").read_text())
    for job in status["jobs"].values():
        for meta in job["files"].values():
            meta.pop("sha1")
            if "page" in json.dumps(job):
                meta.pop("md5")
    (run_dir / "dumpstatus.json").write_text(json.dumps(status))
    with DumpsServer(pub) as server:
        summary = fetch.run(make_settings(server, tmp_path, **{"fetch.wit_url": ""}))
        algos = {f["table"]: f["algo"] for f in summary["dump_files"].values()}
        assert algos["categorylinks"] == "md5"
        assert algos["page"] == "sha1"  # from commonswiki-YYYYMMDD-sha1sums.txt
        assert any(r["path"].endswith("sha1sums.txt") for r in server.requests)


def test_legacy_layout_does_not_need_linktarget(published, tmp_path):
    root, _ = published
    src = root / "sample" / "dumps"
    pub = tmp_path / "pub"
    publish_run(pub, "commonswiki", DATE, {t: src / f"commonswiki-{DATE}-{t}.sql.gz"
                                           for t in ("page", "categorylinks", "page_props")})
    with DumpsServer(pub) as server:
        with pytest.raises(StageError, match="no complete commonswiki dump.*linktargettable"):
            fetch.run(make_settings(server, tmp_path, **{"fetch.wit_url": ""}))
        s = make_settings(server, tmp_path, **{"fetch.wit_url": "", "fetch.categorylinks_layout": "legacy"})
        assert fetch.run(s)["files_downloaded"] == 3


def test_logical_dates_map_to_the_newest_complete_dump_on_or_before(published, server, tmp_path):
    root, _ = published
    src = root / "sample" / "dumps"
    files = {t: src / f"commonswiki-{DATE}-{t}.sql.gz" for t in TABLES}
    publish_run(root / "published", "commonswiki", "20260301", files)
    try:
        s = make_settings(server, tmp_path)
        assert fetch.run_date(s, None, "2026-02-28") == DATE
        assert fetch.run_date(s, None, "2026-03-01T00:00:00+00:00") == "20260301"
        assert fetch.run_date(s, None, "2026-03-31") == "20260301"
        assert fetch.run_date(s, "20260101", "2026-03-31") == DATE  # the param wins
        assert fetch.run_date(s, "latest", "2026-01-05") == "20260301"  # 'latest' is not bounded
        with pytest.raises(StageError, match="on or before 20251231"):
            fetch.run_date(s, None, "2025-12-31")
        assert fetch.run_date(make_settings(server, tmp_path, **{"paths.dump_date": "20260101"})) == DATE
    finally:
        import shutil

        shutil.rmtree(root / "published" / "commonswiki" / "20260301")


def test_keep_dumps_removes_older_dates(published, server, tmp_path):
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    for old in ("20251101", "20251201"):
        (dumps / f"commonswiki-{old}-page.sql.gz").write_bytes(b"x")
    summary = fetch.run(make_settings(server, tmp_path, **{"fetch.keep_dumps": "2", "fetch.wit_url": ""}))
    assert summary["removed_dump_dates"] == ["20251101"]
    assert (dumps / "commonswiki-20251201-page.sql.gz").exists()
    assert (dumps / f"commonswiki-{DATE}-page.sql.gz").exists()


def test_truncated_wit_file_is_fetched_again_then_fails(published, tmp_path):
    root, _ = published
    name = "wit_v1.train.all-00000-of-00010.tsv.gz"
    pub = tmp_path / "pub" / WIT_PATH
    pub.mkdir(parents=True)
    data = (root / "sample" / "wit" / name).read_bytes()
    (pub / name).write_bytes(data[: len(data) * 2 // 3])  # what an interrupted upload leaves
    with DumpsServer(tmp_path / "pub") as server:
        s = make_settings(server, tmp_path, **{"fetch.dumps_url": "", "fetch.wit_files": name, "paths.dump_date": DATE})
        with pytest.raises(StageError, match="before its end-of-stream marker"):
            fetch.run(s)
        assert len(server.file_requests()) == 2
        assert not (tmp_path / "wit" / name).exists()


def test_wit_placed_by_hand_is_checked_and_recorded_without_download(published, server, tmp_path):
    root, _ = published
    (tmp_path / "wit").mkdir()
    for p in (root / "sample" / "wit").glob("*.tsv.gz"):
        (tmp_path / "wit" / p.name).write_bytes(p.read_bytes())
    summary = fetch.run(make_settings(server, tmp_path, **{"fetch.dumps_url": "", "paths.dump_date": DATE}))
    assert summary["files_downloaded"] == 0 and summary["files_already_verified"] == 2
    assert not [r for r in server.file_requests() if r["path"].endswith(".tsv.gz")]
    assert len(json.loads((tmp_path / "wit" / fetch.WIT_MANIFEST).read_text())) == 2


@hsettings(max_examples=60, deadline=None)
@given(parts=st.lists(st.binary(min_size=0, max_size=3000), min_size=1, max_size=3), cut=st.floats(0, 1))
def test_gzip_end_is_checked_at_every_cut(tmp_path_factory, parts, cut):
    """Oracle: a cut passes exactly when it falls on a member boundary (which only the size check sees)."""
    members = [gzip.compress(p, mtime=0) for p in parts]
    data = b"".join(members)
    boundaries = {sum(len(m) for m in members[: i + 1]) for i in range(len(members))}
    keep = int(len(data) * cut)
    path = tmp_path_factory.mktemp("gz") / "f.gz"
    path.write_bytes(data[:keep])
    error = gzip_end_error(path)
    if keep in boundaries:
        assert error is None
    else:
        assert error is not None and (str(keep) in error or "corrupt" in error or "empty" in error)


def test_gzip_corruption_is_reported(tmp_path):
    data = bytearray(gzip.compress(os.urandom(5000) * 3, mtime=0))
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "f.gz"
    path.write_bytes(bytes(data))
    assert gzip_end_error(path)


def test_cli_fetch_latest_then_rerun_downloads_nothing(server, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DUMPS_URL": server.url, "WIT_URL": f"{server.url}/{WIT_PATH}/",
           "WIT_FILES": "wit_v1.train.all-00000-of-00010.tsv.gz,wit_v1.train.all-00001-of-00010.tsv.gz",
           "DUMPS_DIR": str(tmp_path / "dumps"), "WIT_DIR": str(tmp_path / "wit"), "DUMP_DATE": "latest",
           "USER_AGENT": UA, "DATA_ROOT": str(tmp_path / "data"), "STATE_DIR": str(tmp_path / "state"),
           "HEURISTICS": "headJ+depth"}
    help_text = subprocess.run([sys.executable, "-m", "pipeline", "fetch", "--help"], env=env, cwd=tmp_path,
                               capture_output=True, text=True, check=True).stdout
    assert "download and verify" in help_text
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-m", "pipeline", "fetch"], env=env, cwd=tmp_path,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert runs[0]["dump_date"] == DATE and runs[0]["files_downloaded"] == 7
    assert runs[1]["files_downloaded"] == 0 and runs[1]["bytes_downloaded"] == 0
    assert (tmp_path / "data" / DATE / "_summaries" / "v1.3" / "headJ+depth" / "fetch.json").exists()
