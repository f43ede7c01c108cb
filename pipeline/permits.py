"""Per-host request permits shared by every task of a Spark cluster, over HTTP.

Lock files (``download.HostSlots``) hold the per-host cap across the
processes of one machine. On a cluster, every machine would get its own
cap. So the shard stage's driver serves the permits instead. Every download
attempt takes one from it and gives it back, which makes
``per_host_concurrency`` hold for the whole cluster. A permit is a lease: a
task that dies holding one loses it after ``lease_s``, so a killed executor
cannot stall the others.

The server is a plain ``ThreadingHTTPServer``: ``GET /acquire?host=H&wait=S``
answers 200 with a token when a permit is free within S seconds, else 204,
and ``POST /release?token=T`` gives it back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import requests

log = logging.getLogger(__name__)

POLL_S = 10.0  # how long one acquire request waits on the server before it answers 204


class PermitServer:
    """At most ``cap`` permits per host, for all clients together."""

    def __init__(self, cap: int, lease_s: float = 600.0, bind: str = "127.0.0.1", port: int = 0):
        self.cap = max(1, int(cap))
        self.lease_s = float(lease_s)
        self._held: dict[str, dict[str, float]] = {}  # host -> token -> lease expiry
        self._hosts: dict[str, str] = {}  # token -> host
        self._cond = threading.Condition()
        self.granted = self.expired = 0
        self.peak: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: one connection per client thread

            def log_message(self, *args):
                pass

            def _reply(self, code: int, body: dict | None = None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlsplit(self.path)
                q = parse_qs(url.query)
                if url.path != "/acquire" or "host" not in q:
                    return self._reply(404, {"error": "GET /acquire?host=H[&wait=S]"})
                wait = min(float(q.get("wait", [POLL_S])[0]), 60.0)
                token = server.acquire(q["host"][0], wait)
                return self._reply(200, {"token": token}) if token else self._reply(204)

            def do_POST(self):
                url = urlsplit(self.path)
                q = parse_qs(url.query)
                if url.path != "/release" or "token" not in q:
                    return self._reply(404, {"error": "POST /release?token=T"})
                server.release(q["token"][0])
                return self._reply(200, {})

        self._httpd = ThreadingHTTPServer((bind, port), Handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="permit-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()

    def _expire(self, host: str, now: float) -> None:
        held = self._held.setdefault(host, {})
        for token in [t for t, until in held.items() if until <= now]:
            del held[token]
            self._hosts.pop(token, None)
            self.expired += 1
            log.warning("permit for %s expired after %.0fs (its task died or hung); reclaimed", host, self.lease_s)

    def acquire(self, host: str, wait: float) -> str | None:
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                now = time.monotonic()
                self._expire(host, now)
                held = self._held[host]
                if len(held) < self.cap:
                    token = uuid.uuid4().hex
                    held[token] = now + self.lease_s
                    self._hosts[token] = host
                    self.granted += 1
                    self.peak[host] = max(self.peak.get(host, 0), len(held))
                    return token
                if now >= deadline:
                    return None
                next_expiry = min(held.values())
                self._cond.wait(max(0.001, min(deadline, next_expiry) - now))

    def release(self, token: str) -> None:
        with self._cond:
            host = self._hosts.pop(token, None)
            if host is not None:
                self._held.get(host, {}).pop(token, None)
                self._cond.notify_all()


class RemoteSlots:
    """The ``HostSlots`` interface over a PermitServer: ``acquire(host)`` blocks, ``release(host, token)``."""

    def __init__(self, url: str, timeout_s: float = 30.0, attempts: int = 5):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.attempts = attempts
        self._local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def _call(self, method: str, path: str, params: dict, timeout: float) -> requests.Response:
        """One request, retried on connection trouble; a permit server that stays away is an error."""
        for attempt in range(self.attempts):
            try:
                return self._session().request(method, self.url + path, params=params, timeout=timeout)
            except requests.exceptions.RequestException as e:
                if attempt == self.attempts - 1:
                    raise RuntimeError(f"permit server {self.url} unreachable: {e}") from e
                time.sleep(min(5.0, 0.2 * 2 ** attempt))
        raise AssertionError("unreachable")

    def acquire(self, host: str) -> str:
        while True:
            resp = self._call("GET", "/acquire", {"host": host, "wait": POLL_S}, POLL_S + self.timeout_s)
            if resp.status_code == 200:
                return resp.json()["token"]
            if resp.status_code != 204:
                raise RuntimeError(f"permit server {self.url} answered {resp.status_code}: {resp.text[:200]}")

    def release(self, host: str, token: str) -> None:
        self._call("POST", "/release", {"token": token}, self.timeout_s)
