"""``python -m serving``: the champion behind KServe's V1/V2 protocols, until SIGTERM.

Runs in its own environment (``requirements-serve.txt``: ``make serve-venv``,
or the ``model-server`` image). ``--host``, ``--port`` and ``--model-uri`` set
``serve.host``, ``serve.port`` and ``serve.model_uri``; every other setting as
for ``python -m pipeline`` (``--set serve.max_batch=8``, ``SERVE_*``).
"""

from __future__ import annotations

import argparse
import logging
import sys

from pipeline.config import add_settings_arguments, load_settings, overrides_from

FLAGS = ("serve.host", "serve.port", "serve.model_uri")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", dest="serve__host", metavar="VALUE", help="sets serve.host (default 127.0.0.1)")
    p.add_argument("--port", dest="serve__port", metavar="VALUE", help="sets serve.port")
    p.add_argument("--model-uri", dest="serve__model_uri", metavar="VALUE", help="sets serve.model_uri")
    add_settings_arguments(p)
    return p


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(overrides_from(args, FLAGS))
    except ValueError as e:
        print(f"error: [model-server] {e}", flush=True)
        return 2
    from serving import server

    return server.main(settings)


if __name__ == "__main__":
    sys.exit(main())
