"""The Airflow operator that runs one pipeline stage as its own process group.

``execute`` launches ``python -m pipeline <stage>`` (``pipeline.stages.launch``)
with the run's pinned dump date and its params as settings, and returns the
summary the stage wrote to its summary file. ``on_kill`` (Airflow calls it when
the task is terminated or times out) kills the stage's whole process group, so
no Spark or training process outlives the task and races its retry. Each run
adds the exact location of what the stage wrote to the stage's asset alias
(``wiki_image_topics.<stage>``), so downstream DAGs can be scheduled on it and
read the path and dump date from the asset event.
"""

from __future__ import annotations

import logging
from pathlib import Path

from airflow.sdk import Asset, AssetAlias, BaseOperator

from pipeline import lineage
from pipeline.config import load_settings
from pipeline.layout import Layout
from pipeline.stages import kill_group, launch

log = logging.getLogger(__name__)

# DAG params -> settings; an empty param keeps the configured default.
PARAM_SETTINGS = {
    "taxonomy": "label.taxonomy",
    "heuristics": "label.heuristics",
    "epochs": "train.epochs",
}


def alias(stage: str) -> AssetAlias:
    return AssetAlias(name=f"wiki_image_topics.{stage}")


def param_overrides(params) -> dict[str, str]:
    return {key: str(params[p]) for p, key in PARAM_SETTINGS.items() if params.get(p) not in (None, "")}


def uri(path: str) -> str:
    return path if "://" in path else Path(path).resolve().as_uri()


def output_uri(stage: str, settings, summary: dict) -> str:
    """The URI of what ``stage`` wrote for this run: a lake path, or the registered model version."""
    if stage == "train":
        return summary["model_uri"]
    if stage == "fetch":
        return uri(settings.paths.dumps_dir)
    return uri(lineage.OUTPUTS[stage](Layout.from_settings(settings))[0])


class StageOperator(BaseOperator):
    """Runs pipeline stage ``stage`` for the dump date ``dump_date`` (templated; usually an XComArg)."""

    template_fields = ("dump_date", "model_uri")
    ui_color = "#e8f4ea"

    def __init__(self, *, stage: str, dump_date, model_uri: str = "", **kwargs):
        kwargs.setdefault("outlets", [alias(stage)])
        super().__init__(**kwargs)
        self.stage, self.dump_date, self.model_uri = stage, dump_date, model_uri
        self._proc = None

    def overrides(self, context) -> dict[str, str]:
        params = context["params"]
        out = {**param_overrides(params), "paths.dump_date": str(self.dump_date)}
        if self.model_uri not in ("", "None"):  # None: train left no champion; infer then says so
            out["tracking.model_uri"] = self.model_uri
        return out

    def execute(self, context):
        overrides = self.overrides(context)
        summary = launch(self.stage, overrides, force=bool(context["params"].get("force")),
                         on_start=self._started)
        self._proc = None
        if summary.get("skipped"):
            log.info("%s skipped: %s", self.stage, summary.get("skip_reason"))
        else:
            settings = load_settings(overrides)
            context["outlet_events"][alias(self.stage)].add(
                Asset(uri=output_uri(self.stage, settings, summary)),
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
