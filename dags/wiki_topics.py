"""wiki_topics: Commons dumps -> category graph -> topic labels -> WIT shards -> model -> predictions.

Each task launches one pipeline stage as its own process (``python -m pipeline
<stage>``) and passes on only the stage's small JSON summary.

The run's dump date is resolved once, by the first task, and pinned for every
stage: the run's ``dump_date`` param (YYYYMMDD or ``latest``), else the newest
complete dump on or before the run's logical date (scheduled and backfill
runs), else the ``DUMP_DATE`` setting. A date that an earlier run already
processed with the same settings short-circuits the run: every later task is
skipped (the ``force`` param runs it anyway). ``fetch`` then downloads and
verifies that dump and WIT. Every stage updates an asset, so downstream DAGs
(reports, exports) can be scheduled on them.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project's packages

from pipeline import fetch as fetch_stage  # noqa: E402
from pipeline import runs  # noqa: E402
from pipeline.config import load_settings  # noqa: E402
from pipeline.stages import launch  # noqa: E402

log = logging.getLogger(__name__)

ASSETS = {
    name: Asset(name=f"wiki_image_topics.{name}", uri=f"file:///wiki-image-topics/{path}")
    for name, path in {
        "fetch": "dumps",
        "ingest": "ingest",
        "graph": "graph/category_depth",
        "label": "labels",
        "wit": "wit/images",
        "shard": "shards",
        "train": "mlflow/wiki-image-topics",
        "infer": "predictions",
        "report": "reports",
    }.items()
}


def _overrides() -> dict[str, str]:
    """Settings for this run from its params; empty params keep the configured defaults."""
    params = get_current_context()["params"]
    out = {}
    for param, key in {
        "dump_date": "paths.dump_date",
        "taxonomy": "label.taxonomy",
        "heuristics": "label.heuristics",
        "epochs": "train.epochs",
    }.items():
        if params.get(param) not in (None, ""):
            out[key] = str(params[param])
    return out


def _stage(name: str, dump_date: str, *upstream_summaries, **extra: str) -> dict:
    return launch(name, {**_overrides(), "paths.dump_date": dump_date, **extra})


@dag(
    dag_id="wiki_topics",
    schedule=os.environ.get("WIKI_TOPICS_SCHEDULE", "@daily"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["wiki-image-topics"],
    doc_md=__doc__,
    default_args={"retries": int(os.environ.get("WIKI_TOPICS_RETRIES", "1"))},
    params={
        "dump_date": Param("", type="string",
                           description="Commons dump date YYYYMMDD or 'latest'; empty: from the logical date, "
                                       "else the DUMP_DATE setting"),
        "taxonomy": Param("", type="string", description="taxonomy version, e.g. v1.3; empty: setting"),
        "heuristics": Param("", type="string", description="e.g. headJ+depth; empty: setting"),
        "epochs": Param("", type=["string", "integer"], description="training epochs; empty: setting"),
        "force": Param(False, type="boolean",
                       description="run every stage even if this dump was processed with the same settings"),
    },
)
def wiki_topics():
    @task.short_circuit
    def resolve_dump():
        """The run's dump date, fixed once; False (skip the rest) when it was already processed."""
        context = get_current_context()
        params = context["params"]
        settings = load_settings({k: v for k, v in _overrides().items() if k != "paths.dump_date"})
        date = fetch_stage.run_date(settings, params.get("dump_date"), context.get("logical_date"))
        done = runs.processed(settings, date)
        if done and not params.get("force"):
            log.info("dump %s was already processed with the same settings (fingerprint %s, finished %s): "
                     "skipping every stage of this run; set the param force=true to run them anyway",
                     date, done["fingerprint"], done["finished_at"])
            return False
        log.info("this run processes dump %s", date)
        return date

    @task(outlets=[ASSETS["fetch"]])
    def fetch(date: str) -> dict:
        return _stage("fetch", date)

    @task(outlets=[ASSETS["ingest"]])
    def ingest(date: str, fetched: dict) -> dict:
        return _stage("ingest", date, fetched)

    @task(outlets=[ASSETS["graph"]])
    def graph(date: str, ingested: dict) -> dict:
        return _stage("graph", date, ingested)

    @task(outlets=[ASSETS["label"]])
    def label(date: str, graphed: dict) -> dict:
        return _stage("label", date, graphed)

    @task(outlets=[ASSETS["wit"]])
    def wit(date: str, labeled: dict) -> dict:
        return _stage("wit", date, labeled)

    @task(outlets=[ASSETS["shard"]])
    def shard(date: str, images: dict) -> dict:
        return _stage("shard", date, images)

    @task(outlets=[ASSETS["train"]])
    def train(date: str, shards: dict) -> dict:
        return _stage("train", date, shards)

    @task(outlets=[ASSETS["infer"]])
    def infer(date: str, trained: dict) -> dict:
        # Predict with the model this run trained, whatever the aliases say.
        return _stage("infer", date, trained, **{"tracking.model_uri": trained["model_uri"]})

    @task(outlets=[ASSETS["report"]])
    def report(date: str, predicted: dict) -> dict:
        summary = _stage("report", date, predicted)
        settings = load_settings({**_overrides(), "paths.dump_date": date})
        summary["run_record"] = runs.mark_processed(settings, date, {"report": summary.get("report")})
        return summary

    date = resolve_dump()
    report(date, infer(date, train(date, shard(date, wit(date, label(date, graph(date, ingest(date, fetch(date)))))))))


wiki_topics()
