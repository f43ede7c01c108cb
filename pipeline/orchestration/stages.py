"""Every pipeline stage, one record each: the only place a stage's facts live.

The CLI (``python -m pipeline <stage>``), the lineage that decides whether a
stage may skip (``pipeline.orchestration.lineage``), the Airflow operator that
runs it (``pipeline.orchestration.operator``) and the DAG read these records;
the DAG's dependencies are each record's ``upstream`` stages and the stages it
``takes`` a setting from, so stages that need nothing of each other may run side
by side. Adding a stage is adding one record here and the module it names.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable

from pipeline.inputs.store import store_root
from pipeline.lake.layout import Layout

# The Airflow pool and queue of the stages that want the GPU.
GPU_POOL = os.environ.get("WIKI_TOPICS_GPU_POOL", "gpu")
GPU_QUEUE = os.environ.get("WIKI_TOPICS_GPU_QUEUE", "gpu")
# Each stage adds the exact location of its output to the asset alias <ASSET_PREFIX>.<stage>.
ASSET_PREFIX = "wiki_image_topics"


def uri(path: str) -> str:
    return path if "://" in path else Path(path).resolve().as_uri()


def first_output(settings, summary: dict, stage: "Stage") -> str:
    """The usual asset: where the stage's first output lives in the lake."""
    return uri(stage.outputs(Layout.from_settings(settings))[0])


@dataclass(frozen=True, kw_only=True)
class Stage:
    """One stage's facts. The fields without a default are facts every stage must state."""

    name: str
    entry: str  # "module:function", called with Settings, returns the stage's summary dict
    help: str
    # The stages whose recorded fingerprints its output depends on.
    upstream: tuple[str, ...]
    # The settings its output depends on: whole sections or single fields. Politeness, paths and
    # engine sizes (Spark memory, download threads) change how a stage runs, not what it writes.
    settings: tuple[str, ...]
    # Whether the taxonomy file's hash is one of its inputs.
    reads_taxonomy: bool
    # What must still be on disk for a recorded summary to stand for its output ([]: nothing in the lake).
    outputs: Callable[[Layout], list[str]]
    # The URI its asset event points at: (settings, summary, this record) -> a lake path or model URI.
    asset: Callable[[object, dict, "Stage"], str]
    # Whether it runs in the GPU pool and queue (else Airflow's default pool and queue).
    gpu: bool
    # Its Airflow execution_timeout at full scale (3.9M images, 11M categories).
    timeout_hours: float
    # Settings it takes at run time from a finished stage's summary: {"section.field": (stage, summary key)}.
    takes: dict[str, tuple[str, str]] = field(default_factory=dict)
    # "module:function" giving inputs of its output beyond settings and upstream (infer: the model version).
    extra_inputs: str = ""
    # Whether the labeler's rules file (when the labeler has rules) is one of its inputs.
    reads_label_rules: bool = False
    # Runs every time and checks its own files: its fingerprint is their checksums (fetch, the root).
    verifies_itself: bool = False
    # It opens MLflow runs of its own; the others get one from the CLI.
    own_mlflow_run: bool = False
    # Files logged on the MLflow run the CLI opens for it: name -> lake path.
    artifacts: Callable[[Layout], dict[str, str]] = lambda layout: {}
    # Longer text for `python -m pipeline <stage> --help`.
    doc: str = ""

    def load(self, entry: str | None = None):
        module, func = (entry or self.entry).split(":")
        return getattr(importlib.import_module(module), func)

    def lineage_inputs(self, settings) -> dict:
        return self.load(self.extra_inputs)(settings) if self.extra_inputs else {}

    @property
    def needs(self) -> tuple[str, ...]:
        """The stages that must finish first: its upstream, and those it takes a setting from."""
        return tuple(dict.fromkeys([*self.upstream, *(up for up, _ in self.takes.values())]))

    @property
    def pool(self) -> str | None:
        return GPU_POOL if self.gpu else None

    @property
    def queue(self) -> str | None:
        return GPU_QUEUE if self.gpu else None

    @property
    def timeout(self) -> timedelta:
        """``timeout_hours``, or WIKI_TOPICS_TIMEOUT_HOURS_<STAGE> where set."""
        hours = os.environ.get(f"WIKI_TOPICS_TIMEOUT_HOURS_{self.name.upper()}", self.timeout_hours)
        return timedelta(hours=float(hours))

    @property
    def asset_alias(self) -> str:
        return f"{ASSET_PREFIX}.{self.name}"

    def asset_uri(self, settings, summary: dict) -> str:
        return self.asset(settings, summary, self)


FETCH_DOC = """\
Resolves the dump date (--dump-date YYYYMMDD, or `latest`: the newest date on
<fetch.dumps_url>/<wiki>/ whose dumpstatus.json says every needed job is done;
dates in progress or failed are skipped) and downloads its tables into
paths.dumps_dir, then the WIT files (fetch.wit_files from fetch.wit_url) into
paths.wit_dir. Each file is written as <name>.part, resumed with HTTP Range
after a dropped connection, and renamed only when its size and sha1 (or md5)
match; WIT files must be complete gzip streams of the announced length. Files
already verified are not downloaded again. At most fetch.connections
connections, USER_AGENT on every request, Retry-After honoured.
Settings: fetch.dumps_url (DUMPS_URL), fetch.wit_url (WIT_URL),
fetch.wit_files (WIT_FILES), fetch.categorylinks_layout, fetch.connections,
fetch.keep_dumps (KEEP_DUMPS); `python -m pipeline config` lists them all."""

STAGES = {
    s.name: s
    for s in [
        Stage(name="fetch", entry="pipeline.inputs.fetch:run",
              help="find a complete Commons dump, download and verify it and WIT", doc=FETCH_DOC,
              upstream=(), settings=("fetch.categorylinks_layout", "fetch.wit_files", "paths.wiki"),
              reads_taxonomy=False, verifies_itself=True, outputs=lambda layout: [],
              asset=lambda settings, summary, stage: uri(settings.paths.dumps_dir),
              gpu=False, timeout_hours=6),
        Stage(name="ingest", entry="spark_jobs.ingest_dumps:run", help="parse Commons SQL dumps into Parquet tables",
              upstream=("fetch",), settings=("ingest", "spark.max_reject_share", "fetch.categorylinks_layout"),
              reads_taxonomy=False,
              outputs=lambda layout: [layout.ingest(t) for t in ("categories", "category_edges", "file_links")],
              asset=first_output, gpu=False, timeout_hours=4),
        Stage(name="graph", entry="spark_jobs.category_graph:run", help="category depth by BFS from CommonsRoot",
              upstream=("ingest",), settings=("label.root",), reads_taxonomy=False,
              outputs=lambda layout: [layout.category_depth], asset=first_output, gpu=False, timeout_hours=2),
        Stage(name="label", entry="spark_jobs.label_topics:run", help="topic labels for categories and files",
              upstream=("graph",), settings=("label",), reads_taxonomy=True, reads_label_rules=True,
              outputs=lambda layout: [layout.labels("file_labels"), layout.labels("category_labels")],
              artifacts=lambda layout: {"stats.json": layout.labels("stats.json")},
              asset=first_output, gpu=False, timeout_hours=4),
        Stage(name="wit", entry="spark_jobs.wit_images:run",
              help="English Commons images of WIT, one row per image, split",
              upstream=("fetch", "label"), settings=("wit", "spark.max_reject_share"), reads_taxonomy=True,
              outputs=lambda layout: [layout.wit_images], asset=first_output, gpu=False, timeout_hours=2),
        Stage(name="shard", entry="spark_jobs.shard_images:run",
              help="download, resize and write WebDataset shards",
              upstream=("wit",), settings=("shard.thumb_width", "shard.thumbnail_steps", "shard.originals",
                                           "shard.jpeg_quality", "shard.min_side", "shard.max_pixels",
                                           "shard.retry_transient"),
              reads_taxonomy=False, outputs=lambda layout: [layout.image_index], asset=first_output,
              gpu=False, timeout_hours=48),
        # Features of every stored image under the backbone's fingerprint, next to the image store: the
        # output is not per run, so nothing in the lake stands for it; a rerun embeds only what is missing.
        Stage(name="embed", entry="training.embed:run",
              help="the backbone's image features of every stored image of the run, computed once",
              upstream=("shard",), settings=(), reads_taxonomy=False,
              extra_inputs="training.backbone:lineage_inputs", outputs=lambda layout: [],
              asset=lambda settings, summary, stage: uri(summary.get("features") or store_root(settings)),
              gpu=True, timeout_hours=12),
        Stage(name="train", entry="training.train:run",
              help="train the classifier (whole, or its heads on stored features), log and register it in MLflow",
              own_mlflow_run=True, upstream=("shard", "embed"), settings=("train", "tracking.model_name", "tracking.promote_min_margin"),
              reads_taxonomy=True, outputs=lambda layout: [],  # the model lives in MLflow's registry
              asset=lambda settings, summary, stage: summary["model_uri"], gpu=True, timeout_hours=24),
        # infer predicts with the version the champion gate left, never simply the model just trained.
        Stage(name="infer", entry="spark_jobs.batch_inference:run", help="topic distributions for all images",
              upstream=("shard",), settings=(), reads_taxonomy=False,
              takes={"tracking.model_uri": ("train", "champion_uri")},
              extra_inputs="spark_jobs.batch_inference:model_inputs",
              outputs=lambda layout: [layout.predictions], asset=first_output, gpu=True, timeout_hours=12),
        Stage(name="report", entry="spark_jobs.data_study:run", help="HTML data-study report, logged to MLflow",
              own_mlflow_run=True, upstream=("wit", "shard", "train", "infer"), settings=(), reads_taxonomy=True,
              outputs=lambda layout: [layout.reports], asset=first_output, gpu=False, timeout_hours=2),
    ]
}

ORDER = list(STAGES)


def describe(settings) -> dict[str, dict]:
    """Every stage's facts for these settings, as ``python -m pipeline stages`` prints them."""
    layout = Layout.from_settings(settings)
    return {s.name: {"entry": s.entry, "help": s.help, "needs": list(s.needs), "upstream": list(s.upstream),
                     "takes": s.takes, "settings": list(s.settings), "reads_taxonomy": s.reads_taxonomy,
                     "outputs": s.outputs(layout), "pool": s.pool, "queue": s.queue,
                     "timeout_hours": s.timeout.total_seconds() / 3600, "asset_alias": s.asset_alias}
            for s in STAGES.values()}


def mermaid() -> str:
    """The stages' graph as the records define it (Mermaid): solid arrows carry fingerprints
    (``upstream``), dotted ones a setting taken at run time (``takes``)."""
    lines = ["flowchart TD"]
    for stage in STAGES.values():
        lines += [f"    {up} --> {stage.name}" for up in stage.upstream]
        lines += [f"    {up} -. {key} .-> {stage.name}" for up, key in stage.takes.values()]
    return "\n".join(lines) + "\n"
