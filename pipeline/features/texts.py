"""The words a model may read about an image, and the one tokenizer that turns them into ids.

Every English WIT image comes with texts written about it: its Commons file
name, the titles of the articles and sections that show it, and the
reference, attribution and alt captions. The image index (shard stage)
carries them per image; training, batch inference and the served model all
encode them here, so the ids a model saw in training are the ids it sees
when serving.

Commons categories are never a text field: the topic labels are computed from
them, so a model that read them would learn the labeler, not the image.

Encoding is fastText-style feature hashing, so no vocabulary is fitted or
shipped: each word and each character trigram of a word (``<wo``, ``wor``,
``ord``, ``rd>``) hashes (CRC-32) to an id in ``1 .. vocab-1``; 0 pads. Words
come before trigrams, so truncation to ``max_tokens`` drops trigrams first.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

# field name -> the image index column it is read from
FIELDS: dict[str, str] = {
    "file_name": "file_title",
    "page_titles": "page_titles",
    "section_titles": "section_titles",
    "reference_captions": "reference_captions",
    "attribution_captions": "attribution_captions",
    "alt_captions": "alt_captions",
}
# The index's list-of-texts columns (the wit stage's; ``file_title`` is in the index anyway).
TEXT_COLUMNS = tuple(c for c in FIELDS.values() if c != "file_title")
# What the labels are made from: reading any of these would leak the labels into the input.
FORBIDDEN = ("categories", "category", "categorylinks", "labels", "labels_hier")
DEFAULT_FIELDS = ",".join(FIELDS)

_WORD = re.compile(r"\w+", re.UNICODE)
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{2,5}$")


def parse_fields(spec) -> tuple[str, ...]:
    """``"file_name,page_titles"`` (or a list) -> validated field names, in the given order."""
    names = [f.strip() for f in (spec.split(",") if isinstance(spec, str) else spec) if f and f.strip()]
    for name in names:
        if name.lower() in FORBIDDEN:
            raise ValueError(f"text field {name!r} is not allowed: the topic labels are computed from the "
                             f"file's categories, so a model reading them would learn the labels, not the image")
        if name not in FIELDS:
            raise ValueError(f"unknown text field {name!r} (known: {', '.join(FIELDS)})")
    if len(set(names)) != len(names):
        raise ValueError(f"text fields repeat a name: {names}")
    if not names:
        raise ValueError("a text model needs at least one text field")
    return tuple(names)


def file_name_text(title) -> str:
    """``File:Lake Turkana_2019.jpg`` -> ``Lake Turkana 2019``."""
    if not title:
        return ""
    name = str(title)
    if name.startswith("File:"):
        name = name[5:]
    return _EXTENSION.sub("", name).replace("_", " ").strip()


def field_text(value, field: str) -> str:
    """One field's text from an index value: a string, a list of strings, an array, or missing."""
    if field == "file_name":
        return file_name_text(value)
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    try:
        items = list(value)
    except TypeError:
        return str(value).strip()
    return "\n".join(str(v).strip() for v in items if v is not None and str(v).strip())


def row_texts(row, fields) -> list[str]:
    """The texts of ``fields`` for one index row (a mapping from index column to value)."""
    return [field_text(row.get(FIELDS[f]), f) for f in fields]


def tokens(text: str) -> list[str]:
    """Lower-cased words, then the character trigrams of every word longer than two characters."""
    words = _WORD.findall(text.lower())
    grams = []
    for w in words:
        if len(w) > 2:
            padded = f"<{w}>"
            grams.extend(padded[i:i + 3] for i in range(len(padded) - 2))
    return [f"w:{w}" for w in words] + [f"g:{g}" for g in grams]


def token_ids(text: str, vocab: int, max_tokens: int) -> list[int]:
    return [zlib.crc32(t.encode("utf-8")) % (vocab - 1) + 1 for t in tokens(text)[:max_tokens]]


def encode(texts_per_row, vocab: int, max_tokens: int) -> np.ndarray:
    """int32 ids (rows, fields, max_tokens) for a list of rows, each a list of one text per field; 0 pads."""
    rows = list(texts_per_row)
    n_fields = len(rows[0]) if rows else 0
    out = np.zeros((len(rows), n_fields, max_tokens), dtype="int32")
    for i, texts in enumerate(rows):
        for j, text in enumerate(texts):
            ids = token_ids(text, vocab, max_tokens)
            out[i, j, :len(ids)] = ids
    return out


def encode_rows(rows, fields, vocab: int, max_tokens: int) -> np.ndarray:
    """Index rows (mappings by column) -> ids (rows, len(fields), max_tokens)."""
    rows = list(rows)
    if not rows:
        return np.zeros((0, len(fields), max_tokens), dtype="int32")
    return encode([row_texts(r, fields) for r in rows], vocab, max_tokens)


def has_text(ids: np.ndarray) -> np.ndarray:
    """bool (rows,): whether any field of a row has a token."""
    return (ids.reshape(len(ids), -1) > 0).any(axis=1)


def index_columns(fields) -> list[str]:
    return list(dict.fromkeys(FIELDS[f] for f in fields))


class TextEncoding:
    """Which fields, how many ids and how many tokens: everything that fixes a model's text input.

    Saved with the model (``as_dict``), so serving encodes exactly as training did.
    """

    def __init__(self, fields, vocab: int = 32768, max_tokens: int = 48):
        self.fields = parse_fields(fields)
        if vocab < 2 or max_tokens < 1:
            raise ValueError(f"text vocab must be >= 2 and max tokens >= 1 (got {vocab}, {max_tokens})")
        self.vocab, self.max_tokens = int(vocab), int(max_tokens)

    @classmethod
    def from_settings(cls, train) -> "TextEncoding":
        return cls(train.text_fields, train.text_vocab, train.text_tokens)

    @classmethod
    def from_dict(cls, d: dict) -> "TextEncoding":
        return cls(d["fields"], d["vocab"], d["max_tokens"])

    def as_dict(self) -> dict:
        return {"fields": list(self.fields), "vocab": self.vocab, "max_tokens": self.max_tokens}

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.fields), self.max_tokens

    @property
    def columns(self) -> list[str]:
        """The index columns these fields are read from."""
        return index_columns(self.fields)

    def encode_rows(self, rows) -> np.ndarray:
        return encode_rows(rows, self.fields, self.vocab, self.max_tokens)
