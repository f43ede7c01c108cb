"""The command line: ``python -m pipeline <command> [options]``.

Every stage is one subcommand; its last line of output is a one-line JSON
summary (output paths, row counts), also left in the data lake
(``Layout.summary``) with the stage's fingerprint, and in ``--summary-file``
for the DAG's launcher. A stage whose recorded fingerprint matches is skipped
(``--force`` runs it). Bad input exits 2 with ``error: [stage] path: message``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback

from pipeline.atomic import write_json
from pipeline.config import load_settings
from pipeline.layout import Layout
from pipeline.errors import StageError
from pipeline import lineage
from pipeline.stages import ORDER, STAGES, die_with_parent

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

SERVER_FLAGS = ("serve.host", "serve.port", "serve.model_uri")


def _add_settings_arguments(p: argparse.ArgumentParser) -> None:
    for flag, key in SHORTCUTS.items():
        p.add_argument(flag, dest=key.replace(".", "__"), metavar="VALUE", help=f"sets {key}")
    p.add_argument(
        "--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
        help="override any setting, e.g. --set train.epochs=3 (see `python -m pipeline config`)",
    )


def _overrides(args) -> dict[str, str]:
    out = {}
    for item in args.set:
        if "=" not in item:
            raise SystemExit(f"error: --set expects SECTION.FIELD=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    for key in (*SHORTCUTS.values(), *SERVER_FLAGS):
        value = getattr(args, key.replace(".", "__"), None)
        if value is not None:
            out[key] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    for name in ORDER:
        stage = STAGES[name]
        p = sub.add_parser(name, help=stage.help, formatter_class=argparse.RawDescriptionHelpFormatter,
                           description=f"{stage.help}.\n\n{stage.doc}" if stage.doc else stage.help)
        _add_settings_arguments(p)
        p.add_argument("--force", action="store_true",
                       help="run even when the recorded fingerprint says the output is up to date")
        p.add_argument("--summary-file", metavar="PATH",
                       help="also write the summary JSON here (how the DAG's launcher reads it)")

    from pipeline.sample import generator

    p = sub.add_parser("sample", help="generate the bundled sample in the real published formats")
    generator.add_arguments(p)

    p = sub.add_parser("serve", help="serve sample images over HTTP, mirroring upload.wikimedia.org")
    p.add_argument("--root", required=True, help="the sample's images folder")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--render", action="store_true", help="draw images that are not on disk from their names")

    p = sub.add_parser("model-server", help="answer for one image on request: the champion behind KServe's V1/V2 "
                                            "protocols (its own environment: make serve-venv)")
    p.add_argument("--host", dest="serve__host", metavar="VALUE", help="sets serve.host (default 127.0.0.1)")
    p.add_argument("--port", dest="serve__port", metavar="VALUE", help="sets serve.port")
    p.add_argument("--model-uri", dest="serve__model_uri", metavar="VALUE", help="sets serve.model_uri")
    _add_settings_arguments(p)

    p = sub.add_parser("demo", help="generate the sample, serve its images, run the whole Airflow DAG on it")
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--categories", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--runs", type=int, default=1,
                   help="nights to run: 1 = tonight; 3 = first dump, a second dump with changes, that dump again")
    p.add_argument("--spark-cluster", action="store_true",
                   help="run the Spark stages on a standalone master and two workers started on 127.0.0.1")
    p.add_argument("--compare-inputs", action="store_true",
                   help="after the last night, train the other two kinds of model (train.inputs: image, text, "
                        "image+text) on the same split and rebuild the report with what the words add")
    _add_settings_arguments(p)

    p = sub.add_parser("config", help="print the resolved settings as JSON")
    _add_settings_arguments(p)

    p = sub.add_parser("label-quality", help="score labelers' file labels of a run against people's labels")
    p.add_argument("--dev-labels", metavar="PATH",
                   help="Parquet of people's labels (taxonomy_version, id, labels_human); default label.human_labels")
    p.add_argument("--labelers", metavar="A,B", default="",
                   help="labelers whose label stage ran for this dump (default: headJ+depth and label.heuristics)")
    p.add_argument("--folds", type=int, default=5, help="disjoint parts of the files, for the spread of micro F1")
    p.add_argument("--out", metavar="PATH", help="also write the scores here as JSON")
    _add_settings_arguments(p)

    p = sub.add_parser("spark-cluster", help="run a Spark standalone master and workers on 127.0.0.1 until stopped")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cores", type=int, default=1, help="cores per worker")
    p.add_argument("--memory", default="2g", help="memory per worker")
    p.add_argument("--folder", help="the daemons' working directories and logs (default .state/spark-cluster)")

    p = sub.add_parser("spark-archive", help="write the JVM class archive that speeds up each Spark stage's start-up")
    p.add_argument("--out", help="where (default: spark.class_archive)")
    _add_settings_arguments(p)
    return parser


def run_stage(command: str, settings, force: bool = False, started: float | None = None) -> dict:
    """Run one stage unless its recorded fingerprint says its output is up to date; record the summary."""
    started = time.time() if started is None else started
    stage = STAGES[command]
    extra = stage.lineage_inputs(settings)
    if command != "fetch" and not force:
        record, why = lineage.fresh(settings, command, extra)
        if record is not None:
            print(f"{command}: skipped: {why}; --force runs it anyway", flush=True)
            return {**record, "skipped": True, "skip_reason": why, "seconds": round(time.time() - started, 1)}
        print(f"{command}: running: {why}", flush=True)
    summary = stage.load()(settings)
    summary = {"stage": command, "seconds": round(time.time() - started, 1), **summary}
    if summary.get("dump_date"):  # fetch resolved `latest` itself: file the summary under that date
        settings.paths.dump_date = summary["dump_date"]
    if command == "fetch":
        files = {**summary.get("dump_files", {}), **summary.get("wit_files", {})}
        summary["fingerprint"] = lineage.file_fingerprint(files) if files else lineage.local_fingerprint(settings)
    else:
        summary["inputs"] = lineage.inputs(settings, command, extra)
        if summary.get("left_for_later_runs") or summary.get("transient_to_retry"):
            # a capped shard run, or one with failures to retry: the same inputs may give more next time
            summary["inputs"]["progress"] = summary["status_counts"]
        summary["fingerprint"] = lineage.digest(summary["inputs"])
    summary["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    summary["skipped"] = False
    layout = Layout.from_settings(settings)
    if not stage.own_mlflow_run:
        from pipeline import tracking

        files = {"stats.json": layout.labels("stats.json")} if command == "label" else None
        summary["mlflow_run_id"] = tracking.log_stage(settings, command, summary, files)
    write_json(layout.summary(command), summary)
    return summary


def _label_quality(args) -> dict:
    from pipeline import label_quality
    from pipeline.spark import get_spark

    settings = load_settings(_overrides(args))
    human = args.dev_labels or settings.label.human_labels
    if not human:
        raise SystemExit("error: label-quality needs --dev-labels PATH (or label.human_labels / HUMAN_LABELS)")
    labelers = [x.strip() for x in args.labelers.split(",") if x.strip()] or list(
        dict.fromkeys([label_quality.BASELINE, settings.label.heuristics.strip()]))
    result = label_quality.compare(get_spark(settings, "label-quality"), settings, human, labelers, args.folds)
    print(label_quality.format_table(result), flush=True)
    if args.out:
        write_json(args.out, result)
    return result


def main(argv=None) -> int:
    die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    command = args.command
    started = time.time()
    try:
        if command == "sample":
            from pipeline.sample import generator

            summary = generator.main(args)
        elif command == "serve":
            from pipeline.sample import server

            return server.main(["--root", args.root, "--host", args.host, "--port", str(args.port)]
                               + (["--render"] if args.render else []))
        elif command == "model-server":
            from pipeline.serving import server

            return server.main(load_settings(_overrides(args)))
        elif command == "demo":
            from pipeline import demo

            result = demo.run_demo(
                overrides=_overrides(args), images=args.images, categories=args.categories,
                seed=args.seed, epochs=args.epochs, runs=args.runs, spark_cluster=args.spark_cluster,
                compare_inputs=args.compare_inputs,
            )
            summary = {k: v for k, v in result.items() if k not in ("summaries", "night_outputs")}
        elif command == "config":
            summary = load_settings(_overrides(args)).to_dict()
        elif command == "label-quality":
            summary = _label_quality(args)
        elif command == "spark-cluster":
            from pipeline import spark_cluster

            return spark_cluster.main(args)
        elif command == "spark-archive":
            from pipeline.spark import build_archive

            out = args.out or load_settings(_overrides(args)).spark.class_archive
            if not out:
                raise SystemExit("error: spark-archive needs --out or spark.class_archive (SPARK_CLASS_ARCHIVE)")
            summary = build_archive(out)
        else:
            summary = run_stage(command, load_settings(_overrides(args)), args.force, started)
            if args.summary_file:
                write_json(args.summary_file, summary)
    except StageError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        print(f"error: {e}", flush=True)
        return 2
    except (ValueError, FileNotFoundError) as e:
        traceback.print_exc()
        print(f"error: [{command}] {e}", flush=True)
        return 2
    except Exception as e:  # noqa: BLE001 - the last line must say which stage failed
        traceback.print_exc()
        print(f"error: [{command}] unexpected {type(e).__name__}: {e}", flush=True)
        return 1
    print(json.dumps(summary, sort_keys=True, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
