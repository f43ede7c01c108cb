"""The KServe model that answers for images, and the HTTP server around it.

``TopicServer`` is a ``kserve.Model``: the same predictor runs here as a
process (``python -m serving``) and on Kubernetes as an
InferenceService. Its ``predict`` takes KServe's V1 body
(``/v1/models/<name>:predict``, see ``instances``) or a V2 request
(``/v2/models/<name>/infer``: BYTES inputs ``image`` (base64) or ``title``,
and the text fields), prepares every instance as batch inference does
(``pipeline.features.imaging.preprocess`` at the model's input size; texts by the
model's own encoding) and predicts through the micro-batcher.

Around it: ``GET /`` (a page to try it), ``GET /info`` (the model and its
thresholds), a bearer token when ``serve.token_file`` is set, a body size
limit, and errors as ``{"error": ..., "status": ...}``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

import numpy as np
from kserve import Model
from kserve.errors import ModelNotReady

from pipeline.features.imaging import ImageError, preprocess
from serving.batcher import MicroBatcher
from serving.champion import Champion, Served
from serving.instances import IMAGE_STATUS, Instance, RequestError, at, parse, sniff
from serving.thumbnails import Thumbnails

log = logging.getLogger("serving")
PAGE = Path(__file__).with_name("page.html")
# Paths open without the token: the page itself (it asks for the token) and liveness.
OPEN_PATHS = ("/", "/livez")


@dataclass
class Prepared:
    """One instance as the model reads it: pixels (or None), index texts, and where a title's image came from."""

    pixels: np.ndarray | None
    texts: dict
    source: str | None = None


def bucket(n: int) -> int:
    """Batches are padded to a power of two: a few shapes, each traced once at warm-up."""
    return 1 << max(0, n - 1).bit_length()


def predict_rows(served: Served, rows: list[Prepared]) -> np.ndarray:
    """Probabilities (rows, labels), as batch inference computes them (``spark_jobs.batch_inference``).

    Padding rows (no image, no text) change nothing for the others: rows do not interact in inference.
    """
    n = len(rows)
    rows = rows + [Prepared(None, {})] * (bucket(n) - n)
    probs, _ = served.predictor.predict_rows([r.pixels for r in rows], [r.texts for r in rows])
    return probs[:n]


class TopicServer(Model):
    def __init__(self, settings, champion: Champion | None = None, thumbnails: Thumbnails | None = None):
        cfg = settings.serve
        super().__init__(cfg.name)
        self.cfg = cfg
        buckets = [1 << i for i in range(bucket(cfg.max_batch).bit_length())]  # 1, 2, 4, ... max_batch's
        self.champion = champion or Champion(model_uri(settings), settings.mlflow_uri, buckets)
        self.thumbnails = thumbnails or Thumbnails(settings.shard, cfg.cache_bytes, cfg.max_pixels,
                                                    cfg.upstream_timeout_s)
        self.batcher = MicroBatcher(predict_rows, cfg.max_batch, cfg.max_wait_ms / 1000.0)
        self._decode = ThreadPoolExecutor(max(1, cfg.decode_threads), thread_name_prefix="decode")
        # titles wait on the image host: their own threads, so they never hold up decoding
        self._fetch = ThreadPoolExecutor(4 * max(1, settings.shard.per_host_concurrency), thread_name_prefix="fetch")

    # KServe reads `ready` for /v1/models/<name> and before every predict.
    @property
    def ready(self) -> bool:
        return self.champion.current is not None

    @ready.setter
    def ready(self, value) -> None:  # Model.__init__ sets it; readiness is the champion's
        pass

    def load(self) -> bool:
        self.champion.refresh()
        return self.ready

    async def watch(self) -> None:
        """Follow the alias: load a new version beside the served one and swap it in when ready."""
        loop = asyncio.get_running_loop()
        while True:
            await loop.run_in_executor(None, self.champion.refresh)
            await asyncio.sleep(self.cfg.watch_interval_s if self.ready else min(5.0, self.cfg.watch_interval_s))

    def _prepare(self, inst: Instance, served: Served) -> Prepared:
        p = served.predictor
        data, source = inst.image, None
        if inst.title is not None and p.reads_image:
            thumb = self.thumbnails.get(inst.index, inst.title)
            data, source = thumb.data, thumb.url
        pixels = None
        if data is not None and p.reads_image:
            why = sniff(data)
            if why:
                raise at(inst.index, HTTPStatus.UNSUPPORTED_MEDIA_TYPE, why)
            try:
                pixels = preprocess(data, p.image_size, max_pixels=self.cfg.max_pixels)
            except ImageError as e:
                raise at(inst.index, IMAGE_STATUS.get(e.status, HTTPStatus.BAD_REQUEST),
                         f"{e.message} ({e.status})") from None
        return Prepared(pixels, inst.texts, source)

    async def predict(self, payload, headers=None, response_headers=None):
        served = self.champion.current
        if served is None:
            raise ModelNotReady(self.name, self.champion.last_error or "no model loaded yet")
        if isinstance(payload, (bytes, bytearray, str)):  # a body sent without Content-Type: application/json
            payload = json_body(payload)
        v2 = not isinstance(payload, dict)
        instances = parse(v2_instances(payload) if v2 else payload, self.cfg.max_instances, served.predictor.inputs)
        loop = asyncio.get_running_loop()
        self.batcher.expect()
        try:
            prepared = await asyncio.gather(*(
                loop.run_in_executor(self._fetch if i.title is not None else self._decode, self._prepare, i, served)
                for i in instances))
        finally:
            self.batcher.arrived()
        probs = await self.batcher.submit(served, prepared)
        if v2:
            return v2_response(self.name, served, payload, probs)
        return {"predictions": answers(served, probs, prepared)}


def answers(served: Served, probs: np.ndarray, prepared: list[Prepared]) -> list[dict]:
    """One answer per instance: every topic's probability, the topics at the model's thresholds (the
    pyfunc's own rule, ``predicted_labels``), and which model answered."""
    p = served.predictor
    about = served.about
    model = {k: about[k] for k in ("name", "version", "alias", "taxonomy", "inputs")}
    out = []
    for row, topics, prep in zip(probs, p.predicted_labels(probs), prepared):
        one = {"probabilities": {n: float(v) for n, v in zip(p.names, row)}, "topics": topics, "model": model}
        if prep.source:
            one["source"] = prep.source
        out.append(one)
    return out


def json_body(raw) -> dict:
    try:
        body = json.loads(raw)
    except ValueError:
        raise RequestError(HTTPStatus.BAD_REQUEST, 'the body is not JSON: send {"instances": [...]}') from None
    if not isinstance(body, dict):
        raise RequestError(HTTPStatus.BAD_REQUEST, 'the body must be a JSON object {"instances": [...]}')
    return body


def v2_instances(request) -> dict:
    """A V2 InferRequest (BYTES inputs named as V1's fields, one element per instance) as a V1 body."""
    columns = {}
    for inp in request.inputs:
        data = inp.data if isinstance(inp.data, list) else list(np.asarray(inp.as_numpy()).reshape(-1))
        columns[inp.name] = [v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else v for v in data]
    sizes = {len(v) for v in columns.values()}
    if len(sizes) > 1:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"V2 inputs differ in length: { {k: len(v) for k, v in columns.items()} }")
    n = sizes.pop() if sizes else 0
    return {"instances": [{k: v[i] for k, v in columns.items()} for i in range(n)]}


def v2_response(model_name: str, served: Served, request, probs: np.ndarray):
    from kserve import InferOutput, InferResponse

    out = InferOutput(name="probabilities", shape=list(probs.shape), datatype="FP32")
    out.set_data_from_numpy(np.asarray(probs, dtype="float32"), binary_data=False)
    labels = InferOutput(name="labels", shape=[len(served.predictor.names)], datatype="BYTES")
    labels.set_data_from_numpy(np.asarray(served.predictor.names, dtype=object), binary_data=False)
    return InferResponse(model_name=model_name, model_version=served.version, infer_outputs=[out, labels],
                         response_id=getattr(request, "id", None) or str(uuid.uuid4()),
                         parameters={"alias": served.alias or "", "taxonomy": served.predictor.taxonomy or ""})


def model_uri(settings) -> str:
    from pipeline.orchestration import tracking

    return settings.serve.model_uri or f"models:/{tracking.model_name(settings)}@champion"


def read_token(path: str) -> bytes | None:
    if not path:
        return None
    token = Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"serve.token_file {path} is empty")
    return token.encode("utf-8")


class Guard:
    """ASGI middleware: the bearer token, and the body size limit (declared or streamed)."""

    def __init__(self, app, token: bytes | None, max_body: int):
        self.app, self.token, self.max_body = app, token, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.token and scope["path"] not in OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, b"Bearer " + self.token):
                return await _json(send, RequestError(HTTPStatus.UNAUTHORIZED, "a bearer token is required "
                                   "(Authorization: Bearer <token>)" if not given else "the bearer token is wrong",
                                   {"WWW-Authenticate": "Bearer"}))
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            return await _json(send, _too_large(int(length), self.max_body))
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise _too_large(seen, self.max_body)
            return message

        await self.app(scope, limited, send)


def _too_large(size: int, limit: int) -> RequestError:
    return RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"request body of {size} bytes or more; at most {limit} (serve.max_body_bytes)")


async def _json(send, err: RequestError) -> None:
    body = json.dumps(err.body()).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), str(v).encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install(app, model: TopicServer, token: bytes | None, max_body: int) -> None:
    """The routes and middleware this server adds to KServe's app (before KServe adds its own)."""
    from fastapi.responses import HTMLResponse, JSONResponse

    async def request_error(_, exc: RequestError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    async def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob: http: https:; "
                                       "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'",
            "X-Content-Type-Options": "nosniff"})

    async def info():
        served = model.champion.current
        if served is None:
            raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE,
                               f"no model loaded yet ({model.champion.last_error or 'loading'})")
        return {**served.describe(), "server": {
            "name": model.name, "swaps": model.champion.swaps, "batches": model.batcher.batches,
            "rows": model.batcher.rows, "thumbnail_fetches": model.thumbnails.fetches,
            "thumbnail_cache_hits": model.thumbnails.hits, "max_instances": model.cfg.max_instances}}

    async def livez():
        return {"status": "alive"}

    app.add_exception_handler(RequestError, request_error)
    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/info", info, methods=["GET"])
    app.add_api_route("/livez", livez, methods=["GET"])
    app.add_middleware(Guard, token=token, max_body=max_body)


def main(settings) -> int:
    """Serve until SIGTERM/SIGINT: KServe's REST server (V1, V2) on ``serve.host:serve.port``."""
    from kserve import ModelServer
    from kserve.model_server import app
    from kserve.protocol.rest.server import RESTServer

    from pipeline.orchestration import tracking

    cfg = settings.serve
    tracking.load_credentials()
    token = read_token(cfg.token_file)
    model = TopicServer(settings)
    install(app, model, token, cfg.max_body_bytes)
    server = ModelServer(http_port=cfg.port, enable_grpc=False, enable_latency_logging=False,
                         enable_docs_url=False)
    server.register_model(model)
    rest = RESTServer("kserve.model_server:app", server.dataplane, server.model_repository_extension, cfg.port,
                      grace_period=10)
    rest.config.host = cfg.host  # KServe binds 0.0.0.0; this server binds where it is told (loopback by default)
    log.info("model server for %s on http://%s:%d (token %s)", model.champion.uri, cfg.host, cfg.port,
             "required" if token else "off")

    async def serve():
        watcher = asyncio.get_running_loop().create_task(model.watch())
        try:
            await rest.start()
        finally:
            watcher.cancel()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit("run it as: python -m serving")
