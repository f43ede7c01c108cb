"""A request's instances, checked before any work: each error is a 4xx that names the instance and the reason.

V1 body: ``{"instances": [instance, ...]}``. An instance is an object with

- ``image``: the image's bytes in base64 (or ``{"b64": ...}``, TensorFlow Serving's form), or
- ``title``: a Commons file title (``File:`` optional), whose thumbnail the server fetches;
- optional texts, named as the image index's columns (what the image+text model reads from WIT):
  ``file_title`` (a string; a ``title`` instance gets it from the title), ``page_titles``,
  ``section_titles``, ``reference_captions``, ``attribution_captions``, ``alt_captions``
  (lists of strings, or one string).

A text model needs neither image nor title; an image+text model predicts an
instance without an image from its words, as batch inference does.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from http import HTTPStatus

from pipeline.features.texts import TEXT_COLUMNS

TEXT_KEYS = ("file_title", *TEXT_COLUMNS)
IMAGE_KEYS = ("image", "title")
# MediaWiki forbids these in titles; "/" never occurs in a file name. Nothing in a title reaches a path
# on this machine anyway: it only becomes a URL on the thumbnail host.
_BAD_TITLE = re.compile(r"[#<>\[\]|{}/\x00-\x1f\x7f]")
_FILE_PREFIX = re.compile(r"^\s*(file|image)\s*:\s*", re.I)
MAX_TITLE_BYTES = 255  # MediaWiki's limit


class RequestError(Exception):
    """A request the server will not answer: an HTTP status (4xx, or 5xx for the server's own faults) and why."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = int(status), message, headers or {}

    def body(self) -> dict:
        return {"error": self.message, "status": self.status}


def at(index: int, status: int, reason: str, headers: dict | None = None) -> RequestError:
    return RequestError(status, f"instance {index}: {reason}", headers)


@dataclass
class Instance:
    index: int
    image: bytes | None = None
    title: str | None = None
    texts: dict = field(default_factory=dict)


def normalize_title(raw: str) -> str:
    """``file:Lake_turkana.jpg`` -> ``Lake turkana.jpg``: no namespace, spaces, first letter upper (as MediaWiki)."""
    name = _FILE_PREFIX.sub("", raw).replace("_", " ").strip()
    name = re.sub(r" +", " ", name)
    return name[:1].upper() + name[1:]


def _title(index: int, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise at(index, HTTPStatus.BAD_REQUEST, "'title' must be a non-empty string (a Commons file title)")
    name = normalize_title(value)
    if not name or _BAD_TITLE.search(name) or len(name.encode("utf-8")) > MAX_TITLE_BYTES or "." not in name:
        raise at(index, HTTPStatus.BAD_REQUEST, f"{value[:100]!r} is not a valid Commons file title")
    return name


def _image(index: int, value) -> bytes:
    if isinstance(value, dict) and set(value) == {"b64"}:
        value = value["b64"]
    if not isinstance(value, str):
        raise at(index, HTTPStatus.BAD_REQUEST, "'image' must be a base64 string (or {\"b64\": ...})")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise at(index, HTTPStatus.BAD_REQUEST, "'image' is not valid base64") from None
    if not data:
        raise at(index, HTTPStatus.BAD_REQUEST, "'image' is empty")
    return data


def _texts(index: int, obj: dict) -> dict:
    texts = {}
    for key in TEXT_KEYS:
        if key not in obj or obj[key] is None:
            continue
        value = obj[key]
        if key == "file_title":
            if not isinstance(value, str):
                raise at(index, HTTPStatus.BAD_REQUEST, "'file_title' must be a string")
        else:
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise at(index, HTTPStatus.BAD_REQUEST, f"{key!r} must be a string or a list of strings")
        texts[key] = value
    return texts


def parse(body, max_instances: int, inputs) -> list[Instance]:
    """The instances of a V1 body, for a model that reads ``inputs`` (``training.inputs.ModelInputs``)."""
    if not isinstance(body, dict) or "instances" not in body:
        raise RequestError(HTTPStatus.BAD_REQUEST, 'the body must be a JSON object {"instances": [...]}')
    items = body["instances"]
    if not isinstance(items, list):
        raise RequestError(HTTPStatus.BAD_REQUEST, '"instances" must be a list')
    if not items:
        raise RequestError(HTTPStatus.BAD_REQUEST, '"instances" is empty: nothing to predict')
    if len(items) > max_instances:
        raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                           f"{len(items)} instances in one request; at most {max_instances} (serve.max_instances)")
    out = []
    for i, obj in enumerate(items):
        if not isinstance(obj, dict):
            raise at(i, HTTPStatus.BAD_REQUEST, "must be an object with 'image' or 'title' (and optional texts)")
        unknown = sorted(set(obj) - set(IMAGE_KEYS) - set(TEXT_KEYS))
        if unknown:
            raise at(i, HTTPStatus.BAD_REQUEST,
                     f"unknown field(s) {', '.join(map(repr, unknown))}; known: {', '.join(IMAGE_KEYS + TEXT_KEYS)}")
        if "image" in obj and "title" in obj:
            raise at(i, HTTPStatus.BAD_REQUEST, "give either 'image' or 'title', not both")
        inst = Instance(i, texts=_texts(i, obj))
        if "image" in obj:
            inst.image = _image(i, obj["image"])
        elif "title" in obj:
            inst.title = _title(i, obj["title"])
            inst.texts.setdefault("file_title", inst.title)
        elif inputs.image_required:
            raise at(i, HTTPStatus.BAD_REQUEST, "this model reads images: give 'image' (base64) or 'title'")
        elif not inst.texts:
            raise at(i, HTTPStatus.BAD_REQUEST, f"nothing to read: give 'image', 'title' or texts ({', '.join(TEXT_KEYS)})")
        out.append(inst)
    return out


# What each image check of pipeline.features.imaging (its ImageError status) answers.
IMAGE_STATUS = {
    "decode_error": HTTPStatus.BAD_REQUEST,
    "unsupported_format": HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    "too_large": HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    "too_small": HTTPStatus.UNPROCESSABLE_ENTITY,
}


def sniff(data: bytes) -> str | None:
    """A clearer name than "not a recognised image" for what people send by mistake."""
    head = data[:256].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "HTML, not an image (a web page's bytes?)"
    if head.startswith(b"%pdf"):
        return "a PDF, not an image"
    return None
