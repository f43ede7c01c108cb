"""The bad inputs every server must refuse with a clear 4xx: bytes people send by mistake, and attacks."""

from __future__ import annotations

import base64
import io
import struct
import zlib

from PIL import Image


def png_bomb(side: int = 30000) -> bytes:
    """A valid PNG of a few hundred bytes whose header declares side x side RGB pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * side) * 4, 9)  # four rows of zeros; the rest is missing
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def jpeg(size=(64, 48), color=(200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
HTML = b"<!DOCTYPE html><html><head><title>Not found</title></head><body>404</body></html>"


def cases(max_instances: int) -> list[tuple[str, dict, int, str]]:
    """(what, body, status, a phrase the error must contain). Each body's bad part is instance 1 (of 2)
    where there is an instance, so the error must name it."""
    good = {"image": b64(jpeg())}

    def second(bad: dict) -> dict:
        return {"instances": [good, bad]}

    truncated = jpeg((256, 256))
    return [
        ("not base64", second({"image": "this is not base64!"}), 400, "instance 1: 'image' is not valid base64"),
        ("not an image", second({"image": b64(bytes(range(256)) * 8)}), 400, "instance 1: not a recognised image"),
        ("truncated JPEG", second({"image": b64(truncated[: len(truncated) // 2])}), 400, "instance 1:"),
        ("decompression bomb", second({"image": b64(png_bomb())}), 413, "instance 1:"),
        ("SVG bytes", second({"image": b64(SVG)}), 415, "instance 1: SVG"),
        ("HTML bytes", second({"image": b64(HTML)}), 415, "instance 1: HTML"),
        ("empty image", second({"image": ""}), 400, "instance 1: 'image' is empty"),
        ("no instances", {"instances": []}, 400, "empty"),
        ("too many instances", {"instances": [good] * (max_instances + 1)}, 413, "at most"),
        ("not a list", {"instances": {"image": good["image"]}}, 400, "to be a list"),
        ("not an object", {"images": [good]}, 400, '{"instances"'),
        ("unknown field", second({"image": good["image"], "categories": ["Cats"]}), 400, "instance 1: unknown field"),
        ("image and title", second({"image": good["image"], "title": "File:A.jpg"}), 400, "instance 1: give either"),
        ("a path as title", second({"title": "../../etc/passwd"}), 400, "instance 1:"),
    ]
