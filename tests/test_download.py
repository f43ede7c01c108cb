"""The polite downloader against a real HTTP server on 127.0.0.1 that misbehaves on purpose."""

from __future__ import annotations

import email.utils
import io
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from pipeline.config import load_settings
from pipeline.inputs.download import (
    Downloader,
    check_user_agent,
    parse_retry_after,
    rewrite_mirror,
    source_url,
    standard_width,
)

UA = "wiki-image-topics-tests/0.1 (https://example.org/tests; tests@example.org)"


def jpeg_bytes(w=64, h=48, color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "JPEG")
    return buf.getvalue()


class FaultServer:
    """Serves ``files`` (path -> bytes); ``faults[path]`` is a list of actions, one per request,
    the last one repeating: ok, 429, 503date, 500, slow, reset, html, htmlbody, empty, 404, 410.

    ``max_inflight`` counts concurrent requests (``slow`` ones excluded: the client gives up on
    them and its next request overlaps a server thread that is still sleeping). A request stops
    counting just before the client could have seen its end, so that the client's next request
    never overlaps this one's bookkeeping: before the last byte of an image, before the headers
    of anything else (the client may stop reading at an error status or a non-image type).
    """

    def __init__(self, delay_s: float = 0.0, slow_s: float = 1.0):
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, list[str]] = {}
        self.hits: dict[str, int] = {}
        self.delay_s, self.slow_s = delay_s, slow_s
        self.inflight = self.max_inflight = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                outer._handle(self)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request, client_address):
                pass

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _action(self, path: str) -> str:
        with self.lock:
            n = self.hits.get(path, 0)
            self.hits[path] = n + 1
            actions = self.faults.get(path, ["ok"])
            return actions[min(n, len(actions) - 1)]

    def _done(self, h):
        if getattr(h, "counted", False):
            h.counted = False
            with self.lock:
                self.inflight -= 1

    def _send(self, h, code, body=b"", ctype="image/jpeg", headers=()):
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            h.send_header(k, v)
        if not body or code != 200 or not ctype.startswith("image/"):
            self._done(h)
        h.end_headers()
        if body:
            h.wfile.write(body[:-1])
            self._done(h)
            h.wfile.write(body[-1:])

    def _handle(self, h):
        from urllib.parse import unquote

        path = unquote(h.path)
        action = self._action(path)
        h.counted = action != "slow"
        if h.counted:
            with self.lock:
                self.inflight += 1
                self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            if action == "slow":
                time.sleep(self.slow_s)
                action = "ok"
            if action == "ok":
                if path in self.files:
                    self._send(h, 200, self.files[path])
                else:
                    self._send(h, 404, b"not found", "text/plain")
            elif action == "429":
                self._send(h, 429, b"slow down", "text/plain", [("Retry-After", "0")])
            elif action == "503date":
                self._send(h, 503, b"busy", "text/plain",
                           [("Retry-After", email.utils.formatdate(time.time(), usegmt=True))])
            elif action in ("500", "404", "410"):
                self._send(h, int(action), b"error", "text/plain")
            elif action == "html":
                self._send(h, 200, b"<!DOCTYPE html><html><body>Error</body></html>", "text/html; charset=utf-8")
            elif action == "htmlbody":
                self._send(h, 200, b"  <html><body>oops</body></html>", "image/jpeg")
            elif action == "empty":
                self._send(h, 200, b"")
            elif action == "reset":
                self._done(h)
                h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                h.connection.close()
                h.close_connection = True
            else:
                raise AssertionError(action)
        finally:
            self._done(h)


@pytest.fixture
def server():
    s = FaultServer(slow_s=4.0)
    yield s
    s.close()


def shard_settings(tmp_path, **over):
    base = {
        "shard.user_agent": UA,
        "shard.timeout_s": "5",  # generous: a loaded CI box must not turn a plain request into a timeout
        "shard.backoff_s": "0.01",
        "shard.max_backoff_s": "0.05",
        "shard.max_retries": "3",
        "shard.per_host_concurrency": "2",
        "shard.download_threads": "6",
        "shard.lock_dir": str(tmp_path / "locks"),
    }
    base.update({f"shard.{k}": str(v) for k, v in over.items()})
    return load_settings(base, environ={})


def test_user_agent_refusal(tmp_path):
    for bad in ["", "python-requests/2.32", "wiki-image-topics/0.1 (https://example.org; set USER_AGENT)"]:
        with pytest.raises(ValueError, match="User-Agent"):
            check_user_agent(bad, "https://upload.wikimedia.org/wikipedia/commons/a/ab/X.jpg")
        with pytest.raises(ValueError):
            check_user_agent(bad, "https://commons.wikipedia.org/x")
        check_user_agent(bad, "http://127.0.0.1:8000/wikipedia/commons/a/ab/X.jpg")  # not Wikimedia: fine
    check_user_agent("bot/1.0 (me@example.org)", "https://upload.wikimedia.org/x")
    check_user_agent(UA, "https://upload.wikimedia.org/x")
    # the shipped default carries the placeholder: Downloader.fetch refuses Wikimedia with it
    s = load_settings({"shard.lock_dir": str(tmp_path)}, environ={})
    with Downloader(s.shard) as dl, pytest.raises(ValueError):
        dl.fetch("https://upload.wikimedia.org/wikipedia/commons/a/a9/Example.jpg")


def test_urls_and_mirror(tmp_path):
    s = shard_settings(tmp_path)
    url = source_url("Foo bar.jpg", s.shard, "image/jpeg", 4000)
    assert url.startswith("https://upload.wikimedia.org/wikipedia/commons/thumb/")
    assert url.endswith("/Foo_bar.jpg/120px-Foo_bar.jpg")
    assert source_url("Map.svg", s.shard, "image/svg+xml", 50).endswith("/Map.svg/120px-Map.svg.png")
    # a non-standard width is snapped up to Wikimedia's next standard thumbnail step
    s.shard.thumb_width = 128
    assert source_url("Foo bar.jpg", s.shard, "image/jpeg", 4000).endswith("/250px-Foo_bar.jpg")
    assert standard_width(3841, s.shard.thumbnail_steps) == 3840 and standard_width(60, [120, 60]) == 60
    s.shard.thumb_width = 120
    # a raster narrower than the thumbnail: the original (Wikimedia does not upscale)
    assert "/thumb/" not in source_url("Tiny.png", s.shard, "image/png", 100)
    s.shard.originals = True
    assert "/thumb/" not in source_url("Foo bar.jpg", s.shard, "image/jpeg", 4000)
    s.shard.mirror_url = "http://127.0.0.1:9/"
    assert source_url("Foo bar.jpg", s.shard).startswith("http://127.0.0.1:9/wikipedia/commons/")
    assert rewrite_mirror("https://example.org/x", "http://m") == "https://example.org/x"


def test_retry_after_parsing():
    now = time.time()
    assert parse_retry_after("120") == 120
    assert 58 <= parse_retry_after(email.utils.formatdate(now + 60, usegmt=True), now) <= 60
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now) == 0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_faults_end_ok_or_recorded(server, tmp_path):
    s = shard_settings(tmp_path, timeout_s=1.5)  # "slow" sleeps 4 s
    body = jpeg_bytes()
    cases = {
        "/rate.jpg": (["429", "429", "ok"], "ok", 3),
        "/busy.jpg": (["503date", "ok"], "ok", 2),
        "/flaky.jpg": (["500", "500", "ok"], "ok", 3),
        "/always500.jpg": (["500"], "http_500", 4),
        "/slow.jpg": (["slow", "ok"], "ok", 2),
        "/slowalways.jpg": (["slow"], "timeout", 4),
        "/reset.jpg": (["reset", "ok"], "ok", 2),
        "/resetalways.jpg": (["reset"], "connection_error", 4),
        "/html.jpg": (["html"], "not_image", 1),
        "/htmlbody.jpg": (["htmlbody"], "not_image", 1),
        "/empty.jpg": (["empty"], "empty", 1),
        "/gone.jpg": (["410"], "http_410", 1),
        "/missing.jpg": (["ok"], "http_404", 1),
    }
    for path, (faults, _, _) in cases.items():
        server.faults[path] = faults
        if path != "/missing.jpg":
            server.files[path] = body
    with Downloader(s.shard) as dl, ThreadPoolExecutor(6) as pool:
        results = dict(zip(cases, pool.map(lambda p: dl.fetch(server.url + p), cases)))
    for path, (_, status, attempts) in cases.items():
        r = results[path]
        assert (r.status, r.attempts) == (status, attempts), (path, r)
        assert server.hits[path] == attempts
        if status == "ok":
            assert r.data == body and r.bytes == len(body)
        else:
            assert r.data is None and r.error


def test_retry_after_is_honoured_and_capped(server, tmp_path):
    s = shard_settings(tmp_path, max_retry_after_s=30)
    server.files["/a.jpg"] = server.files["/b.jpg"] = jpeg_bytes()
    server.faults["/a.jpg"] = ["429", "ok"]
    sleeps = []
    with Downloader(s.shard, sleep=sleeps.append) as dl:
        assert dl.fetch(server.url + "/a.jpg").ok
    assert sleeps == [0.0]  # Retry-After: 0 wins over the backoff

    class Long(FaultServer):
        def _send(self, h, code, body=b"", ctype="image/jpeg", headers=()):
            if code == 429:
                headers = [("Retry-After", "3600")]
            super()._send(h, code, body, ctype, headers)

    long = Long()
    try:
        long.faults["/b.jpg"] = ["429"]
        with Downloader(s.shard, sleep=sleeps.append) as dl:
            r = dl.fetch(long.url + "/b.jpg")
        assert r.status == "http_429" and r.attempts == 1 and "3600" in r.error
    finally:
        long.close()


def test_per_host_cap_across_downloaders(tmp_path):
    """Two Downloaders (as two Spark worker processes would) share the host cap."""
    server = FaultServer(delay_s=0.03)
    try:
        for i in range(40):
            server.files[f"/img{i}.jpg"] = jpeg_bytes()
        s = shard_settings(tmp_path)
        with Downloader(s.shard) as a, Downloader(s.shard) as b, ThreadPoolExecutor(10) as pool:
            results = list(pool.map(lambda i: (a if i % 2 else b).fetch(f"{server.url}/img{i}.jpg"), range(40)))
        assert all(r.ok for r in results)
        assert server.max_inflight == 2
    finally:
        server.close()


def test_bandwidth_cap(server, tmp_path):
    s = shard_settings(tmp_path, bandwidth_bytes_per_s=200_000)
    blob = b"\xff\xd8" + bytes(100_000)
    for i in range(5):
        server.files[f"/big{i}.jpg"] = blob
    t = time.monotonic()
    with Downloader(s.shard) as dl:
        assert all(dl.fetch(f"{server.url}/big{i}.jpg").ok for i in range(5))
    # 500 kB at 200 kB/s with a 200 kB burst: at least 1.5 s
    assert time.monotonic() - t >= 1.3


def test_too_large(server, tmp_path):
    s = shard_settings(tmp_path, max_bytes=1000)
    server.files["/huge.jpg"] = bytes(5000)
    with Downloader(s.shard) as dl:
        r = dl.fetch(server.url + "/huge.jpg")
    assert r.status == "too_large" and r.attempts == 1
