"""Data-lake paths per dump date, and which dump date a run takes."""

import pytest

from pipeline.config import load_settings
from pipeline.errors import StageError
from pipeline.lake.layout import Layout, complete_dump_dates, resolve_dump_date


def _touch(folder, *names):
    for n in names:
        (folder / n).write_bytes(b"")


def _settings(dumps, date):
    return load_settings({"paths.dumps_dir": str(dumps), "paths.dump_date": date, "paths.data_root": "/lake"},
                         environ={})


def test_latest_is_the_newest_complete_dump(tmp_path):
    full = ("page", "categorylinks", "page_props", "linktarget")
    _touch(tmp_path, *[f"commonswiki-20260101-{t}.sql.gz" for t in full])
    _touch(tmp_path, *[f"commonswiki-20260201-{t}.sql.gz" for t in full])
    # newer, but still being published: no page_props yet
    _touch(tmp_path, "commonswiki-20260301-page.sql.gz", "commonswiki-20260301-categorylinks.sql.gz")
    # another wiki and stray files do not count
    _touch(tmp_path, *[f"enwiki-20260401-{t}.sql.gz" for t in full], "commonswiki-latest-page.sql.gz", "notes.txt")
    assert complete_dump_dates(str(tmp_path)) == ["20260101", "20260201"]
    s = _settings(tmp_path, "latest")
    assert resolve_dump_date(s.paths) == "20260201"
    layout = Layout.from_settings(s)
    assert layout.root == "/lake/20260201"
    assert layout.dump("page").endswith("commonswiki-20260201-page.sql.gz")
    # a fixed date is taken as given
    assert Layout.from_settings(_settings(tmp_path, "20260101")).root == "/lake/20260101"


def test_no_complete_dump_or_a_bad_date_is_a_clear_error(tmp_path):
    _touch(tmp_path, "commonswiki-20260301-page.sql.gz")
    with pytest.raises(StageError, match="no complete commonswiki dump"):
        resolve_dump_date(_settings(tmp_path, "latest").paths)
    with pytest.raises(StageError, match="neither YYYYMMDD nor 'latest'"):
        resolve_dump_date(_settings(tmp_path, "2026-03-01").paths)
