"""WIT (Wikipedia-based Image Text) TSV files and upload.wikimedia.org URLs.

The sample's WIT files have the real 17 columns in the real order, a header
line, gzip, and the real quirks: no quoting, tabs and newlines inside texts
replaced by spaces, empty strings for missing captions, "true"/"false" flags.
"""

from __future__ import annotations

import gzip
import os

from pipeline.inputs.wit import COMMONS_PREFIX, UPLOAD_BASE, WIT_COLUMNS, encode_name, underscored
from pipeline.inputs.wit import hash_path as _hash_dirs

COLUMNS = WIT_COLUMNS
db_key = underscored  # MediaWiki's DB key: 'Kasteel van Gaasbeek.jpg' -> 'Kasteel_van_Gaasbeek.jpg'


def hash_path(title: str) -> str:
    """'<a>/<ab>/<Name>' where a, ab are the first hex digits of md5(DB key), as MediaWiki stores uploads."""
    return _hash_dirs(title) + db_key(title)


def image_url(title: str, wiki: str = "commons") -> str:
    prefix = COMMONS_PREFIX if wiki == "commons" else f"/wikipedia/{wiki}/"
    return f"{UPLOAD_BASE}{prefix}{_hash_dirs(title)}{encode_name(db_key(title))}"


def page_url(title: str, language: str) -> str:
    return f"https://{language}.wikipedia.org/wiki/{encode_name(db_key(title))}"


def clean(text: str) -> str:
    """WIT fields never hold raw tabs or newlines: they became spaces."""
    return str(text).replace("\t", " ").replace("\r", " ").replace("\n", " ").strip()


WIT_PARTS = 10


class WitWriter:
    """The first ``n_files`` of WIT's ten ``wit_v1.train.all-0000N-of-00010.tsv.gz`` files, each with the header."""

    def __init__(self, out_dir: str, n_files: int):
        if not 1 <= n_files <= WIT_PARTS:
            raise ValueError(f"WIT's training set has {WIT_PARTS} files, not {n_files}")
        os.makedirs(out_dir, exist_ok=True)
        self.paths = [
            os.path.join(out_dir, f"wit_v1.train.all-{i:05d}-of-{WIT_PARTS:05d}.tsv.gz") for i in range(n_files)
        ]
        self._raw = [open(p + ".__writing", "wb") for p in self.paths]
        self._gz = [gzip.GzipFile(filename="", fileobj=r, mode="wb", mtime=0) for r in self._raw]
        for gz in self._gz:
            gz.write(("\t".join(COLUMNS) + "\n").encode())
        self.rows = 0

    def write(self, shard: int, row: dict) -> None:
        values = []
        for col in COLUMNS:
            v = row.get(col, "")
            if isinstance(v, bool):
                v = "true" if v else "false"
            values.append(clean(v) if isinstance(v, str) else str(v))
        self._gz[shard % len(self._gz)].write(("\t".join(values) + "\n").encode("utf-8"))
        self.rows += 1

    def close(self) -> list[str]:
        for gz, raw, path in zip(self._gz, self._raw, self.paths):
            gz.close()
            raw.close()
            os.replace(path + ".__writing", path)
        return self.paths
