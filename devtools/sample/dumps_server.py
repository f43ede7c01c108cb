"""A local stand-in for dumps.wikimedia.org and WIT's bucket, serving the sample.

``publish`` lays the sample's files out as the publishers do:

- ``<root>/<wiki>/`` a directory listing of run dates (and ``latest/``, which
  clients must not use);
- ``<root>/<wiki>/YYYYMMDD/`` the run's ``<wiki>-YYYYMMDD-<table>.sql.gz``,
  ``dumpstatus.json`` (jobs pagetable, categorylinkstable, ... with size, md5,
  sha1 and url per file) and ``<wiki>-YYYYMMDD-{sha1,md5}sums.txt``;
- optionally a newer run still ``in-progress`` (only some jobs done) and one
  with a ``failed`` job;
- ``<root>/gresearch/wit/`` the WIT TSVs.

``DumpsServer`` serves such a root over HTTP/1.1 with directory listings,
``Range`` requests (206/416), and faults on demand for the tests: a connection
dropped after N bytes, corrupted bodies, 429/503 with ``Retry-After``. It
counts open connections and concurrent requests and records every request's
User-Agent, so tests can assert on politeness.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import os
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pipeline.inputs.fetch import JOBS  # noqa: E402  (table -> dumpstatus.json job, as Wikimedia names them)

WIT_PATH = "gresearch/wit"


def _digests(path: Path) -> tuple[str, str]:
    sha1, md5 = hashlib.sha1(), hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha1.update(chunk)
            md5.update(chunk)
    return sha1.hexdigest(), md5.hexdigest()


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _updated(date: str) -> str:
    return f"{date[:4]}-{date[4:6]}-{date[6:]} 08:00:00"


def publish_run(root: str | Path, wiki: str, date: str, files: dict[str, Path],
                statuses: dict[str, str] | None = None, source_date: str | None = None) -> Path:
    """Write run ``date`` of ``wiki`` under ``root``: files, dumpstatus.json, sums files.

    ``files`` maps table -> a local dump file (named for ``source_date`` or
    ``date``; published under ``date``'s name). ``statuses`` maps table -> job
    status (default ``done``); only ``done`` jobs list and publish their files.
    """
    run_dir = Path(root) / wiki / date
    run_dir.mkdir(parents=True, exist_ok=True)
    jobs, sha1s, md5s = {}, [], []
    for table, job in JOBS.items():
        status = (statuses or {}).get(table, "done" if table in files else None)
        if status is None:
            continue
        entry: dict = {"status": status, "updated": _updated(date), "files": {}}
        if status == "done":
            name = f"{wiki}-{date}-{table}.sql.gz"
            _place(files[table], run_dir / name)
            sha1, md5 = _digests(run_dir / name)
            entry["files"][name] = {"size": (run_dir / name).stat().st_size,
                                    "url": f"/{wiki}/{date}/{name}", "md5": md5, "sha1": sha1}
            sha1s.append(f"{sha1}  {name}")
            md5s.append(f"{md5}  {name}")
        jobs[job] = entry
    (run_dir / "dumpstatus.json").write_text(json.dumps({"version": "0.8", "jobs": jobs}, indent=1))
    (run_dir / f"{wiki}-{date}-sha1sums.txt").write_text("".join(s + "\n" for s in sha1s))
    (run_dir / f"{wiki}-{date}-md5sums.txt").write_text("".join(s + "\n" for s in md5s))
    return run_dir


def publish(dumps_dir: str | Path | list, wit_dir: str | Path, root: str | Path, wiki: str = "commonswiki",
            in_progress_date: str | None = None, failed_date: str | None = None) -> dict:
    """Publish every dump date found in ``dumps_dir`` (one folder or several) and the WIT TSVs of ``wit_dir``.

    ``in_progress_date`` adds a newer run whose page job is done and the rest
    still running; ``failed_date`` one whose categorylinks job failed. A
    ``latest/`` directory points at the in-progress run, as Wikimedia's does
    while a run is under way.
    """
    root = Path(root)
    by_date: dict[str, dict[str, Path]] = {}
    folders = [dumps_dir] if isinstance(dumps_dir, (str, Path)) else list(dumps_dir)
    for p in sorted(f for d in folders for f in Path(d).glob(f"{wiki}-*-*.sql.gz")):
        date, table = p.name[len(wiki) + 1:].split("-", 1)
        by_date.setdefault(date, {})[table.removesuffix(".sql.gz")] = p
    dates = sorted(by_date)
    for date, files in by_date.items():
        publish_run(root, wiki, date, files)
    newest = by_date[dates[-1]] if dates else {}
    if failed_date:
        publish_run(root, wiki, failed_date, newest, {t: ("failed" if t == "categorylinks" else "done")
                                                    for t in newest})
    if in_progress_date:
        publish_run(root, wiki, in_progress_date, newest,
                    {t: ("done" if t == "page" else "in-progress" if t == "categorylinks" else "waiting")
                     for t in newest})
        latest = root / wiki / "latest"
        latest.mkdir(parents=True, exist_ok=True)
        if "page" in newest:
            _place(newest["page"], latest / f"{wiki}-latest-page.sql.gz")
    wit_out = root / WIT_PATH
    wit_out.mkdir(parents=True, exist_ok=True)
    wit = []
    for p in sorted(Path(wit_dir).glob("wit_v1.*.tsv.gz")):
        _place(p, wit_out / p.name)
        wit.append(p.name)
    return {"root": str(root), "dates": dates, "in_progress_date": in_progress_date,
            "failed_date": failed_date, "wit_files": wit}


class Faults:
    """Misbehaviour on demand, keyed by file name (the last path segment); each is used up once per count."""

    def __init__(self):
        self.lock = threading.Lock()
        self.drop_after: dict[str, list[int]] = {}  # name -> [bytes to send before closing], one per request
        self.corrupt: dict[str, int] = {}  # name -> how many responses get one byte flipped
        self.status: dict[str, list[tuple[int, str]]] = {}  # name -> [(429|503, Retry-After)], one per request
        self.ignore_range = False

    def take(self, table: dict, name: str):
        with self.lock:
            queue = table.get(name)
            if isinstance(queue, list) and queue:
                return queue.pop(0)
            if isinstance(queue, int) and queue > 0:
                table[name] = queue - 1
                return True
        return None


def _peer_closed(sock: socket.socket) -> bool:
    """True when the client has closed ``sock`` (EOF or reset waiting in the kernel); never blocks."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False  # open and idle
    except OSError:
        return True


class DumpsServer:
    """Serve a published root in a background thread; ``url`` is its base."""

    def __init__(self, root: str | Path, host: str = "127.0.0.1", port: int = 0, latency_s: float = 0.0):
        self.root = os.path.realpath(root)
        self.faults = Faults()
        self.latency_s = latency_s
        self.lock = threading.Lock()
        self.connections = self.max_connections = 0
        self._sockets: set[socket.socket] = set()
        self.inflight = self.max_inflight = 0
        self.requests: list[dict] = []
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://{self.httpd.server_address[0]}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="dumps-server", daemon=True)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self) -> "DumpsServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    def file_requests(self, suffix: str = ".gz") -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"].endswith(suffix) and r["method"] == "GET"]

    def _open(self, sock: socket.socket) -> None:
        """Count a new connection, after dropping those whose client has already closed them.

        A handler thread sees its client's FIN only when it next reads; the kernel has it
        already, so a peek tells a closed connection from an idle one and the count is exact.
        """
        with self.lock:
            self._sockets = {s for s in self._sockets if not _peer_closed(s)} | {sock}
            self.connections = len(self._sockets)
            self.max_connections = max(self.max_connections, self.connections)

    def _close(self, sock: socket.socket) -> None:
        with self.lock:
            self._sockets.discard(sock)
            self.connections = len(self._sockets)

    def _count(self, attr: str, delta: int) -> None:
        with self.lock:
            value = getattr(self, attr) + delta
            setattr(self, attr, value)
            peak = "max_" + attr
            setattr(self, peak, max(getattr(self, peak), value))

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "wiki-image-topics-dumps/1.0"
            # Headers and body go out as two writes: without TCP_NODELAY, Nagle's algorithm and the
            # client's delayed ACK add ~40 ms to every keep-alive response (real servers avoid this).
            disable_nagle_algorithm = True
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def setup(self):
                super().setup()
                server._open(self.connection)

            def finish(self):
                try:
                    super().finish()
                finally:
                    server._close(self.connection)

            def do_GET(self):
                self._serve(head=False)

            def do_HEAD(self):
                self._serve(head=True)

            def _serve(self, head: bool) -> None:
                # A request stops counting as in flight just before its last byte goes out: the
                # client cannot see the response end earlier, so its next request never overlaps
                # this thread's bookkeeping and ``max_inflight`` is exact.
                self.counted, self.body_len = True, None
                server._count("inflight", 1)
                try:
                    self._respond(head)
                finally:
                    self._done()

            def _done(self) -> None:
                if self.counted:
                    self.counted = False
                    server._count("inflight", -1)

            def send_header(self, keyword, value):
                if keyword.lower() == "content-length":
                    self.body_len = int(value)
                super().send_header(keyword, value)

            def end_headers(self):
                if self.command == "HEAD" or not self.body_len:
                    self._done()
                super().end_headers()

            def _write_body(self, data: bytes) -> None:
                self.wfile.write(data[:-1])
                self._done()
                self.wfile.write(data[-1:])

            def _respond(self, head: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                rng = self.headers.get("Range")
                record = {"method": self.command, "path": path, "range": rng,
                          "user_agent": self.headers.get("User-Agent")}
                with server.lock:
                    server.requests.append(record)
                if server.latency_s:
                    time.sleep(server.latency_s)
                local = os.path.realpath(os.path.join(server.root, path.lstrip("/")))
                if local != server.root and not local.startswith(server.root + os.sep):
                    return self._simple(404, record)
                name = path.rstrip("/").rsplit("/", 1)[-1]
                fault = server.faults.take(server.faults.status, name)
                if fault:
                    code, retry_after = fault
                    record["status"] = code
                    self.send_response(code)
                    self.send_header("Retry-After", retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if os.path.isdir(local):
                    if not path.endswith("/"):
                        record["status"] = 301
                        self.send_response(301)
                        self.send_header("Location", path + "/")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    return self._listing(local, path, record, head)
                if not os.path.isfile(local):
                    return self._simple(404, record)
                with open(local, "rb") as f:
                    body = f.read()
                if server.faults.take(server.faults.corrupt, name):
                    body = body[:len(body) // 2] + bytes([body[len(body) // 2] ^ 0xFF]) + body[len(body) // 2 + 1:]
                size, start, code = len(body), 0, 200
                if rng and not server.faults.ignore_range and rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[6:-1])
                    if start >= size:
                        record["status"] = 416
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    code = 206
                record["status"] = code
                self.send_response(code)
                self.send_header("Content-Type", "application/octet-stream" if path.endswith(".gz")
                                 else "application/json" if path.endswith(".json") else "text/plain")
                self.send_header("Content-Length", str(size - start))
                self.send_header("Accept-Ranges", "bytes")
                if code == 206:
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                self.end_headers()
                if head:
                    return
                drop = server.faults.take(server.faults.drop_after, name)
                payload = body[start:]
                if drop is not None:
                    self.wfile.write(payload[:drop])
                    self.wfile.flush()
                    record["dropped_after"] = drop
                    self.close_connection = True
                    return
                self._write_body(payload)

            def _listing(self, local: str, path: str, record: dict, head: bool) -> None:
                names = sorted(os.listdir(local))
                rows = "".join(
                    f'<a href="{html.escape(n)}{"/" if os.path.isdir(os.path.join(local, n)) else ""}">'
                    f'{html.escape(n)}{"/" if os.path.isdir(os.path.join(local, n)) else ""}</a>\n'
                    for n in names)
                body = (f"<html><head><title>Index of {html.escape(path)}</title></head><body>"
                        f'<h1>Index of {html.escape(path)}</h1><pre><a href="../">../</a>\n{rows}</pre>'
                        "</body></html>\n").encode()
                record["status"] = 200
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self._write_body(body)

            def _simple(self, code: int, record: dict) -> None:
                record["status"] = code
                body = f"<html><body><h1>{code}</h1></body></html>\n".encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self._write_body(body)

        return Handler


def main(argv=None) -> int:
    """Serve a published root until interrupted; prints DUMPS_URL and WIT_URL to use."""
    p = argparse.ArgumentParser(prog="devtools.sample.dumps_server")
    p.add_argument("--root", required=True, help="a root written by publish()")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8082)
    args = p.parse_args(argv)
    with DumpsServer(args.root, args.host, args.port) as server:
        print(f"serving {args.root}: DUMPS_URL={server.url} WIT_URL={server.url}/{WIT_PATH}/", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0
