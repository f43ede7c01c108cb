"""The served model, following its MLflow alias.

``serve.model_uri`` (default ``models:/<model_name>-<taxonomy>@champion``) is
resolved to one version; when the nightly gate moves the alias, ``refresh``
loads the new version beside the old one, warms it up, and swaps the
reference. A request keeps the model it started with (``Served`` is
immutable), so a swap fails no request. A registry that cannot be reached
keeps the current model serving.
"""

from __future__ import annotations

import gc
import logging
import threading
from dataclasses import dataclass

log = logging.getLogger("serving")


@dataclass(frozen=True)
class Served:
    """One loaded model version and what the answers say about it."""

    predictor: object  # training.pyfunc.TopicModel
    name: str
    version: str
    alias: str | None
    uri: str

    @property
    def about(self) -> dict:
        p = self.predictor
        return {"name": self.name, "version": self.version, "alias": self.alias, "uri": self.uri,
                "taxonomy": p.taxonomy, "inputs": str(p.inputs), "image_size": p.image_size}

    def describe(self) -> dict:
        """The model and its label set, for the page and for clients (``GET /info``)."""
        p = self.predictor
        return {"model": self.about,
                "labels": [{"name": n, "slug": s, "threshold": float(t)}
                           for n, s, t in zip(p.names, p.slugs, p.thresholds)]}


def _settle_heap(swapped: bool) -> None:
    """Keep the loaded model's millions of objects out of Python's garbage collector, whose full passes
    over them would otherwise stall requests now and then. After a swap the old model's cycles are
    collected first, once."""
    if swapped:
        gc.unfreeze()
    gc.collect()
    gc.freeze()


def split_uri(uri: str) -> tuple[str | None, str | None, str | None]:
    """``models:/name@alias`` -> (name, None, alias); ``models:/name/3`` -> (name, "3", None); else Nones."""
    if not uri.startswith("models:/"):
        return None, None, None
    rest = uri[len("models:/"):]
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, None, alias
    if "/" in rest:
        name, version = rest.split("/", 1)
        return name, version, None
    return rest, None, None


class Champion:
    """Loads and follows the model at ``uri``; ``current`` is what a request uses (None until one loads)."""

    def __init__(self, uri: str, tracking_uri: str, warm_batches=(1, 2, 8)):
        self.uri = uri
        self.tracking_uri = tracking_uri
        self.name, self.pinned, self.alias = split_uri(uri)
        self.warm_batches = warm_batches
        self.current: Served | None = None
        self.swaps = 0
        self.last_error: str | None = None
        self._loading = threading.Lock()
        self._registry = None

    def _client(self):
        """One client for the server's life (a new one per read would reopen the store every time)."""
        if self._registry is None:
            from mlflow import MlflowClient

            self._registry = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._registry

    def resolve(self) -> str | None:
        """The version the URI names now (an alias read from the registry), or None for a non-registry URI."""
        if self.alias:
            return str(self._client().get_model_version_by_alias(self.name, self.alias).version)
        return self.pinned

    def load(self, version: str | None) -> Served:
        import mlflow

        from training.pyfunc import TopicModel

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        uri = f"models:/{self.name}/{version}" if version else self.uri
        predictor = mlflow.pyfunc.load_model(uri).unwrap_python_model()
        if not isinstance(predictor, TopicModel):
            raise TypeError(f"{uri} is a {type(predictor).__name__}, not this product's TopicModel")
        served = Served(predictor, self.name or uri, version or "", self.alias, uri)
        self._warm(served)
        return served

    def _warm(self, served: Served) -> None:
        """Trace the predict function before the first request (Keras relaxes the batch size after two shapes),
        on the path requests take (``predict_rows``), with empty rows."""
        for n in self.warm_batches:
            served.predictor.predict_rows([None] * n)

    def refresh(self) -> bool:
        """Load the version the URI names now if it is not the one served; True when it swapped."""
        with self._loading:
            try:
                version = self.resolve()
                if self.current is not None and version == self.current.version:
                    return False
                served = self.load(version)
            except Exception as e:  # noqa: BLE001 - keep serving what we have; readiness says if there is none
                self.last_error = f"{type(e).__name__}: {e}"
                log.warning("model %s: cannot load (%s); serving %s", self.uri, self.last_error,
                            f"v{self.current.version}" if self.current else "nothing")
                return False
            before = self.current
            self.current = served
            self.last_error = None
            _settle_heap(before is not None)
            if before is not None:
                self.swaps += 1
            log.info("model %s: serving v%s%s", self.uri, served.version,
                     f" (was v{before.version})" if before else "")
            return True
