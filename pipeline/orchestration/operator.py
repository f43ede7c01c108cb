"""The Airflow operator that runs one pipeline stage as its own process group.

``execute`` launches ``python -m pipeline <stage>``
(``pipeline.orchestration.runner.launch``) with the run's pinned dump date and
its params as settings, and returns the summary the stage wrote to its summary
file. ``on_kill`` (Airflow calls it when the task is terminated or times out)
kills the stage's whole process group, so no Spark or training process outlives
the task and races its retry. Its pool, queue, timeout and asset come from the
stage's record (``pipeline.orchestration.stages``): each run adds the exact
location of what the stage wrote to the stage's asset alias
(``wiki_image_topics.<stage>``), so downstream DAGs can be scheduled on it and
read the path and dump date from the asset event.
"""

from __future__ import annotations

import logging

from airflow.sdk import Asset, AssetAlias, BaseOperator

from pipeline.config import load_settings
from pipeline.orchestration.runner import kill_group, launch
from pipeline.orchestration.stages import STAGES

log = logging.getLogger(__name__)

# DAG params -> settings; an empty param keeps the configured default.
PARAM_SETTINGS = {
    "taxonomy": "label.taxonomy",
    "heuristics": "label.heuristics",
    "epochs": "train.epochs",
}


def param_overrides(params) -> dict[str, str]:
    return {key: str(params[p]) for p, key in PARAM_SETTINGS.items() if params.get(p) not in (None, "")}


def from_summary(stage: str, key: str) -> str:
    """The template that reads ``key`` from a finished stage task's summary (its return value)."""
    return f"{{{{ ti.xcom_pull(task_ids='{stage}')['{key}'] }}}}"


class StageOperator(BaseOperator):
    """Runs pipeline stage ``stage`` for the dump date ``dump_date`` (templated; usually an XComArg).

    The settings the stage's record ``takes`` from finished stages are templated
    pulls of their summaries (``infer``: the champion ``train`` left).
    """

    template_fields = ("dump_date", "taken")
    ui_color = "#e8f4ea"

    def __init__(self, *, stage: str, dump_date, **kwargs):
        record = STAGES[stage]
        kwargs.setdefault("outlets", [AssetAlias(name=record.asset_alias)])
        kwargs.setdefault("execution_timeout", record.timeout)
        if record.gpu:
            kwargs.setdefault("pool", record.pool)
            kwargs.setdefault("queue", record.queue)
        super().__init__(**kwargs)
        self.stage, self.dump_date = stage, dump_date
        self.taken = {setting: from_summary(*source) for setting, source in record.takes.items()}
        self._proc = None

    def overrides(self, context) -> dict[str, str]:
        params = context["params"]
        out = {**param_overrides(params), "paths.dump_date": str(self.dump_date)}
        for key, value in self.taken.items():
            if value not in ("", "None"):  # None: e.g. train left no champion; infer then says so
                out[key] = value
        return out

    def execute(self, context):
        overrides = self.overrides(context)
        summary = launch(self.stage, overrides, force=bool(context["params"].get("force")),
                         on_start=self._started)
        self._proc = None
        if summary.get("skipped"):
            log.info("%s skipped: %s", self.stage, summary.get("skip_reason"))
        else:
            record = STAGES[self.stage]
            context["outlet_events"][AssetAlias(name=record.asset_alias)].add(
                Asset(uri=record.asset_uri(load_settings(overrides), summary)),
                extra={"dump_date": str(self.dump_date), "stage": self.stage,
                       "fingerprint": summary.get("fingerprint")},
            )
        return summary

    def _started(self, proc) -> None:
        self._proc = proc

    def on_kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            log.warning("killing stage %s (process group %d)", self.stage, self._proc.pid)
            kill_group(self._proc)
