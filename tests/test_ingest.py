"""Stage ``ingest`` on small dumps written here (three categorylinks layouts, bad
input); the real Commons subgraph is in test_realgraph.py."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import load_settings
from pipeline.errors import StageError
from spark_jobs import ingest_dumps
from tests.test_sqldump import create_table, insert

DATE = "20990101"
PAGE_COLS = [("page_id", "int(10) unsigned"), ("page_namespace", "int(11)"), ("page_title", "varbinary(255)"),
             ("page_is_redirect", "tinyint(3) unsigned"), ("page_is_new", "tinyint(3) unsigned"),
             ("page_random", "double unsigned"), ("page_len", "int(10) unsigned")]
PAGES = [
    (1, 14, "CommonsRoot", 0), (2, 14, "Topics", 0), (3, 14, "Nature", 0), (4, 14, 'Cats_of_"Paris"', 0),
    (5, 14, "Hidden_cat", 0), (6, 14, "Orphan", 0), (7, 14, "Redirected", 1),
    (100, 6, "A.jpg", 0), (101, 6, "B's.jpg", 0), (102, 6, "Redir.jpg", 1), (200, 0, "Main_Page", 0),
]
LINKS = [  # (cl_from, parent title, cl_type)
    (2, "CommonsRoot", "subcat"), (3, "Topics", "subcat"), (4, "Nature", "subcat"), (4, "Red_link_parent", "subcat"),
    (5, "Topics", "subcat"), (100, "Nature", "file"), (100, "Hidden_cat", "file"), (101, 'Cats_of_"Paris"', "file"),
    (101, "Missing_category", "file"), (200, "Topics", "page"),
]
LT_IDS = {t: i + 1 for i, t in enumerate(sorted({p for _, p, _ in LINKS}))}

EXPECTED_CATEGORIES = {
    (1, "CommonsRoot", False, False), (2, "Topics", False, False), (3, "Nature", False, False),
    (4, 'Cats of "Paris"', False, False), (5, "Hidden cat", True, False), (6, "Orphan", False, False),
    (7, "Redirected", False, True),
}
EXPECTED_EDGES = {(2, "Topics", "CommonsRoot"), (3, "Nature", "Topics"), (4, 'Cats of "Paris"', "Nature"),
                  (4, 'Cats of "Paris"', "Red link parent"), (5, "Hidden cat", "Topics")}
EXPECTED_FILE_LINKS = {(100, "A.jpg", "Nature"), (100, "A.jpg", "Hidden cat"), (101, "B's.jpg", 'Cats of "Paris"'),
                       (101, "B's.jpg", "Missing category")}


def gz(path: Path, text: str) -> None:
    with gzip.open(path, "wb") as f:
        f.write(text.encode("utf-8"))


def dump(table, cols, rows, per_line=3) -> str:
    lines = [insert(table, rows[i:i + per_line]) for i in range(0, len(rows), per_line)]
    return create_table(table, cols) + "".join(lines) + "-- Dump completed\n"


def write_dumps(d: Path, layout: str, redirect=True, links=LINKS, categorylinks_text=None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    name = lambda t: d / f"commonswiki-{DATE}-{t}.sql.gz"  # noqa: E731
    gz(name("page"), dump("page", PAGE_COLS, [(i, ns, t, r, 0, 0.5, 10) for i, ns, t, r in PAGES]))
    gz(name("page_props"), dump("page_props", [("pp_page", "int"), ("pp_propname", "varbinary(60)"),
                                               ("pp_value", "blob"), ("pp_sortkey", "float")],
                                [(5, "hiddencat", "", None), (3, "wikibase_item", "Q1", None)]))
    head = [("cl_from", "int(10) unsigned")]
    if layout in ("legacy", "transitional"):
        head.append(("cl_to", "varbinary(255)"))
    if layout in ("current", "transitional"):
        head.append(("cl_target_id", "bigint(20) unsigned"))
    cols = head + [("cl_sortkey", "varbinary(230)"), ("cl_timestamp", "timestamp"),
                   ("cl_type", "enum('page','subcat','file')"), ("cl_collation_id", "smallint")]
    rows = []
    for f, parent, typ in links:
        r = [f]
        if layout in ("legacy", "transitional"):
            r.append(parent)
        if layout in ("current", "transitional"):
            r.append(LT_IDS.get(parent, 999))
        rows.append(tuple(r + ["SORTKEY", "2020-01-01 00:00:00", typ, 0]))
    gz(name("categorylinks"), categorylinks_text or dump("categorylinks", cols, rows))
    if layout in ("current", "transitional"):
        lt = [(i, 14, t) for t, i in LT_IDS.items()] + [(500, 0, "Topics")]
        gz(name("linktarget"), dump("linktarget", [("lt_id", "bigint"), ("lt_namespace", "int"),
                                                   ("lt_title", "varbinary(255)")], lt))
    if redirect:
        gz(name("redirect"), dump("redirect", [("rd_from", "int"), ("rd_namespace", "int"), ("rd_title", "varbinary(255)"),
                                               ("rd_interwiki", "varbinary(32)"), ("rd_fragment", "varbinary(255)")],
                                  [(102, 6, "A.jpg", "", ""), (7, 14, "Nature", "", "")]))
    return d


def make_settings(dumps: Path, root: Path, date=DATE, **over):
    s = {"spark.master": "local[2]", "spark.shuffle_partitions": "4", "paths.dumps_dir": str(dumps),
         "paths.data_root": str(root), "paths.dump_date": date, "spark.dump_chunk_bytes": "400"}
    s.update({k: str(v) for k, v in over.items()})
    return load_settings(s)


def read(path) -> pd.DataFrame:
    return pd.read_parquet(path)


def as_set(df, cols):
    return set(df[cols].itertuples(index=False, name=None))


@pytest.mark.parametrize("layout", ["legacy", "transitional", "current"])
def test_three_categorylinks_layouts(spark, tmp_path, layout):
    dumps = write_dumps(tmp_path / "dumps", layout)
    summary = ingest_dumps.run(make_settings(dumps, tmp_path / "lake"))
    out = summary["outputs"]
    assert summary["categorylinks_layout"] == layout
    assert as_set(read(out["categories"]), ["page_id", "title", "hidden", "is_redirect"]) == EXPECTED_CATEGORIES
    assert as_set(read(out["category_edges"]), ["child_id", "child", "parent"]) == EXPECTED_EDGES
    assert as_set(read(out["file_links"]), ["file_id", "file_title", "category"]) == EXPECTED_FILE_LINKS
    assert as_set(read(out["file_redirects"]), ["title", "target"]) == {("Redir.jpg", "A.jpg")}
    assert summary["rows"]["rejects"] == 0 and summary["rejected_rows"] == 0
    assert summary["rows"]["category_edges"] == 5 and summary["rows"]["hidden_categories"] == 1
    assert summary["parsed"]["categorylinks"]["chunks"] >= 2  # small chunk size: parsed in parallel tasks
    # Tasks decoded their own ranges of the dumps through a seek index: the driver copied nothing.
    assert {st["chunks_read"] for st in summary["parsed"].values()} == {"indexed"}
    if layout == "transitional":
        assert summary["cl_to_linktarget_mismatch"] == 0
    assert not (tmp_path / "lake" / DATE / "_staging").exists()
    # schemas as in docs/architecture.md
    sch = {f.name: f.dataType.simpleString() for f in spark.read.parquet(out["categories"]).schema}
    assert sch == {"page_id": "bigint", "title": "string", "hidden": "boolean", "is_redirect": "boolean"}
    sch = {f.name: f.dataType.simpleString() for f in spark.read.parquet(out["rejects"]).schema}
    assert sch == {"table": "string", "file": "string", "byte_offset": "bigint", "reason": "string", "snippet": "string"}
    if layout == "current":  # a re-run replaces the outputs with identical rows in identical order
        before = {t: read(out[t]) for t in ("categories", "category_edges", "file_links")}
        ingest_dumps.run(make_settings(dumps, tmp_path / "lake"))
        for t, df in before.items():
            pd.testing.assert_frame_equal(df, read(out[t]))
        assert sorted(p.name for p in (tmp_path / "lake" / DATE / "ingest").iterdir()) == [
            "categories", "category_edges", "file_links", "file_redirects", "rejects"]


def test_bad_rows_reported_and_share_threshold(spark, tmp_path):
    cols = [("cl_from", "int"), ("cl_target_id", "bigint"), ("cl_type", "enum('page','subcat','file')")]
    text = (create_table("categorylinks", cols)
            + insert("categorylinks", [(2, LT_IDS["CommonsRoot"], "subcat"), (3, LT_IDS["Topics"], "subcat")])
            + f"INSERT INTO `categorylinks` VALUES (4,{LT_IDS['Nature']},'subcat'),(4,'x,'subcat'),(5,1,'subcat',9);\n"
            + insert("categorylinks", [(100, 777, "file")])  # no linktarget row 777
            + "INSERT INTO `othertable` VALUES (1,2,'file');\n")
    dumps = write_dumps(tmp_path / "dumps", "current", redirect=False, categorylinks_text=text)
    cl_path = str(dumps / f"commonswiki-{DATE}-categorylinks.sql.gz")
    data = gzip.decompress(Path(cl_path).read_bytes())

    summary = ingest_dumps.run(make_settings(dumps, tmp_path / "lake", **{"spark.max_reject_share": 0.9}))
    rej = read(summary["outputs"]["rejects"])
    assert summary["parsed"]["categorylinks"]["rejected_rows"] == 4
    assert summary["rows"]["rejects"] == 4 and len(rej) == 4
    assert set(rej.file) == {cl_path} and set(rej.table) == {"categorylinks"}
    by_reason = {r.reason.split(":")[0].split(" (")[0]: r for r in rej.itertuples()}
    assert data[int(by_reason["malformed tuple"].byte_offset):].startswith(b"(4,'x,")
    assert data[int(by_reason["wrong number of values"].byte_offset):].startswith(b"(5,1,'subcat',9)")
    other = [r for r in rej.itertuples() if "othertable" in r.reason][0]
    assert data[int(other.byte_offset):].startswith(b"INSERT INTO `othertable`")
    assert any("777" in r for r in rej.reason)  # unresolved cl_target_id, no byte offset
    assert as_set(read(summary["outputs"]["category_edges"]), ["child_id", "parent"]) == {
        (2, "CommonsRoot"), (3, "Topics"), (4, "Nature")}
    assert read(summary["outputs"]["file_redirects"]).empty
    assert any("redirect" in n for n in summary["notes"])

    with pytest.raises(StageError) as e:
        ingest_dumps.run(make_settings(dumps, tmp_path / "lake2"))  # default share 0.0001
    assert e.value.stage == "ingest" and e.value.path == cl_path and "rejected" in e.value.message
    assert len(read(tmp_path / "lake2" / DATE / "ingest" / "rejects")) == 4  # kept for inspection
    assert not (tmp_path / "lake2" / DATE / "ingest" / "categories").exists()


def test_truncated_gzip_fails_the_stage_unless_salvaging(spark, tmp_path):
    links = LINKS + [(6, f"Filler_{i}", "subcat") for i in range(300)]
    dumps = write_dumps(tmp_path / "dumps", "legacy", links=links)
    p = dumps / f"commonswiki-{DATE}-categorylinks.sql.gz"
    full = p.read_bytes()
    p.write_bytes(full[: len(full) - 200])
    # what an interrupted download leaves: a clear error naming the file and the byte, no output
    with pytest.raises(StageError) as e:
        ingest_dumps.run(make_settings(dumps, tmp_path / "lake0", **{"spark.max_reject_share": 0.5}))
    assert e.value.stage == "ingest" and e.value.path == str(p)
    assert "truncated" in e.value.message and f"at compressed byte {len(full) - 200}" in e.value.message
    assert not (tmp_path / "lake0" / DATE / "ingest").exists() or \
        not list((tmp_path / "lake0" / DATE / "ingest").glob("categor*"))
    # salvaging keeps today's behaviour, and says so
    summary = ingest_dumps.run(make_settings(dumps, tmp_path / "lake", **{"spark.max_reject_share": 0.5,
                                                                         "ingest.allow_truncated": "true"}))
    st = summary["parsed"]["categorylinks"]
    assert "truncated" in st["truncated"] and st["rejected_rows"] == 1
    assert st["rows"] > 250  # what was read is kept
    rej = read(summary["outputs"]["rejects"])
    assert "truncated" in rej.reason[0] and rej.byte_offset[0] > 0
    assert any("truncated" in n and "the rest of the file was not read" in n for n in summary["notes"])


def test_sql_cut_inside_an_intact_gzip_fails_the_stage_unless_salvaging(spark, tmp_path):
    """A partial dump compressed again: the gzip is complete, its last INSERT is not."""
    links = LINKS + [(6, f"Filler_{i}", "subcat") for i in range(300)]
    dumps = write_dumps(tmp_path / "dumps", "legacy", links=links)
    p = dumps / f"commonswiki-{DATE}-categorylinks.sql.gz"
    sql = gzip.decompress(p.read_bytes())
    cut = int(len(sql) * 0.6)
    p.write_bytes(gzip.compress(sql[:cut]))
    start = sql.rfind(b"\n", 0, cut) + 1  # where the cut statement begins
    with pytest.raises(StageError) as e:
        ingest_dumps.run(make_settings(dumps, tmp_path / "lake0", **{"spark.max_reject_share": 0.5}))
    assert e.value.stage == "ingest" and e.value.path == str(p)
    assert f"ends inside a statement that starts at decompressed byte {start}" in e.value.message
    assert not list((tmp_path / "lake0").rglob("*.parquet"))
    summary = ingest_dumps.run(make_settings(dumps, tmp_path / "lake", **{"spark.max_reject_share": 0.5,
                                                                         "ingest.allow_truncated": "true"}))
    st = summary["parsed"]["categorylinks"]
    assert f"decompressed byte {start}" in st["truncated"] and f"({cut - start} bytes of SQL" in st["truncated"]


@pytest.mark.parametrize("text,cut", [
    (b"INSERT INTO t VALUES (1);\n/*!40000 ALTER TABLE t ENABLE KEYS */;\nUNLOCK TABLES;\n-- Dump completed\n", None),
    (b"INSERT INTO t VALUES (1);\n", None),
    (b"INSERT INTO t VALUES (1);\nINSERT INTO t VALUES (2),(3", 26),  # no final newline
    (b"INSERT INTO t VALUES (1);\nINSERT INTO t VALUES (2),\n", 26),
    (b"INSERT INTO t VALUES (1);\n\n-- Dump completed\n", None),
])
def test_unterminated_statement(text, cut):
    from pipeline.labels.sqldump import unterminated_statement

    assert unterminated_statement(text, len(text)) == cut
    # only a tail of the stream is looked at: offsets stay absolute
    assert unterminated_statement(text[5:], len(text)) == cut


def test_missing_dump_and_missing_column(tmp_path):
    dumps = write_dumps(tmp_path / "dumps", "legacy")
    (dumps / f"commonswiki-{DATE}-page_props.sql.gz").unlink()
    with pytest.raises(StageError) as e:
        ingest_dumps.run(make_settings(dumps, tmp_path / "lake"))
    assert e.value.stage == "ingest" and e.value.path.endswith("page_props.sql.gz")

    dumps = write_dumps(tmp_path / "dumps2", "current")
    (dumps / f"commonswiki-{DATE}-linktarget.sql.gz").unlink()
    with pytest.raises(StageError, match="linktarget"):
        ingest_dumps.run(make_settings(dumps, tmp_path / "lake"))

    cols = [("cl_from", "int"), ("cl_to", "varbinary(255)")]  # no cl_type
    dumps = write_dumps(tmp_path / "dumps3", "legacy",
                        categorylinks_text=create_table("categorylinks", cols) + insert("categorylinks", [(2, "A")]))
    with pytest.raises(StageError) as e:
        ingest_dumps.run(make_settings(dumps, tmp_path / "lake"))
    assert "cl_type" in e.value.message and e.value.path.endswith("categorylinks.sql.gz")


