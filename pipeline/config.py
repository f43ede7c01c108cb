"""All configuration in one typed place.

Every field has an embedded default that runs on one laptop (Spark local, SQLite
for MLflow, files under ./data). Each can be overridden by an environment
variable (the name in the field's metadata, e.g. ``SPARK_MASTER``) and then by
the CLI (``--set section.field=value``), so the same code runs against a Spark
cluster, a remote MLflow server and a shared filesystem.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.features.texts import DEFAULT_FIELDS

# The checkout (or image folder) whose packages launched stages and Spark executors import.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default, changes_outputs: bool = True, choices: tuple = (), **kw):
    """A setting read from environment variable ``name``; ``changes_outputs=False`` keeps it out of the
    stages' fingerprints (``pipeline.orchestration.lineage``): changing it reruns nothing. ``choices``:
    the only values it takes (checked when the settings are loaded)."""
    return field(default=default, metadata={"env": name, "changes_outputs": changes_outputs, "choices": choices},
                 **kw)


@dataclass
class PathsConfig:
    data_root: str = _env("DATA_ROOT", "data")
    state_dir: str = _env("STATE_DIR", ".state")
    dumps_dir: str = _env("DUMPS_DIR", "data/sample/dumps")
    wit_dir: str = _env("WIT_DIR", "data/sample/wit")
    dump_date: str = _env("DUMP_DATE", "20260101")
    wiki: str = _env("WIKI", "commonswiki")
    # The image store, shared by every dump date, taxonomy and heuristics ("" = <data_root>/images).
    images_root: str = _env("IMAGES_ROOT", "")


WIT_TRAIN_FILES = tuple(f"wit_v1.train.all-{i:05d}-of-00010.tsv.gz" for i in range(10))


@dataclass
class FetchConfig:
    """Where the published inputs come from and how politely they are fetched."""

    # Wikimedia's dumps server (or a mirror); "" = offline: use what is in dumps_dir.
    dumps_url: str = _env("DUMPS_URL", "https://dumps.wikimedia.org")
    # "current": categorylinks with cl_target_id only, so linktarget is required; "legacy": cl_to.
    categorylinks_layout: str = _env("CATEGORYLINKS_LAYOUT", "current")
    # WIT's publisher; "" = use what is in wit_dir.
    wit_url: str = _env("WIT_URL", "https://storage.googleapis.com/gresearch/wit/")
    wit_files: tuple = _env("WIT_FILES", WIT_TRAIN_FILES)
    # Wikimedia's dumps servers allow 3 connections per IP and User-Agent.
    connections: int = _env("FETCH_CONNECTIONS", 2)
    timeout_s: float = _env("FETCH_TIMEOUT_S", 60.0)
    # Network errors (resets, timeouts, 5xx) per file before the stage fails; each resumes with Range.
    max_retries: int = _env("FETCH_MAX_RETRIES", 8)
    # Whole re-downloads after a checksum mismatch before the stage fails.
    checksum_retries: int = _env("FETCH_CHECKSUM_RETRIES", 1)
    backoff_s: float = _env("FETCH_BACKOFF_S", 2.0)
    max_backoff_s: float = _env("FETCH_MAX_BACKOFF_S", 120.0)
    max_retry_after_s: float = _env("FETCH_MAX_RETRY_AFTER_S", 3600.0)
    progress_every_s: float = _env("FETCH_PROGRESS_EVERY_S", 30.0)
    # Keep the newest N dump dates in dumps_dir after a fetch (0 = keep all).
    keep_dumps: int = _env("KEEP_DUMPS", 0)


@dataclass
class SparkConfig:
    master: str = _env("SPARK_MASTER", "local[*]")
    driver_memory: str = _env("SPARK_DRIVER_MEMORY", "2g")
    shuffle_partitions: int = _env("SPARK_SHUFFLE_PARTITIONS", 8)
    # Uncompressed bytes per chunk when a non-splittable .sql.gz is cut for parallel parsing.
    dump_chunk_bytes: int = _env("DUMP_CHUNK_BYTES", 64 * 1024 * 1024)
    # Threads with which the driver decodes each .sql.gz once to index it (rapidgzip);
    # 0: all its cores from 4 up, else 1 (see pipeline.labels.sqldump.decode_threads).
    dump_decode_threads: int = _env("DUMP_DECODE_THREADS", 0)
    # Share of rejected rows above which a stage fails (0.0001 = 0.01%).
    max_reject_share: float = _env("MAX_REJECT_SHARE", 0.0001)
    # Extra JVM options for the driver. The demo and the tests, whose Spark jobs last seconds, use
    # "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC" (measured ~20% faster there); full-scale runs should not.
    java_options: str = _env("SPARK_JAVA_OPTIONS", "")
    # A JVM class-data-sharing archive of Spark's classes (`python -m pipeline spark-archive` writes
    # it). Every stage starts its own JVM; mapping the classes instead of loading them cut a
    # SparkSession's start from 5.8 s to 3.6 s here (docs/benchmarks.md). Ignored when missing or
    # built for another Spark or JDK.
    class_archive: str = _env("SPARK_CLASS_ARCHIVE", "")


@dataclass
class IngestConfig:
    # A gzip dump that ends before its end-of-stream marker fails the stage (an interrupted
    # download). True keeps what was read, for users who must salvage a dump.
    allow_truncated: bool = _env("INGEST_ALLOW_TRUNCATED", False)


@dataclass
class LabelConfig:
    taxonomy: str = _env("TAXONOMY", "v1.3")
    # The labeler that agrees best with people (README, "Labelers"); headJ+depth reproduces the 2022 labels.
    heuristics: str = _env("HEURISTICS", "refined-rules")
    root: str = _env("COMMONS_ROOT", "CommonsRoot")
    # A table of people's labels (columns as ../shared/commons_realgraph/dev_human.parquet): the
    # stage then logs how well its labels agree with them (pipeline.labels.quality). Scoring only.
    human_labels: str = _env("HUMAN_LABELS", "", changes_outputs=False)
    # Once the categories still to label have at most this many proposals, one Spark task labels
    # them all in dependency order (its memory grows with this number: about 0.5 GB of Python at
    # 1.5M, input included), instead of one round of Spark jobs per level. 0: rounds only. Same labels either way.
    tail_proposals: int = _env("LABEL_TAIL_PROPOSALS", 2_000_000, changes_outputs=False)


@dataclass
class WitConfig:
    language: str = _env("WIT_LANGUAGE", "en")
    mime_types: tuple = _env("WIT_MIME_TYPES", ("image/jpeg", "image/png"))
    # Fractions of train / validation / threshold / test; the rest of 1.0 goes to test.
    split_train: float = _env("SPLIT_TRAIN", 0.7)
    split_validation: float = _env("SPLIT_VALIDATION", 0.1)
    split_threshold: float = _env("SPLIT_THRESHOLD", 0.1)


@dataclass
class ShardConfig:
    """Downloading images into the image store: what is fetched, and how politely."""

    # Requested thumbnail width; snapped up to the next of Wikimedia's standard thumbnail
    # steps, since its CDN refuses other sizes (HTTP 429) since 2026. The store keeps what
    # was fetched at this width; training and inference resize when they read.
    thumb_width: int = _env("THUMB_WIDTH", 120)
    thumbnail_steps: tuple = _env("THUMBNAIL_STEPS", (20, 40, 60, 120, 250, 330, 500, 960, 1280, 1920, 3840))
    # Thumbnails come from this host (Wikimedia is moving them to thumb.wikimedia.org, same paths).
    thumb_host: str = _env("THUMB_HOST", "https://upload.wikimedia.org")
    originals: bool = _env("DOWNLOAD_ORIGINALS", False)
    # Images per store shard (tar).
    shard_size: int = _env("SHARD_SIZE", 1000)
    user_agent: str = _env(
        "USER_AGENT", "wiki-image-topics/0.1 (https://example.org/wiki-image-topics; set USER_AGENT) requests"
    )
    # Requests in flight per host. One process downloads for the whole stage, so this and the
    # bandwidth cap hold for the whole cluster.
    per_host_concurrency: int = _env("PER_HOST_CONCURRENCY", 2)
    bandwidth_bytes_per_s: int = _env("BANDWIDTH_BYTES_PER_S", 3_000_000)
    timeout_s: float = _env("HTTP_TIMEOUT_S", 30.0)
    max_retries: int = _env("HTTP_MAX_RETRIES", 5)
    # Rewrites https://upload.wikimedia.org (and thumb_host) URLs to a mirror (the demo's local server).
    mirror_url: str = _env("WIKI_MIRROR_URL", "")
    # Download threads; requests still wait for a per-host slot, so extra threads only check and
    # store images while others hold the connections. 0 = twice per_host_concurrency.
    download_threads: int = _env("DOWNLOAD_THREADS", 0)
    # Lock files that make per_host_concurrency hold across all processes of a machine ("" = temp dir).
    lock_dir: str = _env("HOST_LOCK_DIR", "")
    backoff_s: float = _env("HTTP_BACKOFF_S", 1.0)
    max_backoff_s: float = _env("HTTP_MAX_BACKOFF_S", 60.0)
    # A Retry-After longer than this gives up on the image (recorded, retried by a later run).
    max_retry_after_s: float = _env("HTTP_MAX_RETRY_AFTER_S", 300.0)
    max_bytes: int = _env("MAX_DOWNLOAD_BYTES", 50_000_000)
    # Decompression-bomb guard (pixels) and smallest usable source side.
    max_pixels: int = _env("MAX_IMAGE_PIXELS", 64_000_000)
    min_side: int = _env("MIN_IMAGE_SIDE", 16)
    # Only for sources wider than the thumbnail step (originals), re-encoded to that width.
    jpeg_quality: int = _env("JPEG_QUALITY", 90)
    progress_every_s: float = _env("PROGRESS_EVERY_S", 30.0)
    # Re-run: retry images whose last attempt failed transiently (timeout, 429, 5xx...).
    retry_transient: bool = _env("RETRY_TRANSIENT", True)
    # At most this many downloads per run (0: no cap), so a backfill of millions of images at two
    # connections spreads over nights: the first N of the plan in image_key order (a hash, so a
    # uniform sample); the rest are "missing" in the index until a later run fetches them.
    max_downloads: int = _env("MAX_DOWNLOADS", 0)


@dataclass
class TrainConfig:
    # Model input side; images are resized from the store when read, so changing it downloads nothing.
    image_size: int = _env("IMAGE_SIZE", 64)
    backbone: str = _env("BACKBONE", "B0")
    weights: str = _env("WEIGHTS", "imagenet")
    trainable: str = _env("TRAINABLE_LAYERS", "all")
    loss: str = _env("LOSS", "weighted_bce")
    focal_gamma: float = _env("FOCAL_GAMMA", 2.0)
    hierarchical: bool = _env("HIERARCHICAL_LABELS", True)
    batch_size: int = _env("BATCH_SIZE", 512)
    epochs: int = _env("EPOCHS", 15)
    learning_rate: float = _env("LEARNING_RATE", 1e-3)
    patience: int = _env("PATIENCE", 3)
    bn_momentum: float = _env("BN_MOMENTUM", 0.99)
    mixed_precision: bool = _env("MIXED_PRECISION", False)
    # Keras policy used when mixed_precision is on: mixed_bfloat16 (CPU, A100/H100) or mixed_float16.
    precision_policy: str = _env("MIXED_PRECISION_POLICY", "mixed_bfloat16")
    # "flat" (sigmoid head) or "chmcnn" (C-HMCNN(h) max-constraint head + MCLoss; needs hierarchical labels).
    head: str = _env("MODEL_HEAD", "flat")
    jit_compile: bool = _env("JIT_COMPILE", False)
    # What the model reads: "image" (pixels), "text" (the image's texts, pipeline.features.texts) or "image+text"
    # (training.inputs).
    inputs: str = _env("MODEL_INPUTS", "image", choices=("image", "text", "image+text"))
    # "finetune": train the whole model from pixels; "heads": only what sits above the image tower, on the
    # features the embed stage stored for the backbone (embed.backbone_uri); "auto": heads where those
    # features cover the run's images, else finetune (and every finetune_every-th heads run, when > 0).
    mode: str = _env("TRAIN_MODE", "auto", choices=("auto", "finetune", "heads"))
    finetune_every: int = _env("FINETUNE_EVERY", 0)
    # finetune: start the image tower from this registered model version's tower instead of train.weights
    # (e.g. models:/wiki-image-topics-v1.3@champion: continue from the current backbone); "" = train.weights.
    init_from: str = _env("TRAIN_INIT_FROM", "")
    # Batch size of heads training; 0: train.batch_size. Small dense layers keep a CPU busy only at large
    # batches (4096 at full scale: docs/benchmarks.md), but a small set then gets too few steps.
    heads_batch_size: int = _env("HEADS_BATCH_SIZE", 0)
    # Text fields, in order (pipeline.features.texts.FIELDS). Never the categories: the labels come from them.
    text_fields: str = _env("TEXT_FIELDS", DEFAULT_FIELDS)
    # Hashed vocabulary (words and character trigrams), tokens kept per field, embedding width.
    text_vocab: int = _env("TEXT_VOCAB", 32768)
    text_tokens: int = _env("TEXT_MAX_TOKENS", 48)
    text_dim: int = _env("TEXT_EMBEDDING_DIM", 32)
    # image+text only: share of training images whose text is dropped, and share whose pixels are
    # (never both), so the model still predicts when one of the two is missing.
    drop_text: float = _env("MODALITY_DROP_TEXT", 0.2)
    drop_image: float = _env("MODALITY_DROP_IMAGE", 0.1)
    workers: int = _env("LOADER_WORKERS", 2)
    # Loader workers as processes instead of threads (PIL decoding mostly releases the GIL anyway).
    use_multiprocessing: bool = _env("LOADER_MULTIPROCESSING", False)
    seed: int = _env("SEED", 0)


@dataclass
class EmbedConfig:
    """The embed stage: the image tower's features of every stored image, computed once per backbone."""

    # The registered model version whose image tower embeds (empty: the champion of
    # <tracking.model_name>-<taxonomy>; a heads champion carries its backbone's tower).
    backbone_uri: str = _env("BACKBONE_URI", "")
    batch_size: int = _env("EMBED_BATCH_SIZE", 256, changes_outputs=False)
    decode_threads: int = _env("EMBED_DECODE_THREADS", 2, changes_outputs=False)
    # Remove the features of every other backbone once this one's are complete (default: keep them).
    prune_other_backbones: bool = _env("EMBED_PRUNE_OTHER_BACKBONES", False, changes_outputs=False)


@dataclass
class TrackingConfig:
    tracking_uri: str = _env("MLFLOW_TRACKING_URI", "")
    experiment: str = _env("MLFLOW_EXPERIMENT", "wiki-image-topics")
    # Registered models are named <model_name>-<taxonomy> (one per label set; tracking.model_name()).
    model_name: str = _env("MLFLOW_MODEL_NAME", "wiki-image-topics")
    # The model batch inference uses; empty: the registered model's `champion` alias.
    model_uri: str = _env("MODEL_URI", "")
    # A challenger becomes champion when its test macro AUC(PR) >= the champion's on the same split + this.
    promote_min_margin: float = _env("PROMOTE_MIN_MARGIN", 0.0)


@dataclass
class ServeConfig:
    """The model server (``python -m serving``): what it serves, where, and its limits."""

    # Loopback by default: the compose file opens it to its network, behind a bearer token.
    host: str = _env("SERVE_HOST", "127.0.0.1")
    port: int = _env("SERVE_PORT", 8080)
    # The model to serve and follow; empty: models:/<tracking.model_name>-<taxonomy>@champion.
    model_uri: str = _env("SERVE_MODEL_URI", "")
    # The name in the URL: /v1/models/<name>:predict.
    name: str = _env("SERVE_NAME", "wiki-image-topics")
    # How often the alias is read; a new version is loaded beside the old one and swapped in when ready.
    watch_interval_s: float = _env("SERVE_WATCH_INTERVAL_S", 30.0)
    # Micro-batching: instances that arrive within max_wait_ms of the first are predicted together,
    # up to max_batch of them.
    max_batch: int = _env("SERVE_MAX_BATCH", 64)
    max_wait_ms: float = _env("SERVE_MAX_WAIT_MS", 3.0)
    # Per request: instances, and body bytes (base64 images included).
    max_instances: int = _env("SERVE_MAX_INSTANCES", 64)
    max_body_bytes: int = _env("SERVE_MAX_BODY_BYTES", 8_000_000)
    # Decompression-bomb guard for images sent or fetched (pixels, read from the header before decoding).
    max_pixels: int = _env("SERVE_MAX_PIXELS", 25_000_000)
    # Images decoded at once (each holds up to max_pixels x 3 bytes while it decodes).
    decode_threads: int = _env("SERVE_DECODE_THREADS", 2)
    # A title's thumbnail: seconds a request may wait on the image host (one retry), not the shard stage's minutes.
    upstream_timeout_s: float = _env("SERVE_UPSTREAM_TIMEOUT_S", 10.0)
    # Fetched thumbnails kept in memory, by bytes (least recently used first out).
    cache_bytes: int = _env("SERVE_CACHE_BYTES", 64_000_000)
    # A file holding the bearer token every request must carry (except the page and liveness);
    # empty: no token (the default bind is loopback only).
    token_file: str = _env("SERVE_TOKEN_FILE", "")


@dataclass
class Settings:
    paths: PathsConfig = field(default_factory=PathsConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    wit: WitConfig = field(default_factory=WitConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    @property
    def mlflow_uri(self) -> str:
        if self.tracking.tracking_uri:
            return self.tracking.tracking_uri
        return f"sqlite:///{Path(self.paths.state_dir).resolve() / 'mlflow.db'}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _coerce(value: str, typ):
    typ = typing.get_origin(typ) or typ
    if typ is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    if typ is tuple:
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return typ(value)


def _field_types(section) -> dict:
    return typing.get_type_hints(type(section))


def load_settings(overrides: dict[str, str] | None = None, environ=None) -> Settings:
    """Defaults, then environment variables, then ``section.field`` overrides.

    ``PIPELINE_OVERRIDES`` (a JSON object of ``section.field`` overrides) in the
    environment applies before the explicit ones: it is how a launcher hands
    the same overrides to every stage process.
    """
    environ = os.environ if environ is None else environ
    if environ.get("PIPELINE_OVERRIDES"):
        overrides = {**json.loads(environ["PIPELINE_OVERRIDES"]), **(overrides or {})}
    settings = Settings()
    for section_field in dataclasses.fields(settings):
        section = getattr(settings, section_field.name)
        types = _field_types(section)
        for f in dataclasses.fields(section):
            env = f.metadata.get("env")
            if env and env in environ:
                setattr(section, f.name, _coerce(environ[env], types[f.name]))
    for key, value in (overrides or {}).items():
        if "." not in key:
            raise ValueError(f"override {key!r} must look like section.field (e.g. train.epochs)")
        section_name, name = key.split(".", 1)
        section = getattr(settings, section_name, None)
        if section is None or name not in {f.name for f in dataclasses.fields(section)}:
            raise ValueError(f"unknown setting {key!r}")
        setattr(section, name, _coerce(str(value), _field_types(section)[name]))
    _check_choices(settings)
    return settings


def _check_choices(settings: Settings) -> None:
    for section_field in dataclasses.fields(settings):
        section = getattr(settings, section_field.name)
        for f in dataclasses.fields(section):
            choices = f.metadata.get("choices")
            if choices and getattr(section, f.name) not in choices:
                raise ValueError(f"{section_field.name}.{f.name} ({f.metadata['env']}) must be one of "
                                 f"{', '.join(choices)}, not {getattr(section, f.name)!r}")


# ------------------------------------------------------------ the command lines' settings options

# Shortcut flags for the settings users change most; anything else via --set.
SHORTCUTS = {
    "--dump-date": "paths.dump_date",
    "--data-root": "paths.data_root",
    "--dumps-dir": "paths.dumps_dir",
    "--wit-dir": "paths.wit_dir",
    "--state-dir": "paths.state_dir",
    "--taxonomy": "label.taxonomy",
    "--heuristics": "label.heuristics",
    "--spark-master": "spark.master",
}


def add_settings_arguments(p) -> None:
    """The shortcut flags and ``--set`` on an argparse parser (every command line of the project)."""
    for flag, key in SHORTCUTS.items():
        p.add_argument(flag, dest=key.replace(".", "__"), metavar="VALUE", help=f"sets {key}")
    p.add_argument(
        "--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
        help="override any setting, e.g. --set train.epochs=3 (see `python -m pipeline config`)",
    )


def overrides_from(args, flags: tuple[str, ...] = ()) -> dict[str, str]:
    """``--set`` items, then the shortcut flags (and ``flags``, settings given as their own options)."""
    out = {}
    for item in args.set:
        if "=" not in item:
            raise SystemExit(f"error: --set expects SECTION.FIELD=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    for key in (*SHORTCUTS.values(), *flags):
        value = getattr(args, key.replace(".", "__"), None)
        if value is not None:
            out[key] = value
    return out
