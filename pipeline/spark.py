"""One way to get a SparkSession, configured from Settings."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipeline.config import Settings

LOG4J2 = Path(__file__).with_name("log4j2.properties").as_uri()


def get_spark(settings: Settings, app: str):
    from pyspark.sql import SparkSession

    # Executors must run the same interpreter (and so the same venv) as the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if settings.spark.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # stay on loopback
    builder = (
        SparkSession.builder.appName(f"wiki-image-topics:{app}")
        .master(settings.spark.master)
        .config("spark.driver.memory", settings.spark.driver_memory)
        .config("spark.sql.shuffle.partitions", str(settings.spark.shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.parquet.compression.codec", "zstd")
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.extraJavaOptions", " ".join(filter(None, [
            "-Dderby.system.home=" + os.path.abspath(settings.paths.state_dir),
            f"-Dlog4j2.configurationFile={LOG4J2}", settings.spark.java_options])))
    )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
