"""The development command line: ``python -m devtools <command> [options]``.

``sample`` writes the bundled sample in the real published formats, ``serve``
mirrors upload.wikimedia.org for its images, ``demo`` runs the whole Airflow
DAG on it (``make demo``), ``spark-cluster`` runs a local standalone cluster.
The product's own commands are ``python -m pipeline``'s.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.__main__ import configure_logging, execute
from pipeline.config import add_settings_arguments, overrides_from


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devtools", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    from devtools.sample import generator

    p = sub.add_parser("sample", help="generate the bundled sample in the real published formats")
    generator.add_arguments(p)

    p = sub.add_parser("serve", help="serve sample images over HTTP, mirroring upload.wikimedia.org")
    p.add_argument("--root", required=True, help="the sample's images folder")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--render", action="store_true", help="draw images that are not on disk from their names")

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
    add_settings_arguments(p)

    p = sub.add_parser("spark-cluster", help="run a Spark standalone master and workers on 127.0.0.1 until stopped")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cores", type=int, default=1, help="cores per worker")
    p.add_argument("--memory", default="2g", help="memory per worker")
    p.add_argument("--folder", help="the daemons' working directories and logs (default .state/spark-cluster)")
    return parser


def _run(args):
    if args.command == "sample":
        from devtools.sample import generator

        return generator.main(args)
    if args.command == "serve":
        from devtools.sample import server

        return server.main(["--root", args.root, "--host", args.host, "--port", str(args.port)]
                           + (["--render"] if args.render else []))
    if args.command == "demo":
        from devtools import demo

        result = demo.run_demo(
            overrides=overrides_from(args), images=args.images, categories=args.categories,
            seed=args.seed, epochs=args.epochs, runs=args.runs, spark_cluster=args.spark_cluster,
            compare_inputs=args.compare_inputs,
        )
        return {k: v for k, v in result.items() if k not in ("summaries", "night_outputs")}
    from devtools import spark_cluster

    return spark_cluster.main(args)


def main(argv=None) -> int:
    configure_logging()
    args = build_parser().parse_args(argv)
    return execute(args.command, lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
