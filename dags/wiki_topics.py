"""wiki_topics: Commons dumps -> category graph -> topic labels -> WIT shards -> model -> predictions.

Each stage task (``StageOperator``) launches one pipeline stage as its own
process group (``python -m pipeline <stage>``) and passes on only the summary
the stage wrote. Killing or timing out a task kills its stage's processes.

The run's dump date is resolved once, by the first task, and pinned for every
stage: the run's ``dump_date`` param (YYYYMMDD or ``latest``), else the newest
complete dump on or before the run's logical date (scheduled and backfill
runs), else the ``DUMP_DATE`` setting. When every stage's recorded
fingerprint says its output is up to date for that date, the run
short-circuits: every later task is skipped. Otherwise each stage itself
skips when its own inputs did not change. The ``force`` param runs them all.

The tasks and their dependencies come from the stages' records
(``pipeline.orchestration.stages``): a stage waits for its upstream stages and
for those it takes a setting from (``infer`` predicts with the version the
champion gate of ``train`` left, never simply the model just trained), so
stages that need nothing of each other run side by side. Each record also gives
its task's pool and queue (``train`` and ``infer``: the GPU pool,
``WIKI_TOPICS_GPU_POOL``, default ``gpu``), its timeout
(``WIKI_TOPICS_TIMEOUT_HOURS_<STAGE>`` overrides) and its asset alias
``wiki_image_topics.<stage>``, so downstream DAGs can be scheduled on, for
example, the predictions.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project's packages

from pipeline.config import load_settings  # noqa: E402
from pipeline.inputs import fetch as fetch_stage  # noqa: E402
from pipeline.orchestration import lineage  # noqa: E402
from pipeline.orchestration.operator import StageOperator, param_overrides  # noqa: E402
from pipeline.orchestration.stages import STAGES  # noqa: E402

log = logging.getLogger(__name__)


@dag(
    dag_id="wiki_topics",
    # WIKI_TOPICS_SCHEDULE: a cron expression or preset; empty: no schedule (runs triggered by hand or the API)
    schedule=os.environ.get("WIKI_TOPICS_SCHEDULE", "@daily") or None,
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
        "heuristics": Param("", type="string", description="e.g. refined-rules, refined or headJ+depth; empty: setting"),
        "epochs": Param("", type=["string", "integer"], description="training epochs; empty: setting"),
        "force": Param(False, type="boolean",
                       description="run every stage even where its recorded fingerprint says it is up to date"),
    },
)
def wiki_topics():
    @task.short_circuit(execution_timeout=timedelta(minutes=10))
    def resolve_dump():
        """The run's dump date, fixed once; False (skip the rest) when every stage is up to date for it."""
        context = get_current_context()
        params = context["params"]
        settings = load_settings(param_overrides(params))
        date = fetch_stage.run_date(settings, params.get("dump_date"), context.get("logical_date"))
        done = lineage.pipeline_done(settings, date)
        if done and not params.get("force"):
            log.info("dump %s: every stage is up to date with the same inputs (report fingerprint %s, "
                     "finished %s); skipping every task of this run; set the param force=true to run them",
                     date, done["fingerprint"], done.get("finished_at"))
            return False
        log.info("this run processes dump %s", date)
        return date

    date = resolve_dump()
    tasks = {name: StageOperator(task_id=name, stage=name, dump_date=date) for name in STAGES}
    for name, stage in STAGES.items():
        for needed in stage.needs:
            tasks[needed] >> tasks[name]


wiki_topics()
