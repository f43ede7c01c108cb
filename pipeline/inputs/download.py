"""A polite HTTP downloader for Commons images.

Wikimedia's robot policy asks for a descriptive User-Agent with contact
details, few parallel connections per host, and backing off when told to
(429/503 + Retry-After). This module does all of that for the shard stage:

- refuses Wikimedia hosts when the User-Agent has no contact (URL or e-mail)
  or still carries the ``set USER_AGENT`` placeholder;
- caps concurrent requests per host (``per_host_concurrency``) with a
  semaphore per host inside the process *and* lock-file slots shared by every
  process on the machine. The shard stage downloads from one process, so the
  cap holds for the whole cluster;
- caps bandwidth per host with a token bucket (per process, so per stage run);
- retries timeouts, connection resets, 5xx and 429 with exponential backoff
  and jitter, honouring Retry-After (seconds or an HTTP date); other 4xx are
  recorded, not retried;
- classifies bodies: HTML with status 200 is ``not_image``, zero bytes ``empty``.
"""

from __future__ import annotations

import email.utils
import errno
import fcntl
import os
import random
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from pipeline.inputs.wit import UPLOAD_BASE, commons_url, thumb_url

WIKIMEDIA_HOST = re.compile(r"(^|\.)(wikimedia|wikipedia)\.org$", re.I)
_CONTACT = re.compile(r"https?://\S+|[\w.+-]+@[\w-]+(\.[\w-]+)+")
PLACEHOLDER = "set USER_AGENT"
RETRYABLE_HTTP = {429, 500, 502, 503, 504}
CHUNK = 64 * 1024


@dataclass
class FetchResult:
    url: str
    status: str  # ok, http_<code>, timeout, connection_error, too_large, not_image, empty, request_error
    data: bytes | None = None
    bytes: int = 0
    content_type: str | None = None
    attempts: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ------------------------------------------------------------------ URLs
def rewrite_mirror(url: str, mirror_url: str, hosts=(UPLOAD_BASE,)) -> str:
    """Point upload.wikimedia.org (and thumbnail host) URLs at a mirror (the demo's local server)."""
    for host in hosts:
        if mirror_url and host and url.startswith(host.rstrip("/")):
            return mirror_url.rstrip("/") + url[len(host.rstrip("/")):]
    return url


def standard_width(width: int, steps) -> int:
    """The smallest standard thumbnail step at least ``width`` wide (the largest step if none is)."""
    steps = sorted(int(w) for w in steps) if steps else []
    return next((w for w in steps if w >= int(width)), steps[-1] if steps else int(width))


def source_url(title: str, shard, mime_type: str | None = None, original_width: int | None = None) -> str:
    """The URL to fetch for a file: a ``thumb_width`` thumbnail, or the original.

    Originals when ``shard.originals``, and for raster files no wider than the
    thumbnail (Wikimedia refuses to upscale them); SVGs always render.
    """
    is_svg = (mime_type or "").startswith("image/svg") or title.lower().endswith(".svg")
    width = standard_width(shard.thumb_width, shard.thumbnail_steps)
    if shard.originals or (not is_svg and original_width and original_width <= width):
        url = commons_url(title)
    else:
        url = thumb_url(title, width, shard.thumb_host or UPLOAD_BASE)
    return rewrite_mirror(url, shard.mirror_url, (UPLOAD_BASE, shard.thumb_host))


def has_contact(user_agent: str) -> bool:
    return bool(user_agent) and PLACEHOLDER.lower() not in user_agent.lower() and bool(_CONTACT.search(user_agent))


def check_user_agent(user_agent: str, url: str) -> None:
    """Raise ValueError when ``url`` is a Wikimedia host and the UA gives no contact."""
    host = urlsplit(url).hostname or ""
    if WIKIMEDIA_HOST.search(host) and not has_contact(user_agent):
        raise ValueError(
            f"refusing to download from {host} with User-Agent {user_agent!r}: Wikimedia requires a "
            "descriptive User-Agent with contact details (a URL or e-mail); set USER_AGENT"
        )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: uniform in [d/2, d], d = min(cap, base * 2**attempt)."""
    d = min(cap, base * (2**attempt))
    return d * (0.5 + 0.5 * (rng or random).random())


# ------------------------------------------------------------------ limits
class TokenBucket:
    """Bytes per second with a one-second burst; ``consume`` blocks until allowed."""

    def __init__(self, rate: float):
        self.rate = float(rate)
        self.capacity = max(self.rate, float(CHUNK))
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def consume(self, n: int) -> None:
        if self.rate <= 0:
            return
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            self.tokens -= n
            wait = -self.tokens / self.rate if self.tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


class HostSlots:
    """At most ``cap`` holders per host across threads and processes of one machine.

    A threading semaphore orders the threads of a process; ``flock`` on one of
    ``cap`` lock files per host (each open() is its own lock, so threads and
    processes exclude each other) enforces the cap machine-wide.
    """

    def __init__(self, cap: int, lock_dir: str = ""):
        self.cap = max(1, int(cap))
        self.lock_dir = lock_dir or os.path.join(tempfile.gettempdir(), "wiki-image-topics-host-slots")
        os.makedirs(self.lock_dir, exist_ok=True)
        self._sems: dict[str, threading.BoundedSemaphore] = {}
        self._guard = threading.Lock()

    def _sem(self, host: str) -> threading.BoundedSemaphore:
        with self._guard:
            if host not in self._sems:
                self._sems[host] = threading.BoundedSemaphore(self.cap)
            return self._sems[host]

    def acquire(self, host: str):
        self._sem(host).acquire()
        safe = re.sub(r"[^A-Za-z0-9.-]", "_", host)
        delay = 0.005
        try:
            while True:
                for i in random.sample(range(self.cap), self.cap):
                    fd = os.open(os.path.join(self.lock_dir, f"{safe}.{i}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        return fd
                    except OSError as e:
                        os.close(fd)
                        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                            raise
                time.sleep(delay)
                delay = min(0.05, delay * 1.5)
        except BaseException:
            self._sem(host).release()
            raise

    def release(self, host: str, fd) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
            self._sem(host).release()


# ------------------------------------------------------------------ downloader
def thread_count(shard) -> int:
    """Download threads: ``download_threads``, or twice the per-host cap, so a thread checking an
    image never leaves a connection idle (requests still wait for a per-host slot)."""
    return max(1, shard.download_threads or 2 * shard.per_host_concurrency)


class Downloader:
    """One requests.Session (pooled connections) per task; ``fetch`` is thread-safe."""

    def __init__(self, shard, pool_size: int | None = None, sleep=time.sleep, seed: int | None = None):
        self.cfg = shard
        self.user_agent = shard.user_agent
        self.session = requests.Session()
        size = pool_size or thread_count(shard)
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"User-Agent": self.user_agent, "Accept": "image/*,*/*;q=0.5"})
        self.slots = HostSlots(shard.per_host_concurrency, shard.lock_dir)
        self._buckets: dict[str, TokenBucket] = {}
        self._guard = threading.Lock()
        self._sleep = sleep
        self._rng = random.Random(seed)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.session.close()

    def _bucket(self, host: str) -> TokenBucket:
        with self._guard:
            if host not in self._buckets:
                self._buckets[host] = TokenBucket(self.cfg.bandwidth_bytes_per_s)
            return self._buckets[host]

    def fetch(self, url: str) -> FetchResult:
        """GET ``url`` with retries; never raises for network or HTTP trouble."""
        check_user_agent(self.user_agent, url)
        host = urlsplit(url).netloc
        cfg = self.cfg
        result = FetchResult(url=url, status="request_error")
        for attempt in range(cfg.max_retries + 1):
            result.attempts = attempt + 1
            wait = None
            fd = self.slots.acquire(host)
            try:
                retry, wait = self._attempt(url, host, result)
            finally:
                self.slots.release(host, fd)
            if not retry or attempt == cfg.max_retries:
                return result
            delay = backoff_delay(attempt, cfg.backoff_s, cfg.max_backoff_s, self._rng)
            if wait is not None:
                if wait > cfg.max_retry_after_s:
                    result.error = f"Retry-After {wait:.0f}s exceeds max_retry_after_s {cfg.max_retry_after_s}"
                    return result
                delay = max(wait, 0.0)
            self._sleep(delay)
        return result

    def _attempt(self, url: str, host: str, result: FetchResult) -> tuple[bool, float | None]:
        """One request; fills ``result``; returns (retry?, Retry-After seconds or None)."""
        cfg = self.cfg
        result.data, result.bytes, result.content_type, result.error = None, 0, None, None
        try:
            with self.session.get(url, stream=True, timeout=(cfg.timeout_s, cfg.timeout_s)) as resp:
                result.content_type = resp.headers.get("Content-Type")
                code = resp.status_code
                if code != 200:
                    result.status = f"http_{code}"
                    result.error = f"HTTP {code} {resp.reason}"
                    if code in (429, 503):
                        return True, parse_retry_after(resp.headers.get("Retry-After"))
                    return code in RETRYABLE_HTTP or code >= 500, None
                length = resp.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > cfg.max_bytes:
                    result.status, result.bytes = "too_large", int(length)
                    result.error = f"Content-Length {length} > max_bytes {cfg.max_bytes}"
                    return False, None
                bucket = self._bucket(host)
                chunks, total = [], 0
                for chunk in resp.iter_content(CHUNK):
                    total += len(chunk)
                    if total > cfg.max_bytes:
                        result.status, result.bytes = "too_large", total
                        result.error = f"body > max_bytes {cfg.max_bytes}"
                        return False, None
                    bucket.consume(len(chunk))
                    chunks.append(chunk)
        except requests.exceptions.Timeout as e:
            result.status, result.error = "timeout", _short(e)
            return True, None
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
            is_timeout = "timed out" in str(e).lower() or "timeout" in type(e.args[0] if e.args else e).__name__.lower()
            result.status, result.error = ("timeout" if is_timeout else "connection_error"), _short(e)
            return True, None
        except requests.exceptions.RequestException as e:
            result.status, result.error = "request_error", _short(e)
            return False, None
        data = b"".join(chunks)
        result.bytes = len(data)
        ctype = (result.content_type or "").lower()
        head = data[:64].lstrip().lower()
        if not data:
            result.status, result.error = "empty", "zero-byte body"
        elif ctype.startswith("text/html") or head.startswith(b"<!doctype") or head.startswith(b"<html"):
            result.status, result.error = "not_image", f"HTML body ({ctype or 'no content-type'})"
        else:
            result.status, result.data = "ok", data
        return False, None


def _short(e: Exception, n: int = 300) -> str:
    return f"{type(e).__name__}: {e}"[:n]
