"""wiki_topics: Commons dumps -> category graph -> topic labels -> WIT shards -> model -> predictions.

Each task launches one pipeline stage as its own process (``python -m pipeline
<stage>``) and passes on only the stage's small JSON summary. The dump date
comes from the run's ``dump_date`` param, else the ``DUMP_DATE`` setting; the
taxonomy and heuristics from params or settings. Every stage updates an asset,
so downstream DAGs (reports, exports) can be scheduled on them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project's packages

from pipeline.stages import launch  # noqa: E402

ASSETS = {
    name: Asset(name=f"wiki_image_topics.{name}", uri=f"file:///wiki-image-topics/{path}")
    for name, path in {
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


def _stage(name: str, *upstream_summaries, **extra: str) -> dict:
    return launch(name, {**_overrides(), **extra})


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
        "dump_date": Param("", type="string", description="Commons dump date YYYYMMDD; empty: DUMP_DATE setting"),
        "taxonomy": Param("", type="string", description="taxonomy version, e.g. v1.3; empty: setting"),
        "heuristics": Param("", type="string", description="e.g. headJ+depth; empty: setting"),
        "epochs": Param("", type=["string", "integer"], description="training epochs; empty: setting"),
    },
)
def wiki_topics():
    @task(outlets=[ASSETS["ingest"]])
    def ingest() -> dict:
        return _stage("ingest")

    @task(outlets=[ASSETS["graph"]])
    def graph(ingested: dict) -> dict:
        return _stage("graph", ingested)

    @task(outlets=[ASSETS["label"]])
    def label(graphed: dict) -> dict:
        return _stage("label", graphed)

    @task(outlets=[ASSETS["wit"]])
    def wit(labeled: dict) -> dict:
        return _stage("wit", labeled)

    @task(outlets=[ASSETS["shard"]])
    def shard(images: dict) -> dict:
        return _stage("shard", images)

    @task(outlets=[ASSETS["train"]])
    def train(shards: dict) -> dict:
        return _stage("train", shards)

    @task(outlets=[ASSETS["infer"]])
    def infer(trained: dict) -> dict:
        # Predict with the model this run trained, whatever the aliases say.
        return _stage("infer", trained, **{"tracking.model_uri": trained["model_uri"]})

    @task(outlets=[ASSETS["report"]])
    def report(predicted: dict) -> dict:
        return _stage("report", predicted)

    report(infer(train(shard(wit(label(graph(ingest())))))))


wiki_topics()
