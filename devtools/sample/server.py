"""A local stand-in for upload.wikimedia.org, serving the sample's images.

Paths mirror the real host, so the downloader only swaps the host
(``shard.mirror_url``):

- ``/wikipedia/commons/<a>/<ab>/<Name>``: the original file;
- ``/wikipedia/commons/thumb/<a>/<ab>/<Name>/<W>px-<Name>`` (``<W>px-<Name>.png``
  for SVG sources): a thumbnail <W> pixels wide, made with Pillow and cached.

Like the real thumbnailer, a request at or above the original width gets the
original bytes. A source Pillow cannot decode (the sample's truncated, empty or
HTML-as-JPEG files) is passed through unchanged, so the client's decode-error
handling is what catches it. With ``render=True`` (benchmarks at Commons scale,
where writing every image to disk is what would limit them) a file that is not
on disk is drawn on the fly from a hash of its name, in its extension's format.
Bad thumbnail names, anything outside the root and (without ``render``) unknown
files give 404.
"""

from __future__ import annotations

import argparse
import io
import os
import threading
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from PIL import Image

from devtools.sample.images import rasterize_svg

CONTENT_TYPES = {
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".jpe": "image/jpeg", ".png": "image/png",
    ".gif": "image/gif", ".webp": "image/webp", ".svg": "image/svg+xml", ".tif": "image/tiff",
    ".tiff": "image/tiff",
}
MAX_WIDTH = 4096


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(os.path.splitext(name)[1].lower(), "application/octet-stream")


class ThumbCache:
    """A thread-safe LRU of rendered thumbnails, bounded in bytes."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024):
        self.max_bytes, self.size = max_bytes, 0
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key):
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, key, item) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = item
            self.size += len(item[0])
            while self.size > self.max_bytes and self._items:
                _, (data, _) = self._items.popitem(last=False)
                self.size -= len(data)


def make_thumbnail(path: str, width: int) -> tuple[bytes, str]:
    """(bytes, content type) of the thumbnail of ``path`` at ``width`` pixels."""
    with open(path, "rb") as f:
        data = f.read()
    is_svg = path.lower().endswith(".svg")
    try:
        if is_svg:
            img = rasterize_svg(data, width)
            out_fmt, ctype = "PNG", "image/png"
        else:
            img = Image.open(io.BytesIO(data))
            img.load()
            if width >= img.width:
                return data, content_type(path)
            fmt = (img.format or "JPEG").upper()
            out_fmt = fmt if fmt in ("JPEG", "PNG", "GIF", "WEBP") else "JPEG"
            ctype = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}[out_fmt]
            height = max(1, round(img.height * width / img.width))
            if out_fmt == "JPEG" and img.mode not in ("RGB", "L"):
                img = img.convert("RGB")
            elif out_fmt != "JPEG" and img.mode == "P":
                img = img.convert("RGBA")
            img = img.resize((width, height), Image.LANCZOS)
    except Exception:  # undecodable source: pass it through, the client finds out
        return data, content_type(path)
    buf = io.BytesIO()
    if out_fmt == "JPEG":
        img.save(buf, "JPEG", quality=85)
    elif out_fmt == "GIF":
        img.convert("RGB").quantize(128, method=Image.Quantize.FASTOCTREE).save(buf, "GIF")
    else:
        img.save(buf, out_fmt)
    return buf.getvalue(), ctype


RENDERED_FORMATS = {".png": "png", ".svg": "png", ".gif": "gif", ".webp": "webp"}  # else JPEG


def render_image(name: str, width: int | None) -> tuple[bytes, str]:
    """(bytes, content type) of an image drawn from a hash of ``name``: the same bytes on every call."""
    import zlib

    import numpy as np

    from devtools.sample import images

    seed = zlib.crc32(name.encode("utf-8"))
    rng = np.random.default_rng(seed)
    width = width or int(rng.integers(800, 1600))
    height = max(1, round(width * rng.uniform(0.6, 1.35)))
    fmt = RENDERED_FORMATS.get(os.path.splitext(name)[1].lower(), "jpeg")
    data = images.encode(images.render([seed % 31], width, height, rng), fmt)
    return data, content_type("image." + ("jpg" if fmt == "jpeg" else fmt))


class RequestCount:
    """Image requests the server answered (GET and HEAD), for tests that assert on downloads."""

    def __init__(self):
        self.lock, self.value = threading.Lock(), 0

    def add(self) -> None:
        with self.lock:
            self.value += 1


def _handler(root: str, cache: ThumbCache, count: RequestCount, render: bool = False):
    root = os.path.realpath(root)

    class Handler(BaseHTTPRequestHandler):
        server_version = "wiki-image-topics-mirror/1.0"
        # Headers and body go out as two writes: without TCP_NODELAY, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every keep-alive response (real servers avoid this).
        disable_nagle_algorithm = True
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet: tests and demos run many requests
            pass

        def _local(self, parts: list[str]) -> str | None:
            path = os.path.realpath(os.path.join(root, *parts))
            if not path.startswith(root + os.sep) or not os.path.isfile(path):
                return None
            return path

        def _resolve(self):
            """(status, body, content type) for the request path."""
            path = urlsplit(self.path).path
            parts = [unquote(p) for p in path.split("/") if p]
            if any(p in (".", "..") or "\0" in p for p in parts):
                return 404, None, None
            if len(parts) < 2 or parts[0] != "wikipedia":
                return 404, None, None
            if len(parts) == 7 and parts[2] == "thumb":
                wiki, a, ab, name, thumb = parts[1], parts[3], parts[4], parts[5], parts[6]
                px, sep, rest = thumb.partition("px-")
                expected = name + ".png" if name.lower().endswith(".svg") else name
                if not sep or not px.isdigit() or rest != expected or not 0 < int(px) <= MAX_WIDTH:
                    return 404, None, None
                local = self._local(["wikipedia", wiki, a, ab, name])
                if local is None and render:
                    return (200, *render_image(name, int(px)))
                if local is None:
                    return 404, None, None
                key = (local, int(px))
                item = cache.get(key)
                if item is None:
                    item = make_thumbnail(local, int(px))
                    cache.put(key, item)
                return 200, item[0], item[1]
            if len(parts) == 5:
                local = self._local(parts)
                if local is None and render:
                    return (200, *render_image(parts[4], None))
                if local is None:
                    return 404, None, None
                with open(local, "rb") as f:
                    return 200, f.read(), content_type(local)
            return 404, None, None

        def _send(self, head_only: bool) -> None:
            count.add()
            status, body, ctype = self._resolve()
            if status != 200:
                body, ctype = b"<html><body><h1>404 Not Found</h1></body></html>\n", "text/html; charset=utf-8"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "public, max-age=86400")
            self.end_headers()
            if not head_only:
                self.wfile.write(body)

        def do_GET(self):
            self._send(False)

        def do_HEAD(self):
            self._send(True)

    return Handler


def serve(images_root: str, host: str = "127.0.0.1", port: int = 0, count: RequestCount | None = None,
          render: bool = False):
    """Serve ``images_root`` in a background thread; return (base_url, stop_fn); ``count`` counts requests;
    ``render``: draw files that are not on disk (``render_image``)."""
    if not os.path.isdir(images_root):
        raise FileNotFoundError(f"images root {images_root!r} is not a directory (run `python -m devtools sample`)")
    httpd = ThreadingHTTPServer((host, port), _handler(images_root, ThumbCache(), count or RequestCount(), render))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="sample-image-server", daemon=True)
    thread.start()
    base_url = f"http://{httpd.server_address[0]}:{httpd.server_address[1]}"

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)

    return base_url, stop


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--root", default="data/sample/images", help="the sample's images/ directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--render", action="store_true", help="draw images that are not on disk from their names")
    return parser


def main(argv=None) -> int:
    """Serve until interrupted; prints the base URL to use as WIKI_MIRROR_URL."""
    args = add_arguments(argparse.ArgumentParser(prog="devtools.sample.server")).parse_args(argv)
    base_url, stop = serve(args.root, args.host, args.port, render=args.render)
    print(f"serving {args.root} at {base_url} (set WIKI_MIRROR_URL={base_url})", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
