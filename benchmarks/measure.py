"""What the benchmarks share: stopping Spark so that its JVM's resource use can be counted."""

from __future__ import annotations

import sys


def stop_spark(spark) -> None:
    """Stop Spark and reap its JVM, so ``RUSAGE_CHILDREN`` covers it and its Python workers."""
    spark.stop()
    gw = getattr(spark.sparkContext, "_gateway", None) or type(spark.sparkContext)._gateway
    try:
        gw.shutdown()
        gw.proc.stdin.close()
        gw.proc.wait(timeout=60)
    except Exception as e:  # noqa: BLE001 - measurement only
        print(f"(could not reap the JVM: {e})", file=sys.stderr)
