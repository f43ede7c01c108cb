"""pipeline.labels.sqldump: value syntax, schema by name, rejects with byte offsets, streaming."""

from __future__ import annotations

import gzip
import math

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipeline.errors import StageError
from pipeline.labels import sqldump

# ------------------------------------------------------------ a tiny mysqldump writer


def mysql_escape(s: str) -> str:
    """Escape like mysql_real_escape_string (what mysqldump writes)."""
    out = []
    for ch in s:
        out.append({"\\": "\\\\", "'": "\\'", '"': '\\"', "\0": "\\0", "\n": "\\n", "\r": "\\r",
                    "\x1a": "\\Z"}.get(ch, ch))
    return "'" + "".join(out) + "'"


def literal(v) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, (int, float)):
        return repr(v)
    return mysql_escape(v)


def create_table(table: str, columns: list[tuple[str, str]]) -> str:
    cols = ",\n".join(f"  `{c}` {t} NOT NULL" for c, t in columns)
    return (f"-- MySQL dump 10.19\n/*!40101 SET NAMES utf8mb4 */;\nDROP TABLE IF EXISTS `{table}`;\n"
            f"CREATE TABLE `{table}` (\n{cols},\n  PRIMARY KEY (`{columns[0][0]}`)\n) ENGINE=InnoDB;\n"
            f"/*!40000 ALTER TABLE `{table}` DISABLE KEYS */;\n")


def insert(table: str, rows) -> str:
    return f"INSERT INTO `{table}` VALUES " + ",".join("(" + ",".join(map(literal, r)) + ")" for r in rows) + ";\n"


def dump_text(table, columns, lines: list[str]) -> str:
    return create_table(table, columns) + "".join(lines) + f"/*!40000 ALTER TABLE `{table}` ENABLE KEYS */;\n-- Dump completed\n"


def write_gz(path, text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    with gzip.open(path, "wb") as f:
        f.write(data)
    return str(path)


COLS = [("t_id", "int(10) unsigned"), ("t_name", "varbinary(255)"), ("t_score", "double"), ("t_note", "blob")]
WANT = ["t_id", "t_name", "t_score", "t_note"]


def parser(columns=COLS, wanted=WANT, table="t"):
    schema = sqldump.parse_create_table(create_table(table, columns), "x.sql.gz")
    return sqldump.DumpParser(schema, wanted, "x.sql.gz")


# ------------------------------------------------------------ value syntax

text_st = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)


@hsettings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-2**63, 2**63 - 1), text_st,
                          st.floats(allow_nan=False, allow_infinity=False), st.one_of(st.none(), text_st)),
                min_size=1, max_size=8))
def test_roundtrip_arbitrary_values(rows):
    res = parser().parse_line(insert("t", rows).rstrip("\n"))
    assert res.rejects == [] and res.rows == len(rows)
    assert res.columns["t_id"] == [r[0] for r in rows]
    assert res.columns["t_name"] == [r[1] for r in rows]
    assert res.columns["t_score"] == [r[2] for r in rows]
    assert res.columns["t_note"] == [r[3] for r in rows]


@pytest.mark.parametrize("token,value", [
    (r"'it\'s'", "it's"), (r"'say \"hi\"'", 'say "hi"'), (r"'back\\slash'", "back\\slash"),
    (r"'a\nb'", "a\nb"), (r"'a\rb'", "a\rb"), (r"'nul\0x'", "nul\0x"), (r"'ctrl\Zz'", "ctrl\x1az"),
    (r"'tab\tx'", "tab\tx"), (r"'bs\bx'", "bs\bx"), (r"'100\%'", "100\\%"), (r"'a\_b'", "a\\_b"),
    (r"'unknown\qx'", "unknownqx"), ("'it''s'", "it's"), ("''", ""), ("'(1,2),(3'", "(1,2),(3"),
    ("_binary 'bin\\'x'", "bin'x"), ("0x4162", "Ab"), ("X'4162'", "Ab"), ("NULL", None),
    ("'Königsegg_㏗'", "Königsegg_㏗"),
])
def test_each_escape_and_literal(token, value):
    p = parser([("a_id", "int"), ("a_s", "varbinary(10)")], ["a_id", "a_s"], "a")
    res = p.parse_line(f"INSERT INTO `a` VALUES (1,{token}),(2,'ok');")
    assert res.rejects == []
    assert res.columns["a_s"] == [value, "ok"]
    assert sqldump.parse_value(token) == value


@pytest.mark.parametrize("token,value", [("-5", -5), ("1e3", 1000.0), ("-2.5E-3", -0.0025), ("0.5", 0.5),
                                         (".5", 0.5), ("7", 7.0), ("NULL", None)])
def test_numbers(token, value):
    p = parser([("a_id", "int"), ("a_f", "double")], ["a_id", "a_f"], "a")
    res = p.parse_line(f"INSERT INTO `a` VALUES (1,{token});")
    assert res.rejects == [] and res.columns["a_f"] == [value]


def test_int_column_with_null_and_hex():
    p = parser([("a_id", "bigint"), ("a_s", "varbinary(9)")], ["a_id"], "a")
    res = p.parse_line("INSERT INTO `a` VALUES (NULL,'x'),(0x10,'y'),(-3,'z');")
    assert res.columns["a_id"] == [None, 16, -3]


def test_columns_found_by_name_not_position():
    reordered = [COLS[2], COLS[0], COLS[3], COLS[1]]
    p = parser(reordered, ["t_name", "t_id"])
    res = p.parse_line("INSERT INTO `t` VALUES (1.5,7,NULL,'Seven_a');")
    assert res.columns == {"t_name": ["Seven_a"], "t_id": [7]}


def test_insert_with_column_list():
    p = parser(COLS, ["t_id", "t_name"])
    res = p.parse_line("INSERT INTO `t` (`t_name`, `t_id`) VALUES ('a',1),('b',2);")
    assert res.columns == {"t_id": [1, 2], "t_name": ["a", "b"]}


def test_missing_column_is_a_stage_error_naming_file_and_column():
    schema = sqldump.parse_create_table(create_table("t", COLS), "/d/x-t.sql.gz")
    with pytest.raises(StageError) as e:
        sqldump.DumpParser(schema, ["t_id", "t_missing"], "/d/x-t.sql.gz")
    assert "/d/x-t.sql.gz" in str(e.value) and "t_missing" in str(e.value)


def test_no_create_table_is_a_stage_error(tmp_path):
    path = write_gz(tmp_path / "x.sql.gz", "INSERT INTO `t` VALUES (1);\n")
    with pytest.raises(StageError, match="CREATE TABLE"):
        sqldump.parse_dump(path, ["t_id"])


def test_undecodable_bytes_replaced_and_counted(tmp_path):
    head = create_table("t", COLS).encode()
    line = b"INSERT INTO `t` VALUES (1,'ok',1,''),(2,'bad\xff\xfe',2,'');\n"
    path = write_gz(tmp_path / "x.sql.gz", head + line)
    res = sqldump.parse_dump(path, WANT)
    assert res.columns["t_name"] == ["ok", "bad\ufffd\ufffd"]
    assert res.undecodable == 1 and res.rejects == []


def test_title_from_db():
    assert sqldump.title_from_db("Cats_of_Paris") == "Cats of Paris"


# ------------------------------------------------------------ rejects with byte offsets


def _dump_with(tmp_path, bad_line: str, name="x.sql.gz"):
    good = insert("t", [(1, "a", 1.0, None), (2, "b", 2.0, "n")])
    text = dump_text("t", COLS, [good, bad_line, good])
    return write_gz(tmp_path / name, text), text.encode()


@pytest.mark.parametrize("bad_tuple,reason", [
    ("(3,'c',3.0)", "wrong number of values: expected 4, got 3"),
    ("(3,'c',3.0,NULL,5)", "wrong number of values: expected 4, got 5"),
    ("(3,'c,3.0,NULL)", "malformed tuple"),
    ("(3,c,3.0,NULL)", "malformed tuple"),
])
def test_bad_tuple_is_rejected_with_offset_and_parsing_continues(tmp_path, bad_tuple, reason):
    line = f"INSERT INTO `t` VALUES (10,'x',1,NULL),{bad_tuple},(11,'y',2,NULL);\n"
    path, data = _dump_with(tmp_path, line)
    res = sqldump.parse_dump(path, WANT)
    assert res.columns["t_id"] == [1, 2, 10, 11, 1, 2]
    assert len(res.rejects) == 1 and res.rejected_rows == 1
    rej = res.rejects[0]
    assert rej.reason.startswith(reason) and rej.file == path and rej.table == "t"
    assert data[rej.byte_offset:].startswith(bad_tuple.encode()[:5]), (rej, data[rej.byte_offset:][:30])


def test_line_cut_in_the_middle(tmp_path):
    line = "INSERT INTO `t` VALUES (10,'x',1,NULL),(11,'y',2,NU\n"
    path, data = _dump_with(tmp_path, line)
    res = sqldump.parse_dump(path, WANT)
    assert res.columns["t_id"] == [1, 2, 10, 1, 2]
    assert [r.reason for r in res.rejects] == ["line cut in the middle (no terminating ';')"]
    assert data[res.rejects[0].byte_offset:].startswith(b",(11,'y'")


def test_insert_for_another_table(tmp_path):
    line = "INSERT INTO `other` VALUES (1,'x',1,NULL),(2,'y',2,NULL);\n"
    path, data = _dump_with(tmp_path, line)
    res = sqldump.parse_dump(path, WANT)
    assert res.rows == 4 and res.rejected_rows == 2
    assert "`other`" in res.rejects[0].reason
    assert data[res.rejects[0].byte_offset:].startswith(b"INSERT INTO `other`")


def test_unexpected_line(tmp_path):
    path, data = _dump_with(tmp_path, "garbage here\n")
    res = sqldump.parse_dump(path, WANT)
    assert res.rows == 4 and res.rejects[0].reason.startswith("unexpected line")
    assert data[res.rejects[0].byte_offset:].startswith(b"garbage here")


def test_offsets_count_bytes_not_characters(tmp_path):
    line = "INSERT INTO `t` VALUES (10,'ÄÖÜ㏗',1,NULL),(3,'c',3.0),(11,'y',2,NULL);\n"
    path, data = _dump_with(tmp_path, line)
    res = sqldump.parse_dump(path, WANT)
    assert data[res.rejects[0].byte_offset:].startswith(b"(3,'c',3.0)")


def test_snippet_is_short():
    p = parser()
    res = p.parse_line("INSERT INTO `t` VALUES (1,'" + "x" * 1000 + ",1,NULL);")
    assert res.rejects and all(len(r.snippet) <= 200 for r in res.rejects)


# ------------------------------------------------------------ streaming and chunks


def _big_dump(n_lines=40, per_line=50):
    lines = [insert("t", [(i * per_line + j, f"name_{i}_{j}", j / 3, None) for j in range(per_line)])
             for i in range(n_lines)]
    return dump_text("t", COLS, lines)


def test_split_into_chunks_with_offsets(tmp_path):
    text = _big_dump()
    data = text.encode()
    path = write_gz(tmp_path / "x.sql.gz", text)
    split = sqldump.split_dump(path, str(tmp_path / "chunks"), chunk_bytes=5000, table="t")
    assert len(split.chunks) > 5 and split.truncated is None and split.total_bytes == len(data)
    assert split.schema.columns == tuple(c for c, _ in COLS)
    # A complete gzip is not copied: tasks decode their own ranges through the seek index.
    assert split.how == "indexed" and not list((tmp_path / "chunks").glob("chunk-*"))
    ids = []
    for ch in split.chunks:
        content = sqldump.read_chunk(ch)
        assert ch.path is None and ch.index and data[ch.offset:ch.offset + ch.size] == content
        assert content.endswith(b"\n")
        for r in sqldump.parse_chunk(ch, split.schema, ["t_id"]):
            ids += r.columns["t_id"]
    assert ids == list(range(40 * 50))


@hsettings(max_examples=25, deadline=None)
@given(n_lines=st.integers(0, 30), per_line=st.integers(1, 20), chunk_bytes=st.integers(1, 3000),
       form=st.sampled_from(["gzip", "plain", "two members"]))
def test_chunks_tile_the_sql_after_the_header(tmp_path_factory, n_lines, per_line, chunk_bytes, form):
    """Whatever the chunk size and file form, the chunks are whole lines that tile the SQL exactly."""
    tmp = tmp_path_factory.mktemp("split")
    data = _big_dump(n_lines, per_line).encode()
    path = tmp / "x.sql.gz"
    if form == "gzip":
        path.write_bytes(gzip.compress(data))
    elif form == "plain":
        path = tmp / "x.sql"
        path.write_bytes(data)
    else:
        path.write_bytes(gzip.compress(data[: len(data) // 2]) + gzip.compress(data[len(data) // 2:]))
    split = sqldump.split_dump(str(path), str(tmp / "chunks"), chunk_bytes, table="t")
    assert split.how == {"gzip": "indexed", "plain": "direct", "two members": "copied"}[form]
    start = data.find(b"INSERT")
    start = len(data) if start < 0 else start
    assert split.total_bytes == len(data) and split.truncated is None
    pos = start
    for ch in split.chunks:
        assert ch.offset == pos and sqldump.read_chunk(ch) == data[pos:pos + ch.size]
        assert ch.size >= min(chunk_bytes, len(data) - pos) and data[pos + ch.size - 1:pos + ch.size] == b"\n"
        pos += ch.size
    assert pos == len(data)


def test_a_dump_changed_after_the_split_is_named(tmp_path):
    path = tmp_path / "x.sql"
    path.write_text(_big_dump())
    split = sqldump.split_dump(str(path), str(tmp_path / "chunks"), chunk_bytes=5000, table="t")
    path.write_bytes(path.read_bytes()[: split.chunks[-1].offset + 10])
    with pytest.raises(StageError, match=r"x\.sql.*expected \d+ bytes at decompressed byte \d+, read 10"):
        sqldump.read_chunk(split.chunks[-1])


def test_corrupt_gzip_is_decoded_serially_and_reported(tmp_path):
    import random

    rnd = random.Random(0)
    lines = [insert("t", [(i * 100 + j, "%032x" % rnd.getrandbits(128), j / 3, None) for j in range(100)])
             for i in range(1500)]
    data = dump_text("t", COLS, lines).encode()
    raw = bytearray(gzip.compress(data, compresslevel=1))
    assert len(raw) > 3 << 20  # several of the serial reader's 1 MB input blocks
    raw[len(raw) * 3 // 4] ^= 0xFF
    path = tmp_path / "x.sql.gz"
    path.write_bytes(bytes(raw))
    split = sqldump.split_dump(str(path), str(tmp_path / "chunks"), chunk_bytes=1 << 20, table="t")
    assert split.how == "copied" and "corrupt gzip" in split.truncated
    kept = b"".join(sqldump.read_chunk(c) for c in split.chunks)
    assert len(data) // 2 < len(kept) < len(data)  # bytes before the damage are kept (deflate may garble a few)
    assert kept[: len(data) // 2] == data[split.chunks[0].offset:][: len(data) // 2]
    path.write_bytes(bytes(raw[:60]) + bytes(5000))
    with pytest.raises(StageError, match="before the first INSERT"):
        sqldump.split_dump(str(path), str(tmp_path / "c2"), chunk_bytes=1 << 20, table="t")


def test_split_wrong_table_is_a_stage_error(tmp_path):
    path = write_gz(tmp_path / "x.sql.gz", _big_dump(2))
    with pytest.raises(StageError, match="expected `page`"):
        sqldump.split_dump(path, str(tmp_path / "c"), 5000, table="page")


def test_truncated_gzip_keeps_what_was_read(tmp_path):
    text = _big_dump()
    full = gzip.compress(text.encode())
    path = tmp_path / "x.sql.gz"
    path.write_bytes(full[: int(len(full) * 0.6)])
    split = sqldump.split_dump(str(path), str(tmp_path / "chunks"), chunk_bytes=5000, table="t")
    assert split.truncated and "truncated" in split.truncated
    assert split.how == "copied"  # rapidgzip returns a cut stream's prefix silently: the footer check caught it
    rows, rejects = [], []
    for ch in split.chunks:
        for r in sqldump.parse_chunk(ch, split.schema, ["t_id"]):
            rows += r.columns["t_id"]
            rejects += r.rejects
    rejects += split.rejects
    assert len(rows) > 100 and rows == list(range(len(rows)))
    assert len(rejects) == 1 and "truncated" in rejects[0].reason
    data = text.encode()
    assert data[rejects[0].byte_offset:].startswith(b",(" + str(len(rows)).encode())
    # the serial reader agrees
    res = sqldump.parse_dump(str(path), ["t_id"])
    assert res.columns["t_id"] == rows and len(res.rejects) == 1


def test_plain_and_multimember_gzip(tmp_path):
    text = _big_dump(4, 3)
    half = len(text) // 2
    cut = text.index("\n", half) + 1
    path = tmp_path / "x.sql.gz"
    path.write_bytes(gzip.compress(text[:cut].encode()) + gzip.compress(text[cut:].encode()))
    assert sqldump.parse_dump(str(path), ["t_id"]).columns["t_id"] == list(range(12))
    plain = tmp_path / "x.sql"
    plain.write_text(text)
    assert sqldump.parse_dump(str(plain), ["t_id"]).columns["t_id"] == list(range(12))


def test_real_dump_header_columns():
    schema = sqldump.read_schema("tests/data/commons_realgraph/current/commonswiki-20220220-categorylinks.sql.gz")
    assert schema.table == "categorylinks" and "cl_target_id" in schema.columns and "cl_to" not in schema.columns
    assert schema.kind("cl_from") == "int" and schema.kind("cl_type") == "str"
    assert not math.isnan(len(schema.columns))
