"""MLflow helpers: one configured tracking store, runs that never stay RUNNING.

``configure`` points MLflow at ``settings.mlflow_uri`` (a SQLite file under the
state dir by default) and makes sure the experiment stores its artifacts under
``<state_dir>/mlartifacts`` rather than ``./mlruns`` in whatever directory the
process happens to run in. ``start_run`` ends its run FAILED on any exception,
Ctrl-C or SIGTERM (Airflow's way of killing a task), so the UI never shows a
dead run as RUNNING and the registry code can trust a FINISHED status.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

from pipeline.config import Settings


class Terminated(SystemExit):
    """Raised in the main thread by the SIGTERM handler; exit status 128 + signal."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"terminated by signal {self.signum}"


def _is_local(uri: str) -> bool:
    """True when this process writes the artifacts itself: a file or database store, no server."""
    return not uri.startswith(("http://", "https://", "databricks"))


def artifact_root(settings: Settings) -> str:
    return (Path(settings.paths.state_dir).resolve() / "mlartifacts").as_uri()


def load_credentials(environ=os.environ) -> None:
    """MLflow's client reads its password from MLFLOW_TRACKING_PASSWORD; deployments hand it over
    as a file (a compose or Kubernetes secret) named by MLFLOW_TRACKING_PASSWORD_FILE."""
    path = environ.get("MLFLOW_TRACKING_PASSWORD_FILE")
    if path and not environ.get("MLFLOW_TRACKING_PASSWORD"):
        environ["MLFLOW_TRACKING_PASSWORD"] = Path(path).read_text().strip()


def configure(settings: Settings):
    """Set tracking/registry URI and experiment; returns the experiment id."""
    import mlflow

    load_credentials()
    uri = settings.mlflow_uri
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name = settings.tracking.experiment
    client = mlflow.MlflowClient(uri, uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        kwargs = {}
        if _is_local(uri):
            root = Path(settings.paths.state_dir).resolve() / "mlartifacts" / name
            root.mkdir(parents=True, exist_ok=True)
            kwargs["artifact_location"] = root.as_uri()
        try:
            exp_id = client.create_experiment(name, **kwargs)
        except Exception:  # created concurrently by another process
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def model_name(settings: Settings) -> str:
    """The registered model of this taxonomy: ``<tracking.model_name>-<taxonomy>``, e.g. wiki-image-topics-v1.3.

    One registered model per label set, so a champion is only ever compared
    with models that predict the same labels.
    """
    taxonomy = settings.label.taxonomy
    version = Path(taxonomy).stem if taxonomy.endswith((".yaml", ".yml")) else taxonomy
    return f"{settings.tracking.model_name}-{version}"


def resolve_version(settings: Settings, uri: str) -> tuple[str, str]:
    """(exact model URI, version) of ``uri``: an alias (``models:/name@alias``) is resolved once, here,
    to one version. Raises LookupError, with the registry's reason, where there is none."""
    from mlflow import MlflowClient

    configure(settings)
    rest = uri[len("models:/"):] if uri.startswith("models:/") else None
    try:
        if rest and "@" in rest:
            name, alias = rest.split("@", 1)
            version = str(MlflowClient().get_model_version_by_alias(name, alias).version)
            return f"models:/{name}/{version}", version
        if rest and "/" in rest:
            return uri, rest.split("/", 1)[1]
    except Exception as e:  # noqa: BLE001 - the registry's own error says why
        raise LookupError(f"cannot resolve {uri} ({e})") from e
    return uri, ""


def client(settings: Settings):
    import mlflow

    load_credentials()
    return mlflow.MlflowClient(settings.mlflow_uri, settings.mlflow_uri)


@contextlib.contextmanager
def sigterm_raises():
    """While inside, SIGTERM raises ``Terminated`` in the main thread (a no-op off the main thread).

    Yields a dict whose ``signum`` is set once a signal arrived: raised while C code
    calls back into Python (TensorFlow tracing a layer), the ``Terminated`` may
    surface as another error, such as a ``SystemError``, and the caller can still
    tell the process was terminated.
    """
    received: dict = {"signum": None}
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        # Further SIGTERMs must not interrupt the cleanup this one triggers.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        received["signum"] = signum
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    _RECEIVED.append(received)
    try:
        yield received
    finally:
        _RECEIVED.remove(received)
        signal.signal(signal.SIGTERM, previous)


_RECEIVED: list[dict] = []  # the open sigterm_raises blocks, innermost last


def pending_signal() -> int | None:
    """The SIGTERM the innermost ``sigterm_raises`` received, if any.

    Python ignores an exception raised while it runs a finalizer or weakref
    callback, so the ``Terminated`` can vanish; long loops check this to stop anyway.
    """
    return _RECEIVED[-1]["signum"] if _RECEIVED else None


TAG_HOST, TAG_PID, TAG_PROCESS = "owner_host", "owner_pid", "owner_process"


def _process_id(pid: int) -> str | None:
    """Boot id and start time of process ``pid`` (None when it is gone): unlike a pid, never reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else f"{boot}:{fields[19]}"


def owner_tags() -> dict[str, str]:
    """Who runs this MLflow run: host, pid and the process's identity, so a later stage can tell it died."""
    return {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid()), TAG_PROCESS: _process_id(os.getpid()) or ""}


def reap_dead_runs(settings: Settings, found_by: str) -> list[str]:
    """End as KILLED the RUNNING runs of this experiment whose process on this host is gone.

    A process killed by SIGKILL (the OOM killer, a lost container) cannot end
    its run, so it would stay RUNNING for ever. Runs owned by another host are
    left alone: their processes cannot be checked from here.
    """
    c = client(settings)
    experiment = c.get_experiment_by_name(settings.tracking.experiment)
    if experiment is None:
        return []
    host, reaped = socket.gethostname(), []
    for run in c.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        tags = run.data.tags
        if tags.get(TAG_HOST) != host or not tags.get(TAG_PID):
            continue
        if tags.get(TAG_PROCESS) and _process_id(int(tags[TAG_PID])) == tags[TAG_PROCESS]:
            continue  # still running
        c.set_tag(run.info.run_id, "reaped",
                  f"process {tags[TAG_PID]} on {host} is gone (found by {found_by} at "
                  f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}); ended KILLED")
        c.set_terminated(run.info.run_id, status="KILLED")
        reaped.append(run.info.run_id)
    return reaped


@contextlib.contextmanager
def start_run(run_name: str | None = None, tags: dict | None = None, params: dict | None = None,
              settings: Settings | None = None):
    """An MLflow run that ends FINISHED only when the block completes; FAILED otherwise.

    Any exception, KeyboardInterrupt or SIGTERM ends it FAILED (with the error
    as the ``failure`` tag) and is re-raised. SIGKILL cannot be caught: the run
    records its owner (``owner_tags``), and with ``settings`` the runs of dead
    owners are reaped first (``reap_dead_runs``).
    """
    import mlflow

    if settings is not None:
        reap_dead_runs(settings, found_by=run_name or "a new run")
    with sigterm_raises() as received:
        try:
            # Inside the try: a signal landing just after the run was created still fails it
            # (otherwise MLflow's atexit hook would end it FINISHED).
            run = mlflow.start_run(run_name=run_name, tags={**owner_tags(), **(tags or {})})
            if params:
                log_params(params)
            yield run
            if received["signum"] is not None:  # its Terminated was swallowed (see pending_signal)
                raise Terminated(received["signum"])
        except BaseException as e:
            signum = received["signum"]
            surfaced = signum is not None and not isinstance(e, Terminated)
            failure = f"{type(e).__name__}: {e}"
            if surfaced:
                failure = f"{Terminated(signum)} (surfaced as {failure})"
            # Keep the original error: a broken tracking store must not mask it.
            if mlflow.active_run() is not None:
                with contextlib.suppress(Exception):
                    mlflow.set_tag("failure", failure[:4000])
                with contextlib.suppress(Exception):
                    mlflow.end_run(status="FAILED")
            if surfaced:
                raise Terminated(signum) from e
            raise
        else:
            mlflow.end_run(status="FINISHED")


def log_params(params: dict) -> None:
    """Log params (stringified; MLflow caps values at 6000 characters)."""
    import mlflow

    mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})


def set_tags(tags: dict) -> None:
    import mlflow

    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_metrics(metrics: dict, step: int | None = None, prefix: str = "", model_id: str | None = None) -> None:
    """Log the finite numeric entries of ``metrics`` (linked to the logged model ``model_id`` if given)."""
    import math
    import numbers

    import mlflow

    clean = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real):  # numpy scalars are Real too
            continue
        if math.isfinite(float(v)):
            clean[f"{prefix}{k}"] = float(v)
    if clean:
        mlflow.log_metrics(clean, step=step, model_id=model_id)


def log_json_artifact(obj, name: str, artifact_path: str | None = None, run_id: str | None = None, settings=None) -> None:
    """Write ``obj`` as JSON file ``name`` into the run's artifacts (the active run unless ``run_id``)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, name)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=str)
        log_artifact(path, artifact_path, run_id, settings)


def log_text_artifact(text: str, name: str, artifact_path: str | None = None, run_id: str | None = None, settings=None) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        log_artifact(path, artifact_path, run_id, settings)


def log_bytes_artifact(data: bytes, name: str, artifact_path: str | None = None) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, name)
        with open(path, "wb") as f:
            f.write(data)
        log_artifact(path, artifact_path)


def log_artifact(path: str, artifact_path: str | None = None, run_id: str | None = None, settings=None) -> None:
    import mlflow

    if run_id is None:
        mlflow.log_artifact(path, artifact_path)
    else:
        c = client(settings) if settings is not None else mlflow.MlflowClient()
        c.log_artifact(run_id, path, artifact_path)


def flatten_numbers(obj, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested summary as MLflow metric names ``a.b.c`` (booleans as 0/1)."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.update(flatten_numbers(value, f"{prefix}{key}."))
    elif isinstance(obj, (bool, int, float)):
        name = "".join(ch if ch.isalnum() or ch in "._-/ " else "_" for ch in prefix.rstrip("."))
        out[name] = float(obj)
    return out


def log_stage(settings: Settings, stage: str, summary: dict, files: dict[str, str] | None = None) -> str:
    """One MLflow run per data stage: its counts as metrics, its summary (and small files) as artifacts.

    So every dump's ingest, graph, label, wit, shard and infer leave a trace beside the
    training runs, searchable by the ``stage`` and ``dump_date`` tags.
    """
    configure(settings)
    tags = {"stage": stage, "dump_date": settings.paths.dump_date, "taxonomy": settings.label.taxonomy,
            "heuristics": settings.label.heuristics}
    with start_run(run_name=f"{stage}-{settings.paths.dump_date}", tags=tags, settings=settings) as run:
        log_metrics(flatten_numbers(summary))
        log_json_artifact(summary, "summary.json", artifact_path=stage)
        for name, path in (files or {}).items():
            import fsspec

            with fsspec.open(path, "r", encoding="utf-8") as f:
                log_text_artifact(f.read(), name, artifact_path=stage)
    return run.info.run_id
