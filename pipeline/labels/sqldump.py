"""Streaming, fast parser for MediaWiki ``mysqldump`` files (``.sql.gz``).

Pure Python (no Spark) so that the driver can cut a dump into chunks and
executors can parse chunks in parallel. Design choices, and why:

* Columns are found BY NAME from the dump's ``CREATE TABLE`` (MediaWiki changes
  column order and adds/drops columns between versions).
* A whole ``INSERT`` line is parsed with one ``re.split`` over a tuple regex that
  has one capturing group per column: the regex engine does the scanning in C,
  and column ``k`` of every tuple is then the slice ``pieces[1+k::n+1]`` (no
  per-character Python loop). The text between matched tuples must be exactly
  ``,``; anything else is a malformed tuple / wrong arity and becomes a reject,
  and parsing continues with the next tuple.
* Values follow MySQL's literal syntax: quoted strings with backslash escapes
  (``\\0 \\' \\" \\b \\n \\r \\t \\Z \\\\ \\% \\_``, and ``''``), ``NULL``, ints,
  floats with exponents, ``0x..`` / ``X'..'`` hex literals and ``_binary '..'``.
* ``varbinary`` holds bytes: lines are decoded as UTF-8; when a line is not valid
  UTF-8 the offending values are decoded with U+FFFD replacement and counted.
* Every reject carries table, file, decompressed byte offset, reason and a
  snippet (<= 200 chars), so bad input can be found with ``zcat | tail -c +N``.
"""

from __future__ import annotations

import logging
import re
import zlib
from dataclasses import asdict, dataclass, field
from typing import Iterator, Sequence

import fsspec

from pipeline.errors import StageError

SNIPPET = 200
REJECT_FIELDS = ("table", "file", "byte_offset", "reason", "snippet")

# ---------------------------------------------------------------- value syntax

_STR = r"'[^'\\]*(?:(?:\\.|'')[^'\\]*)*'"
_NUM = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_VAL = rf"(?:{_STR}|NULL|{_NUM}|0x[0-9A-Fa-f]*|[xX]'[0-9A-Fa-f]*'|_binary ?{_STR})"
_VALUE_RE = re.compile(_VAL, re.S)
_GENERIC_TUPLE_RE = re.compile(rf"\(\s*{_VAL}(?:\s*,\s*{_VAL})*\s*\)", re.S)
_INSERT_RE = re.compile(
    r"INSERT\s+(?:IGNORE\s+)?INTO\s+`?([^`\s(]+)`?\s*(?:\(([^)]*)\)\s*)?VALUES\s*", re.I
)
_UNESCAPE_RE = re.compile(r"\\(.)|''", re.S)
# MySQL: \% and \_ keep their backslash (they exist for LIKE patterns); an unknown
# escape \x is just x.
_ESCAPES = {
    "0": "\0", "'": "'", '"': '"', "b": "\b", "n": "\n", "r": "\r", "t": "\t",
    "Z": "\x1a", "\\": "\\", "%": "\\%", "_": "\\_",
}
_SURROGATE_RE = re.compile("[\udc80-\udcff]")
_TUPLE_RE_CACHE: dict[int, re.Pattern] = {}

INT_TYPES = {"tinyint", "smallint", "mediumint", "int", "integer", "bigint", "year", "bit"}
FLOAT_TYPES = {"float", "double", "real", "decimal", "numeric"}


def _tuple_re(n: int) -> re.Pattern:
    """Regex for one tuple of exactly ``n`` values, one capturing group each."""
    pat = _TUPLE_RE_CACHE.get(n)
    if pat is None:
        pat = re.compile(r"\(" + ",".join([f"({_VAL})"] * n) + r"\)", re.S)
        _TUPLE_RE_CACHE[n] = pat
    return pat


def _unescape_sub(m: re.Match) -> str:
    c = m.group(1)
    return "'" if c is None else _ESCAPES.get(c, c)


def unescape(body: str) -> str:
    """MySQL string-literal body (between the quotes) -> its value."""
    if "\\" in body or "''" in body:
        return _UNESCAPE_RE.sub(_unescape_sub, body)
    return body


def parse_value(token: str):
    """One SQL literal token -> Python value (str, int, float, bytes-decoded str or None).

    Hex literals and ``_binary`` strings decode as UTF-8 (with replacement), since
    MediaWiki stores text in binary columns.
    """
    if token[0] == "'":
        return unescape(token[1:-1])
    if token == "NULL":
        return None
    if token.startswith("_binary"):
        s = token[7:].lstrip()
        return unescape(s[1:-1])
    if token[:2] in ("0x", "0X"):
        return bytes.fromhex(token[2:]).decode("utf-8", "replace")
    if token[:2] in ("x'", "X'"):
        return bytes.fromhex(token[2:-1]).decode("utf-8", "replace")
    try:
        return int(token)
    except ValueError:
        return float(token)


def title_from_db(title: str | None) -> str | None:
    """Dump titles use underscores; outputs use spaces (as users write them)."""
    return None if title is None else title.replace("_", " ")


# ---------------------------------------------------------------- schema


@dataclass(frozen=True)
class Schema:
    table: str
    columns: tuple[str, ...]
    types: tuple[str, ...]

    def kind(self, column: str) -> str:
        t = self.types[self.columns.index(column)]
        return "int" if t in INT_TYPES else "float" if t in FLOAT_TYPES else "str"

    def require(self, columns: Sequence[str], file: str, stage: str = "ingest") -> list[int]:
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise StageError(
                stage, file,
                f"table `{self.table}` has no column {', '.join(f'`{c}`' for c in missing)} "
                f"(columns: {', '.join(self.columns)})",
            )
        return [self.columns.index(c) for c in columns]


_CREATE_RE = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?`?([^`\s(]+)`?\s*\(", re.I)
_COLUMN_RE = re.compile(r"^\s*`((?:[^`]|``)+)`\s+([A-Za-z]+)")


def parse_create_table(text: str, file: str = "?", stage: str = "ingest") -> Schema:
    """Column names and base types, in order, from a dump's CREATE TABLE."""
    m = _CREATE_RE.search(text)
    if not m:
        raise StageError(stage, file, "no CREATE TABLE statement before the first INSERT")
    cols, types = [], []
    for line in text[m.end():].splitlines():
        if line.lstrip().startswith(")"):
            break
        cm = _COLUMN_RE.match(line)
        if cm:
            cols.append(cm.group(1).replace("``", "`"))
            types.append(cm.group(2).lower())
    if not cols:
        raise StageError(stage, file, f"CREATE TABLE `{m.group(1)}` lists no columns")
    return Schema(m.group(1), tuple(cols), tuple(types))


# ---------------------------------------------------------------- rejects / results


@dataclass
class Reject:
    table: str
    file: str
    byte_offset: int | None
    reason: str
    snippet: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ParseResult:
    """Column-oriented values of the wanted columns plus what went wrong."""

    columns: dict[str, list]
    rows: int = 0
    rejected_rows: int = 0
    rejects: list[Reject] = field(default_factory=list)
    undecodable: int = 0

    def extend(self, other: "ParseResult") -> None:
        for k, v in other.columns.items():
            self.columns[k].extend(v)
        self.rows += other.rows
        self.rejected_rows += other.rejected_rows
        self.rejects.extend(other.rejects)
        self.undecodable += other.undecodable


def _snippet(s: str) -> str:
    s = s if len(s) <= SNIPPET else s[: SNIPPET - 3] + "..."
    return s


# ---------------------------------------------------------------- conversions


def _conv_int(col: list) -> tuple[list, list[int]]:
    try:
        return list(map(int, col)), []
    except ValueError:
        pass
    out, bad = [], []
    for i, s in enumerate(col):
        try:
            if s[:2] in ("0x", "0X"):  # hex literal in numeric context
                out.append(int(s[2:], 16))
                continue
            v = parse_value(s)
            if isinstance(v, str):
                v = int(v)
            elif isinstance(v, float):
                if not v.is_integer():
                    raise ValueError(s)
                v = int(v)
        except (ValueError, TypeError):
            bad.append(i)
            v = None
        out.append(v)
    return out, bad


def _conv_float(col: list) -> tuple[list, list[int]]:
    try:
        return list(map(float, col)), []
    except ValueError:
        pass
    out, bad = [], []
    for i, s in enumerate(col):
        try:
            v = parse_value(s)
            v = None if v is None else float(v)
        except (ValueError, TypeError):
            bad.append(i)
            v = None
        out.append(v)
    return out, bad


def _conv_str(col: list) -> tuple[list, list[int]]:
    out = []
    append = out.append
    for s in col:
        if s[0] == "'":
            v = s[1:-1]
            if "\\" in v or "''" in v:
                v = _UNESCAPE_RE.sub(_unescape_sub, v)
            append(v)
        else:
            v = parse_value(s)
            append(v if v is None or isinstance(v, str) else s)
    return out, []


_CONVERTERS = {"int": _conv_int, "float": _conv_float, "str": _conv_str}

_SKIP_PREFIXES = (b"--", b"/*", b"LOCK TABLES", b"UNLOCK TABLES", b"SET ", b"COMMIT", b"START TRANSACTION",
                  b"BEGIN", b"DROP ", b"USE ")


class DumpParser:
    """Parses INSERT lines of one table's dump into the wanted columns."""

    def __init__(self, schema: Schema, wanted: Sequence[str], file: str, stage: str = "ingest"):
        self.schema, self.wanted, self.file, self.table = schema, list(wanted), file, schema.table
        self.positions = schema.require(self.wanted, file, stage)
        self.kinds = [schema.kind(c) for c in self.wanted]
        self.n = len(schema.columns)

    def _empty(self) -> ParseResult:
        return ParseResult({c: [] for c in self.wanted})

    def _reject(self, res: ParseResult, line: str, pos: int, line_offset: int, reason: str,
                text: str, rows: int = 1) -> None:
        off = line_offset + len(line[:pos].encode("utf-8", "surrogateescape"))
        res.rejects.append(Reject(self.table, self.file, off, reason, _snippet(text)))
        res.rejected_rows += rows

    # -- one line
    def parse_line(self, line: str, line_offset: int = 0, cut_note: str | None = None,
                   undecodable: bool = False) -> ParseResult:
        """Parse one ``INSERT`` line (str, without the newline)."""
        res = self._empty()
        m = _INSERT_RE.match(line)
        if not m:
            self._reject(res, line, 0, line_offset, "not an INSERT statement", line)
            return res
        if m.group(1) != self.table:
            n = len(_GENERIC_TUPLE_RE.findall(line, m.end())) or 1
            self._reject(res, line, 0, line_offset,
                         f"INSERT for table `{m.group(1)}` in the dump of `{self.table}` ({n} rows)", line, n)
            return res
        n, positions = self.n, self.positions
        if m.group(2) is not None:  # INSERT INTO t (`a`,`b`) VALUES: the line names its columns
            names = [c.strip().strip("`") for c in m.group(2).split(",")]
            missing = [c for c in self.wanted if c not in names]
            if missing:
                k = len(_GENERIC_TUPLE_RE.findall(line, m.end())) or 1
                self._reject(res, line, 0, line_offset, f"INSERT column list lacks {missing} ({k} rows)", line, k)
                return res
            n, positions = len(names), [names.index(c) for c in self.wanted]
        start = m.end()
        body = line[start:].rstrip()
        complete = body.endswith(";")
        pieces = _tuple_re(n).split(body)
        step = n + 1
        seps = pieces[0::step]
        ntup = len(seps) - 1
        clean = complete and seps[0] == "" and seps[-1] == ";" and seps[1:-1].count(",") == ntup - 1

        cols, bad = [], set()
        for pos, kind in zip(positions, self.kinds):
            values, bad_idx = _CONVERTERS[kind](pieces[1 + pos :: step])
            cols.append(values)
            bad.update(bad_idx)
        if undecodable:
            for j, kind in enumerate(self.kinds):
                if kind != "str":
                    continue
                vals = cols[j]
                for i, v in enumerate(vals):
                    if v is not None and _SURROGATE_RE.search(v):
                        vals[i] = v.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                        res.undecodable += 1

        if not clean or bad:
            self._dirty(res, line, line_offset, start, body, pieces, step, n, complete, cut_note, bad, positions)
        if bad:
            keep = [i for i in range(ntup) if i not in bad]
            cols = [[c[i] for i in keep] for c in cols]
            ntup = len(keep)
        for name, values in zip(self.wanted, cols):
            res.columns[name] = values
        res.rows = ntup
        return res

    def _dirty(self, res, line, line_offset, start, body, pieces, step, n, complete, cut_note, bad, positions):
        """Slow path: locate and describe what lies between (or inside) the tuples."""
        seps = pieces[0::step]
        ntup = len(seps) - 1
        pos = start
        last = len(seps) - 1
        for i, sep in enumerate(seps):
            if i == last and not complete:
                self._reject(res, line, pos, line_offset,
                             "line cut in the middle (no terminating ';')" + (f": {cut_note}" if cut_note else ""),
                             sep or body[-SNIPPET:])
            else:
                self._junk(res, line, line_offset, pos, sep, first=i == 0, last=i == last, n=n)
            pos += len(sep)
            if i < ntup:
                values = pieces[i * step + 1 : (i + 1) * step]
                tlen = 2 + (n - 1) + sum(map(len, values))
                if i in bad:
                    self._reject(res, line, pos, line_offset,
                                 "value does not fit its column type: "
                                 + ", ".join(f"{c}={values[p]!r}" for c, p in zip(self.wanted, positions)),
                                 line[pos : pos + tlen])
                pos += tlen

    def _junk(self, res, line, line_offset, pos, sep, first, last, n):
        expected = "" if first else ";" if last else ","
        if sep == expected or sep.strip() == expected:
            return
        inner, cursor = sep, 0
        for tm in _GENERIC_TUPLE_RE.finditer(inner):
            self._junk_text(res, line, line_offset, pos + cursor, inner[cursor : tm.start()])
            k = len(_VALUE_RE.findall(tm.group(0)))
            self._reject(res, line, pos + tm.start(), line_offset,
                         f"wrong number of values: expected {n}, got {k}", tm.group(0))
            cursor = tm.end()
        self._junk_text(res, line, line_offset, pos + cursor, inner[cursor:])

    def _junk_text(self, res, line, line_offset, pos, text):
        stripped = text.strip().strip(",;").strip()
        if stripped:
            lead = len(text) - len(text.lstrip().lstrip(",;").lstrip())
            self._reject(res, line, pos + lead, line_offset, "malformed tuple", stripped)

    # -- many lines
    def parse_bytes(self, data: bytes, base_offset: int = 0, truncated: str | None = None,
                    batch_rows: int = 200_000) -> Iterator[ParseResult]:
        """Parse a block of whole dump lines; yields results of about ``batch_rows`` rows.

        ``truncated`` (the reason a gzip stream ended early) is attached to the
        reject of a final line that lacks its newline.
        """
        acc = self._empty()
        pos = 0
        lines = data.split(b"\n")
        last = len(lines) - 1
        in_create = False
        for i, raw in enumerate(lines):
            off = base_offset + pos
            pos += len(raw) + 1
            cut_note = truncated if (i == last and raw) else None
            s = raw.strip()
            if not s:
                continue
            if in_create:
                in_create = not s.endswith(b";")
                continue
            if s[:6].upper() == b"INSERT":
                try:
                    text, undec = raw.decode("utf-8"), False
                except UnicodeDecodeError:
                    text, undec = raw.decode("utf-8", "surrogateescape"), True
                acc.extend(self.parse_line(text, off, cut_note, undec))
                if acc.rows >= batch_rows:
                    yield acc
                    acc = self._empty()
            elif s.startswith(_SKIP_PREFIXES):
                continue
            elif s[:6].upper() == b"CREATE":
                in_create = not s.endswith(b";")
            else:
                text = raw.decode("utf-8", "replace")
                reason = "unexpected line in the data section" + (f" (line cut: {cut_note})" if cut_note else "")
                self._reject(acc, text, 0, off, reason, text)
        yield acc


# ---------------------------------------------------------------- streaming


GZIP_MAGIC = b"\x1f\x8b"  # a file that does not start with it is read as plain SQL


class _Inflater:
    """Decompressed blocks of a (possibly truncated or multi-member) gzip file.

    zlib is driven by hand rather than through ``gzip.GzipFile`` so that every
    byte decompressed before a truncation or corruption is still delivered;
    ``self.error`` then says what happened.
    """

    def __init__(self, path: str, block: int = 1 << 20):
        self.path, self.block, self.error = path, block, None

    def blocks(self) -> Iterator[bytes]:
        with fsspec.open(self.path, "rb") as f:
            raw = f.read(self.block)
            if raw[:2] != GZIP_MAGIC:  # plain .sql
                while raw:
                    yield raw
                    raw = f.read(self.block)
                return
            d = zlib.decompressobj(wbits=47)
            while raw:
                try:
                    out = d.decompress(raw)
                    if out:
                        yield out
                    while d.eof and d.unused_data:
                        rest = d.unused_data
                        if not rest.strip(b"\0"):
                            break
                        d = zlib.decompressobj(wbits=47)
                        out = d.decompress(rest)
                        if out:
                            yield out
                except zlib.error as e:
                    self.error = f"corrupt gzip stream ({e})"
                    return
                raw = f.read(self.block)
            if not d.eof:
                self.error = "gzip stream truncated (the compressed file ended before the end-of-stream marker)"


@dataclass
class Chunk:
    """A line-aligned range of a dump's decompressed SQL, for one parse task.

    Read from ``path`` when the driver copied it there (a damaged gzip), else from
    the dump itself: through the seek index ``index`` for a gzip, directly for a
    plain ``.sql``.
    """

    table: str
    file: str
    path: str | None
    offset: int  # decompressed byte offset of the chunk's first line in the dump
    size: int
    truncated: str | None = None
    index: str | None = None


@dataclass
class SplitResult:
    schema: Schema
    chunks: list[Chunk]
    total_bytes: int  # decompressed bytes read
    truncated: str | None  # why the stream ended early, or None
    ends_at_line_boundary: bool = True
    rejects: list[Reject] = field(default_factory=list)
    # A complete gzip whose SQL ends inside a statement (a partial file compressed again):
    # the decompressed offset where that statement starts.
    cut_at: int | None = None
    how: str = "copied"  # "indexed" (gzip + seek index), "direct" (plain SQL) or "copied" (chunk files)


TAIL_BYTES = 1 << 16
_TRAILER = (b"/*", b"--", b"UNLOCK", b"LOCK", b"SET ", b"COMMIT")


def unterminated_statement(tail: bytes, end: int) -> int | None:
    """Where the dump's last statement starts when it is cut (no ``;`` ending it), else None.

    ``tail`` is the last bytes of the decompressed stream, ``end`` the stream's
    length. mysqldump ends every INSERT with ``;`` and the file with a newline,
    followed only by comments, ``UNLOCK TABLES;`` and ``SET`` lines.
    """
    base = end - len(tail)
    if tail and not tail.endswith(b"\n"):
        return base + tail.rfind(b"\n") + 1
    pos = len(tail)
    for line in reversed(tail.split(b"\n")[:-1]):
        pos -= len(line) + 1
        text = line.rstrip(b"\r")
        if not text.strip() or text.startswith(_TRAILER):
            continue
        return None if text.endswith(b";") else base + max(pos, 0)
    return None


_HEADER_CAP = 64 << 20


def _schema_from_header(header: bytes, path: str, table: str | None, stage: str) -> Schema:
    schema = parse_create_table(header.decode("utf-8", "replace"), path, stage)
    if table is not None and schema.table != table:
        raise StageError(stage, path, f"dump holds table `{schema.table}`, expected `{table}`")
    return schema


def read_schema(path: str, table: str | None = None, stage: str = "ingest") -> Schema:
    """Schema from the dump's header, reading only up to the first INSERT."""
    header = bytearray()
    for block in _Inflater(path).blocks():
        idx = block.find(b"\nINSERT")
        if idx >= 0 or block.startswith(b"INSERT"):
            header += block[: max(idx, 0)]
            break
        header += block
        if len(header) > _HEADER_CAP:
            break
    return _schema_from_header(bytes(header), path, table, stage)


class _Unverified(Exception):
    """rapidgzip could not vouch for the stream: decode it serially instead."""


def _local(path: str) -> str | None:
    fs, local = fsspec.core.url_to_fs(path)
    return local if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)) else None


# rapidgzip's seek points: one per this many decompressed bytes. Its decode cache (and so the
# driver's memory while indexing) grows with it, the index shrinks: 2 MiB gives ~180 MB and an
# index of 0.16% of the SQL (gztool format, compressed windows), measured on a 627 MB dump.
INDEX_SPACING = 2 << 20


def _open_rapidgzip(path: str, parallelization: int, stack):
    """rapidgzip over a local path (its own threads read it) or an fsspec file object."""
    import rapidgzip

    local = _local(path)
    src = local if local is not None else stack.enter_context(fsspec.open(path, "rb"))
    return stack.enter_context(rapidgzip.RapidgzipFile(src, parallelization=parallelization,
                                                       chunk_size=INDEX_SPACING))


class _ParallelInflater:
    """Decompressed blocks of a gzip, decoded by rapidgzip on ``parallelization`` threads.

    rapidgzip returns a truncated stream's prefix without complaint, so the end is
    checked here: the stream is trusted only if the gzip footer's ISIZE equals the
    decompressed length (mod 2**32), which holds for a complete single-member gzip,
    the form Wikimedia publishes. Anything else raises ``_Unverified``.
    """

    def __init__(self, path: str, parallelization: int, index: str, block: int = 4 << 20):
        self.path, self.parallelization, self.index, self.block = path, parallelization, index, block
        self.error = None

    def blocks(self) -> Iterator[bytes]:
        import contextlib

        import rapidgzip

        with contextlib.ExitStack() as stack:
            try:
                f = _open_rapidgzip(self.path, self.parallelization, stack)
                total = 0
                while True:
                    block = f.read(self.block)
                    if not block:
                        break
                    total += len(block)
                    yield block
                with fsspec.open(self.path, "rb") as raw:
                    raw.seek(-4, 2)
                    isize = int.from_bytes(raw.read(4), "little")
                if isize != total % (1 << 32):
                    raise _Unverified(f"gzip footer says {isize} bytes mod 2**32, decoded {total}")
                with fsspec.open(self.index, "wb") as out:
                    f.export_index(out, rapidgzip.IndexFormat.GZTOOL)
            except Exception as e:  # noqa: BLE001 - rapidgzip: CRC or size mismatch, bad window, ...
                raise _Unverified(str(e)) from e


def decode_threads() -> int:
    """All the cores this process may use from 4 up; one below that.

    On 2 cores one rapidgzip thread decoded a 627 MB dump in 1.1 s and two in
    1.5 s: its parallel mode pays for a second decoding pass that only more
    cores win back. (Not measured on more than 2 cores here.)
    """
    import os

    cores = len(os.sched_getaffinity(0))
    return cores if cores >= 4 else 1


def split_dump(path: str, out_dir: str, chunk_bytes: int, table: str | None = None,
               stage: str = "ingest", threads: int = 0) -> SplitResult:
    """Plan a dump's chunks: line-aligned ranges of about ``chunk_bytes`` of its SQL.

    A complete gzip (the normal case) is decoded once by rapidgzip on ``threads``
    threads (0: ``decode_threads()``), which leaves a seek index in
    ``out_dir``; each task then decodes its own range through it (``read_chunk``),
    so nothing is copied. A plain ``.sql`` is read in place. A gzip that rapidgzip
    cannot vouch for (truncated, corrupt, several members) is decoded serially with
    zlib and its chunks copied to files in ``out_dir``, so that every byte before
    the damage is kept and the damage is reported where it is.
    """
    fs = fsspec.filesystem("file") if "://" not in out_dir else fsspec.open(out_dir).fs
    fs.makedirs(out_dir, exist_ok=True)
    with fsspec.open(path, "rb") as f:
        gz = f.read(2) == GZIP_MAGIC
    if not gz:
        return _split(path, out_dir, chunk_bytes, table, stage, _Inflater(path), None, fs)
    index = f"{out_dir.rstrip('/')}/index.gzidx"
    inflater = _ParallelInflater(path, threads or decode_threads(), index)
    try:
        return _split(path, out_dir, chunk_bytes, table, stage, inflater, index, fs)
    except _Unverified as e:
        logging.getLogger(__name__).warning("%s: %s; decoding it serially and copying its chunks", path, e)
    return _split(path, out_dir, chunk_bytes, table, stage, _Inflater(path), None, fs, copy=True)


def _split(path, out_dir, chunk_bytes, table, stage, inflater, index, fs, copy=False) -> SplitResult:
    """Walk the decompressed stream once, cutting chunks at the first newline past ``chunk_bytes``.

    Never holds the file in memory: the header is kept only up to the first
    INSERT. With ``copy`` each chunk's bytes are written to its own file; a
    truncated or corrupt gzip then keeps all bytes read, and the last chunk is
    marked ``truncated``.
    """
    header = bytearray()
    schema: Schema | None = None
    chunks: list[Chunk] = []
    offset = 0  # decompressed offset of the next byte to process
    out = None
    cur: Chunk | None = None
    last_byte = b"\n"
    tail = bytearray()

    def open_chunk(at: int):
        nonlocal out, cur
        if out is not None:
            out.close()
        dest = f"{out_dir.rstrip('/')}/chunk-{len(chunks):05d}.sql" if copy else None
        cur = Chunk(schema.table, path, dest, at, 0, index=index)
        chunks.append(cur)
        out = fs.open(dest, "wb") if copy else None

    try:
        for block in inflater.blocks():
            if schema is None:
                header += block
                idx = header.find(b"\nINSERT")
                if idx < 0 and header.startswith(b"INSERT"):
                    idx = -1
                elif idx < 0:
                    if len(header) > _HEADER_CAP:
                        raise StageError(stage, path, f"no INSERT line in the first {_HEADER_CAP} bytes")
                    continue
                schema = _schema_from_header(bytes(header[: idx + 1]), path, table, stage)
                offset = idx + 1
                block = bytes(header[idx + 1 :])
                header = bytearray()
            tail += block
            if len(tail) > TAIL_BYTES:
                del tail[:-TAIL_BYTES]
            while block:
                if cur is None:
                    open_chunk(offset)
                need = chunk_bytes - cur.size
                cut = block.find(b"\n", max(need - 1, 0)) if len(block) >= need else -1
                piece = block if cut < 0 else block[: cut + 1]
                if out is not None:
                    out.write(piece)
                cur.size += len(piece)
                offset += len(piece)
                last_byte = piece[-1:]
                block = block[len(piece) :]
                if cut >= 0 and block:
                    open_chunk(offset)
                elif cut >= 0:
                    if out is not None:
                        out.close()
                    out, cur = None, None  # the next block opens a new chunk
        if schema is None:  # no INSERT at all: an empty table (or a truncated header)
            if inflater.error:
                raise StageError(stage, path, f"{inflater.error} after {len(header)} bytes, before the first "
                                              "INSERT: the header is incomplete, no row could be read")
            offset = len(header)
            schema = _schema_from_header(bytes(header), path, table, stage)
            last_byte = header[-1:] or b"\n"
    finally:
        if out is not None:
            out.close()
    chunks = [c for c in chunks if c.size > 0]
    how = "copied" if copy else "indexed" if index else "direct"
    res = SplitResult(schema, chunks, offset, inflater.error, last_byte == b"\n", how=how)
    if not inflater.error and chunks:
        res.cut_at = unterminated_statement(bytes(tail), offset)
        if res.cut_at is not None:
            res.truncated = chunks[-1].truncated = (
                f"the SQL ends inside a statement that starts at decompressed byte {res.cut_at} "
                "(the gzip stream itself is complete: a partial dump compressed again?)")
    if inflater.error:
        if chunks:
            chunks[-1].truncated = inflater.error
        if res.ends_at_line_boundary or not chunks:
            res.rejects.append(Reject(schema.table, path, offset,
                                      f"{inflater.error}; rows after this offset are lost", ""))
    return res


def read_chunk(chunk: Chunk, stage: str = "ingest") -> bytes:
    """A chunk's bytes, from its copy or from its range of the dump (executor side)."""
    import contextlib

    with contextlib.ExitStack() as stack:
        if chunk.path is not None:
            f = stack.enter_context(fsspec.open(chunk.path, "rb"))
        elif chunk.index is None:
            f = stack.enter_context(fsspec.open(chunk.file, "rb"))
            f.seek(chunk.offset)
        else:
            f = _open_rapidgzip(chunk.file, 1, stack)
            with fsspec.open(chunk.index, "rb") as idx:
                f.import_index(idx)
            f.seek(chunk.offset)
        parts, left = [], chunk.size
        while left > 0:
            part = f.read(min(left, 16 << 20))
            if not part:
                break
            parts.append(part)
            left -= len(part)
    data = b"".join(parts)
    if len(data) != chunk.size:
        raise StageError(stage, chunk.file, f"expected {chunk.size} bytes at decompressed byte {chunk.offset}, "
                                            f"read {len(data)}: the file changed after the stage split it")
    return data


def parse_chunk(chunk: Chunk, schema: Schema, wanted: Sequence[str], batch_rows: int = 200_000,
                stage: str = "ingest") -> Iterator[ParseResult]:
    """Parse one chunk (executor side)."""
    data = read_chunk(chunk, stage)
    parser = DumpParser(schema, wanted, chunk.file, stage)
    yield from parser.parse_bytes(data, chunk.offset, chunk.truncated, batch_rows)


def parse_dump(
    path: str, wanted: Sequence[str], table: str | None = None, stage: str = "ingest", keep_values: bool = True
) -> ParseResult:
    """Parse a whole (small) dump serially in this process: for tests and tools.

    Streams the file; only the wanted columns of the rows are held, and none
    with ``keep_values=False`` (counting and timing in bounded memory).
    """
    schema: Schema | None = None
    inflater = _Inflater(path)
    buf = bytearray()
    offset = 0
    result: ParseResult | None = None
    parser: DumpParser | None = None
    for block in inflater.blocks():
        buf += block
        if parser is None:
            idx = buf.find(b"\nINSERT")
            if idx < 0:
                continue
            schema = _schema_from_header(bytes(buf[: idx + 1]), path, table, stage)
            parser = DumpParser(schema, wanted, path, stage)
            result = parser._empty()
            del buf[: idx + 1]
            offset = idx + 1
        cut = buf.rfind(b"\n")
        if cut >= 0:
            for r in parser.parse_bytes(bytes(buf[:cut]), offset):
                if not keep_values:
                    r.columns = {k: [] for k in r.columns}
                result.extend(r)
            offset += cut + 1
            del buf[: cut + 1]
    if parser is None:
        schema = _schema_from_header(bytes(buf), path, table, stage)
        parser = DumpParser(schema, wanted, path, stage)
        return parser._empty()
    if buf:
        for r in parser.parse_bytes(bytes(buf), offset, inflater.error):
            result.extend(r)
    elif inflater.error:
        result.rejects.append(Reject(parser.table, path, offset, f"{inflater.error}; rows after this offset are lost", ""))
    return result
