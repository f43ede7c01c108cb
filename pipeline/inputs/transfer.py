"""Resumable, verified HTTP downloads of large published files (Commons dumps, WIT TSVs).

A file is written to ``<name>.part`` beside its final name and renamed only
after its size and checksum match what the publisher announced, so nothing
ever reads half a file under the final name. An interrupted transfer resumes
with an HTTP ``Range`` request from the bytes already on disk; a checksum
mismatch deletes the part file and downloads again, then fails the stage.

Politeness, as for images (``pipeline.inputs.download``): one connection pool that
blocks at ``connections`` open requests, the configured User-Agent on every
request (refused for Wikimedia hosts without contact details), exponential
backoff with jitter on resets, timeouts and 5xx, and 429/503 retried after
their ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

from pipeline.errors import StageError
from pipeline.inputs.download import backoff_delay, check_user_agent, parse_retry_after

log = logging.getLogger("pipeline.inputs.fetch")
CHUNK = 1024 * 1024
RETRYABLE = {429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Expected:
    """What the publisher says a file is; ``algo``/``digest`` None when it publishes no checksum."""

    size: int | None = None
    algo: str | None = None
    digest: str | None = None


def file_digest(path: str | Path, algo: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algo).hexdigest()


def gzip_end_error(path: str | Path) -> str | None:
    """None when every gzip member of ``path`` reaches its end-of-stream marker, else what is wrong.

    Reads the whole file with bounded memory (output is discarded), so a file
    cut anywhere, even on a member boundary's inside, is caught.
    """
    size = os.path.getsize(path)
    d = zlib.decompressobj(wbits=31)
    fed = 0  # bytes of the file given to the decompressor
    member_start, in_member = 0, False
    try:
        with open(path, "rb") as f:
            while True:
                chunk = f.read(CHUNK)
                if not chunk:
                    break
                data, fed = chunk, fed + len(chunk)
                while data:
                    if not in_member:
                        in_member, member_start = True, fed - len(data)
                    d.decompress(data, 16 * CHUNK)
                    data = d.unconsumed_tail
                    while data and not d.eof:
                        d.decompress(data, 16 * CHUNK)
                        data = d.unconsumed_tail
                    if d.eof:
                        data, in_member = d.unused_data, False
                        d = zlib.decompressobj(wbits=31)
    except zlib.error as e:
        return f"corrupt gzip data in the member starting at byte {member_start}: {e}"
    if size == 0:
        return "empty file (0 bytes)"
    if in_member:
        return (f"gzip stream ends at byte {size} before its end-of-stream marker "
                f"(member starting at byte {member_start} is cut)")
    return None


class Progress:
    """Logs bytes, rate and ETA of one transfer, at most once per ``every_s``."""

    def __init__(self, name: str, total: int | None, start: int, every_s: float):
        self.name, self.total, self.done, self.every_s = name, total, start, every_s
        self.t0 = self.last = time.monotonic()
        self.start = start

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            log.info("fetch: %s", self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = max(1e-6, (now or time.monotonic()) - self.t0)
        rate = (self.done - self.start) / elapsed
        text = f"{self.name} {_mb(self.done)}"
        if self.total:
            text += f" of {_mb(self.total)} ({100 * self.done / self.total:.0f}%)"
        text += f", {_mb(rate)}/s"
        if self.total and rate > 0:
            text += f", ETA {time.strftime('%H:%M:%S', time.gmtime((self.total - self.done) / rate))}"
        return text


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


class Transfers:
    """A polite HTTP client for big files; ``download`` and ``get_text`` are thread-safe."""

    def __init__(self, cfg, user_agent: str, sleep=time.sleep, seed: int | None = None):
        self.cfg, self.user_agent = cfg, user_agent
        self.session = requests.Session()
        # pool_block: a thread that finds every connection in use waits instead of opening another.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(1, cfg.connections),
                              pool_block=True, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"User-Agent": user_agent, "Accept-Encoding": "identity"})
        self._slots = threading.BoundedSemaphore(max(1, cfg.connections))
        self._sleep, self._rng = sleep, random.Random(seed)
        self.bytes_downloaded = 0
        self._count = threading.Lock()

    def close(self) -> None:
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ small requests
    def _small(self, method: str, url: str, missing_ok: bool):
        """One small request with retries: the response, or None for 404/410 when ``missing_ok``."""
        check_user_agent(self.user_agent, url)
        for attempt in range(self.cfg.max_retries + 1):
            try:
                with self._slots:
                    resp = self.session.request(method, url, timeout=self.cfg.timeout_s, allow_redirects=True)
                    _ = resp.content  # the whole body is read while the slot is held
            except requests.exceptions.RequestException as e:
                if attempt == self.cfg.max_retries:
                    raise StageError("fetch", url, f"{method} failed {attempt + 1} times: {type(e).__name__}: {e}")
                self._backoff(attempt, None, url)
                continue
            code = resp.status_code
            if code == 200:
                return resp
            if code in (404, 410) and missing_ok:
                return None
            if code in RETRYABLE and attempt < self.cfg.max_retries:
                self._backoff(attempt, resp.headers.get("Retry-After"), url)
                continue
            raise StageError("fetch", url, f"HTTP {code}")
        raise AssertionError("unreachable")

    def get_text(self, url: str, missing_ok: bool = False) -> str | None:
        """GET a small document (listing, status, checksum file); None for 404 when ``missing_ok``."""
        resp = self._small("GET", url, missing_ok)
        return None if resp is None else resp.text

    def content_length(self, url: str) -> int | None:
        """The size the server announces for ``url`` (HEAD), or None when it says nothing."""
        length = self._small("HEAD", url, False).headers.get("Content-Length", "")
        return int(length) if length.isdigit() else None

    def _backoff(self, attempt: int, retry_after: str | None, url: str) -> None:
        wait = parse_retry_after(retry_after)
        if wait is not None and wait > self.cfg.max_retry_after_s:
            raise StageError("fetch", url, f"server asks to retry after {wait:.0f} s, more than "
                                           f"fetch.max_retry_after_s={self.cfg.max_retry_after_s:.0f}")
        delay = wait if wait is not None else backoff_delay(attempt, self.cfg.backoff_s, self.cfg.max_backoff_s,
                                                            self._rng)
        log.info("fetch: %s: retrying in %.1f s (attempt %d)", url, delay, attempt + 2)
        self._sleep(delay)

    # ------------------------------------------------------------ big files
    def download(self, url: str, dest: str | Path, expected: Expected, verify=None) -> dict:
        """Fetch ``url`` to ``dest``, verified; returns what was done (bytes, attempts, digest).

        ``verify(part_path)`` may return an error string for content checks
        beyond size and checksum (e.g. a complete gzip stream); it counts as a
        mismatch.
        """
        check_user_agent(self.user_agent, url)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        problem = ""
        for round_ in range(self.cfg.checksum_retries + 1):
            got, total = self._transfer(url, part, expected.size)
            size = part.stat().st_size
            want_size = expected.size if expected.size is not None else total
            digest = file_digest(part, expected.algo) if expected.algo else None
            if want_size is not None and size != want_size:
                problem = f"size mismatch: expected {want_size} bytes, got {size}"
            elif expected.digest and digest != expected.digest.lower():
                problem = f"{expected.algo} mismatch: expected {expected.digest.lower()}, got {digest}"
            else:
                problem = (verify(part) if verify else None) or ""
            if not problem:
                os.replace(part, dest)
                _fsync_dir(dest.parent)
                return {"file": dest.name, "bytes": size, "downloaded_bytes": got, "rounds": round_ + 1,
                        "digest": digest, "algo": expected.algo}
            log.warning("fetch: %s: %s; deleting the partial file%s", dest.name, problem,
                        ", downloading again" if round_ < self.cfg.checksum_retries else "")
            part.unlink(missing_ok=True)
        raise StageError("fetch", str(dest), f"{problem} (from {url}, after {self.cfg.checksum_retries + 1} "
                                             f"downloads; no file left under this name)")

    def _transfer(self, url: str, part: Path, size: int | None) -> tuple[int, int | None]:
        """Bring ``part`` to the end of ``url``, resuming from its current length.

        Returns (bytes received now, total size the server announced or None).
        """
        got, total, attempt = 0, size, 0
        while True:
            have = part.stat().st_size if part.exists() else 0
            if total is not None and have == total:
                return got, total
            if total is not None and have > total:
                part.unlink()
                have = 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            retry_after = None
            try:
                with self._slots, self.session.get(url, headers=headers, stream=True,
                                                   timeout=(self.cfg.timeout_s, self.cfg.timeout_s)) as resp:
                    code = resp.status_code
                    if code == 416 and have:  # nothing after what we have: verification decides
                        return got, total
                    if code in (404, 410):
                        raise StageError("fetch", url, f"HTTP {code} {resp.reason}")
                    if code in RETRYABLE:
                        retry_after = resp.headers.get("Retry-After")
                        raise _Retryable(f"HTTP {code}")
                    if code not in (200, 206):
                        raise StageError("fetch", url, f"HTTP {code} {resp.reason}")
                    start = _range_start(resp) if code == 206 else 0
                    if code == 206 and start != have:
                        raise StageError("fetch", url, f"asked for bytes from {have}, server sent from {start}")
                    announced = _total_size(resp, start)
                    if announced is not None:
                        total = announced
                    if code == 200 and have:
                        log.info("fetch: %s: server ignored the Range request; starting again", url)
                    progress = Progress(part.name[:-5], total, start, self.cfg.progress_every_s)
                    with open(part, "ab" if code == 206 else "wb") as f:
                        # read1 hands over what has arrived, so a dropped connection loses no received bytes
                        while chunk := _read1(resp):
                            f.write(chunk)
                            got += len(chunk)
                            progress.update(len(chunk))
                            with self._count:
                                self.bytes_downloaded += len(chunk)
                        f.flush()
                        os.fsync(f.fileno())
                    if total is not None and part.stat().st_size < total:
                        raise _Retryable(f"connection closed at byte {part.stat().st_size} of {total}")
                    log.info("fetch: done: %s", progress.line())
                    return got, total
            except (_Retryable, requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.Timeout) as e:
                if attempt >= self.cfg.max_retries:
                    raise StageError("fetch", url, f"gave up after {attempt + 1} attempts: {type(e).__name__}: {e}")
                log.warning("fetch: %s: %s; will resume from byte %d", url, str(e)[:200],
                            part.stat().st_size if part.exists() else 0)
                self._backoff(attempt, retry_after, url)
                attempt += 1


class _Retryable(Exception):
    pass


def _read1(resp) -> bytes:
    try:
        return resp.raw.read1(CHUNK, decode_content=False)
    except Exception as e:  # urllib3's errors, as requests would raise them
        import urllib3.exceptions as u3

        if isinstance(e, (u3.ProtocolError, u3.IncompleteRead, OSError)):
            raise requests.exceptions.ChunkedEncodingError(e) from e
        if isinstance(e, u3.ReadTimeoutError):
            raise requests.exceptions.Timeout(e) from e
        raise


def _range_start(resp) -> int:
    value = resp.headers.get("Content-Range", "")  # bytes 100-199/200
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1


def _total_size(resp, start: int) -> int | None:
    cr = resp.headers.get("Content-Range", "")
    if "/" in cr and cr.rsplit("/", 1)[1].isdigit():
        return int(cr.rsplit("/", 1)[1])
    length = resp.headers.get("Content-Length", "")
    return start + int(length) if length.isdigit() else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
