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

from pipeline.config import add_settings_arguments, load_settings, overrides_from
from pipeline.errors import StageError
from pipeline.lake.atomic import write_json
from pipeline.orchestration.runner import die_with_parent, run_stage
from pipeline.orchestration.stages import ORDER, STAGES

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    for name in ORDER:
        stage = STAGES[name]
        p = sub.add_parser(name, help=stage.help, formatter_class=argparse.RawDescriptionHelpFormatter,
                           description=f"{stage.help}.\n\n{stage.doc}" if stage.doc else stage.help)
        add_settings_arguments(p)
        p.add_argument("--force", action="store_true",
                       help="run even when the recorded fingerprint says the output is up to date")
        p.add_argument("--summary-file", metavar="PATH",
                       help="also write the summary JSON here (how the DAG's launcher reads it)")

    p = sub.add_parser("config", help="print the resolved settings as JSON")
    add_settings_arguments(p)

    p = sub.add_parser("stages", help="print every stage's facts (what it needs, reads, writes, where it runs) "
                                      "as JSON, or with --mermaid their graph")
    p.add_argument("--mermaid", action="store_true", help="the stages' graph as a Mermaid flowchart")
    add_settings_arguments(p)

    p = sub.add_parser("label-quality", help="score labelers' file labels of a run against people's labels")
    p.add_argument("--dev-labels", metavar="PATH",
                   help="Parquet of people's labels (taxonomy_version, id, labels_human); default label.human_labels")
    p.add_argument("--labelers", metavar="A,B", default="",
                   help="labelers whose label stage ran for this dump (default: headJ+depth and label.heuristics)")
    p.add_argument("--folds", type=int, default=5, help="disjoint parts of the files, for the spread of micro F1")
    p.add_argument("--out", metavar="PATH", help="also write the scores here as JSON")
    add_settings_arguments(p)

    p = sub.add_parser("spark-archive", help="write the JVM class archive that speeds up each Spark stage's start-up")
    p.add_argument("--out", help="where (default: spark.class_archive)")
    add_settings_arguments(p)
    return parser


def _label_quality(args) -> dict:
    from pipeline.labels import quality as label_quality
    from pipeline.orchestration.spark import get_spark

    settings = load_settings(overrides_from(args))
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


def execute(command: str, body) -> int:
    """Run ``body()`` (a summary dict to print, or an exit code) as command ``command``; errors name it."""
    try:
        result = body()
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
    if isinstance(result, int):
        return result
    print(json.dumps(result, sort_keys=True, default=str), flush=True)
    return 0


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)


def _run(args, started: float):
    command = args.command
    if command == "config":
        return load_settings(overrides_from(args)).to_dict()
    if command == "stages":
        from pipeline.orchestration import stages

        if args.mermaid:
            print(stages.mermaid(), end="", flush=True)
            return 0
        return stages.describe(load_settings(overrides_from(args)))
    if command == "label-quality":
        return _label_quality(args)
    if command == "spark-archive":
        from pipeline.orchestration.spark import build_archive

        out = args.out or load_settings(overrides_from(args)).spark.class_archive
        if not out:
            raise SystemExit("error: spark-archive needs --out or spark.class_archive (SPARK_CLASS_ARCHIVE)")
        return build_archive(out)
    summary = run_stage(command, load_settings(overrides_from(args)), args.force, started)
    if args.summary_file:
        write_json(args.summary_file, summary)
    return summary


def main(argv=None) -> int:
    die_with_parent()
    configure_logging()
    args = build_parser().parse_args(argv)
    started = time.time()
    return execute(args.command, lambda: _run(args, started))


if __name__ == "__main__":
    sys.exit(main())
