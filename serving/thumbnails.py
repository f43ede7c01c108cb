"""A Commons file title -> the bytes the image store would keep for it, fetched as politely as the shard stage.

The same URL (``pipeline.inputs.download.source_url``: the standard thumbnail step at
``shard.thumb_width`` on ``shard.thumb_host``), the same downloader (User-Agent
with contact, ``shard.per_host_concurrency`` connections per host across the
machine, Retry-After honoured) and the same check (``pipeline.features.imaging.store_image``),
so a title is predicted from exactly the bytes batch inference reads. A request
waits seconds, not minutes: one retry, ``serve``-side timeouts. Results are
kept in a least-recently-used cache bounded by bytes, and concurrent requests
for one title share one fetch.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from concurrent.futures import Future
from http import HTTPStatus

from pipeline.features.imaging import ImageError, store_image
from pipeline.inputs.download import Downloader, FetchResult, rewrite_mirror, source_url, standard_width
from pipeline.inputs.wit import UPLOAD_BASE, commons_url
from serving.instances import IMAGE_STATUS, RequestError, at

# A request should not wait out the shard stage's minutes of retries.
SERVING_HTTP = {"max_retries": 1, "max_backoff_s": 2.0, "max_retry_after_s": 5.0}


@dataclasses.dataclass(frozen=True)
class Thumbnail:
    data: bytes
    url: str


class Thumbnails:
    def __init__(self, shard, cache_bytes: int, max_pixels: int, timeout_s: float = 10.0):
        self.shard = dataclasses.replace(shard, timeout_s=timeout_s, **SERVING_HTTP)
        self.width = standard_width(shard.thumb_width, shard.thumbnail_steps)
        self.max_pixels = min(max_pixels, shard.max_pixels)
        self.downloader = Downloader(self.shard, pool_size=max(2, self.shard.per_host_concurrency))
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, Thumbnail] = OrderedDict()
        self._size = 0
        self._inflight: dict[str, Future] = {}
        self._lock = threading.Lock()
        self.fetches = self.hits = 0

    def get(self, index: int, title: str) -> Thumbnail:
        """The stored bytes for ``title`` (normalized) or a RequestError naming instance ``index``."""
        with self._lock:
            hit = self._cache.get(title)
            if hit is not None:
                self._cache.move_to_end(title)
                self.hits += 1
                return hit
            pending = self._inflight.get(title)
            owner = pending is None
            if owner:
                pending = self._inflight[title] = Future()
        if not owner:
            result = pending.result()
        else:
            try:
                result = self._fetch(title)
            except Exception as e:  # noqa: BLE001 - handed to every waiter, then raised
                result = e
            with self._lock:
                del self._inflight[title]
                if isinstance(result, Thumbnail):
                    self._put(title, result)
            pending.set_result(result)
        if isinstance(result, RequestError):
            raise at(index, result.status, result.message, result.headers)
        if isinstance(result, Exception):
            raise result
        return result

    def _put(self, title: str, thumb: Thumbnail) -> None:
        if len(thumb.data) > self.cache_bytes:
            return
        self._cache[title] = thumb
        self._size += len(thumb.data)
        while self._size > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._size -= len(old.data)

    def _fetch(self, title: str) -> Thumbnail:
        self.fetches += 1
        url = source_url(title, self.shard)
        try:
            result = self.downloader.fetch(url)
        except ValueError as e:  # the User-Agent has no contact: the server's configuration, not the request
            raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, f"title lookups are off: {e}") from None
        if not result.ok and _refused_thumbnail(result) and not title.lower().endswith(".svg"):
            # a raster file narrower than the step has no thumbnail of that width: the store keeps its original
            original = rewrite_mirror(commons_url(title), self.shard.mirror_url, (UPLOAD_BASE, self.shard.thumb_host))
            second = self.downloader.fetch(original)
            if second.ok or second.status != "http_404":
                result = second
        if not result.ok:
            raise _upstream_error(title, result)
        try:
            data, _, _, _ = store_image(result.data, self.width, self.shard.min_side, self.max_pixels,
                                        self.shard.jpeg_quality)
        except ImageError as e:
            raise RequestError(IMAGE_STATUS.get(e.status, HTTPStatus.BAD_REQUEST),
                               f"Commons file {title!r} from {result.url}: {e}") from None
        return Thumbnail(data, result.url)


def _refused_thumbnail(result: FetchResult) -> bool:
    return result.status.startswith("http_4") and result.status != "http_429"


def _upstream_error(title: str, result: FetchResult) -> RequestError:
    """404 upstream: the file does not exist (404). Anything else upstream: 424 Failed Dependency, so a
    client can tell the upstream's failure from its own mistake and the server's fault."""
    if result.status == "http_404":
        return RequestError(HTTPStatus.NOT_FOUND, f"no Commons file {title!r} (HTTP 404 from {result.url})")
    what = {"timeout": "timed out", "connection_error": "could not be reached"}.get(result.status, result.error)
    headers = {"Retry-After": "5"} if result.status in ("timeout", "http_429", "http_503") else None
    return RequestError(HTTPStatus.FAILED_DEPENDENCY,
                        f"the image host {what} for {title!r} ({result.url}; {result.status})", headers)
