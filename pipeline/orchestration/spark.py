"""One way to get a SparkSession, configured from Settings, and the JVM class archive that makes it
start faster."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from pipeline.config import PROJECT_ROOT, Settings

LOG4J2 = Path(__file__).resolve().with_name("log4j2.properties").as_uri()
# The packages executors import (stage code runs in their Python workers too): not the model server
# (its own environment, with KServe) nor the development tooling.
PACKAGES = ("pipeline", "spark_jobs", "training")


def get_spark(settings: Settings, app: str):
    from pyspark.sql import SparkSession

    # Executors must run the same interpreter (and so the same venv) as the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if settings.spark.master.startswith(("local", "spark://127.0.0.1:", "spark://localhost:")):
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
            f"-Dlog4j2.configurationFile={LOG4J2}", settings.spark.java_options,
            *archive_options(settings.spark.class_archive)])))
    )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    if not settings.spark.master.startswith("local"):
        ship_project(spark, settings.paths.state_dir)
    return spark


# ------------------------------------------------------------ the project's code for executors


def project_archive(out_dir: str, keep_days: float = 7.0) -> str:
    """A zip of the project's packages, named by a hash of their files, built once per version.

    Executors of a cluster do not have this checkout; the zip is what Spark ships to them
    (``addPyFile``, the convention ``spark-submit --py-files`` follows). A zip with the same name is
    the same code, so a second stage (or a concurrent one) reuses it. Each use touches the zip; zips
    of other versions unused for ``keep_days`` are removed (a stage still running an older version
    keeps its own, which its executors may still fetch).
    """
    files = sorted(
        (p.relative_to(PROJECT_ROOT).as_posix(), p)
        for pkg in PACKAGES for p in (PROJECT_ROOT / pkg).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    os.makedirs(out_dir, exist_ok=True)
    final = os.path.join(os.path.abspath(out_dir), f"wiki_image_topics-{digest.hexdigest()[:16]}.zip")
    if not os.path.isfile(final):
        fd, tmp = tempfile.mkstemp(suffix=".zip.tmp", dir=out_dir)
        os.close(fd)
        try:
            # Fixed timestamps: the same sources give the same bytes.
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
                for name, path in files:
                    z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), path.read_bytes(), zipfile.ZIP_DEFLATED)
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    os.utime(final)
    stale = time.time() - keep_days * 86400
    for old in glob.glob(os.path.join(os.path.dirname(final), "wiki_image_topics-*.zip")):
        try:
            if old != final and os.path.getmtime(old) < stale:
                os.remove(old)
        except FileNotFoundError:  # a concurrent stage removed it first
            pass
    return final


def ship_project(spark, state_dir: str) -> str:
    """Send the project's packages to the executors; the driver keeps importing from the checkout."""
    archive = project_archive(os.path.join(state_dir, "spark-pyfiles"))
    before = list(sys.path)
    spark.sparkContext.addPyFile(archive)
    # addPyFile also puts the zip on the driver's path, ahead of the checkout: modules imported
    # later would come from the zip, where data files (taxonomies, log4j2.properties) are no paths.
    sys.path[:] = before
    return archive


# ------------------------------------------------------------ class-data-sharing archive


def java_binary() -> str:
    """The JDK PySpark launches: $JAVA_HOME/bin/java, else java on the PATH."""
    home = os.environ.get("JAVA_HOME")
    return os.path.realpath(shutil.which("java", path=os.path.join(home, "bin") if home else None) or "java")


def archive_key() -> dict:
    """What an archive is valid for: this Spark's jars and this JDK (the JVM checks the jars too,
    but says so only in a warning)."""
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    listing = sorted((p.name, p.stat().st_size) for p in jars.glob("*.jar"))
    return {"pyspark": pyspark.__version__, "java": java_binary(),
            "jars": hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]}


def archive_options(path: str) -> list[str]:
    """``-XX:SharedArchiveFile`` when ``path`` holds an archive built for this Spark and JDK."""
    if not path or not os.path.isfile(path):
        return []
    try:
        with open(path + ".json") as f:
            if json.load(f) != archive_key():
                return []
    except (OSError, ValueError):
        return []
    return [f"-XX:SharedArchiveFile={path}"]


def build_archive(path: str) -> dict:
    """Write the class archive at ``path`` (atomically, with its key beside it).

    A JVM started with ``-XX:ArchiveClassesAtExit`` runs a small job touching what the stages use
    (DataFrames, joins, windows, Parquet, Arrow) and dumps the classes it loaded when it exits.
    """
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as tmp:
        archive = os.path.join(tmp, "classes.jsa")
        subprocess.run([sys.executable, "-c", f"from pipeline.orchestration.spark import _warm_up; _warm_up({archive!r}, {tmp!r})"],
                       check=True, env={**os.environ, "SPARK_CLASS_ARCHIVE": ""})
        if not os.path.isfile(archive):
            raise RuntimeError(f"the JVM wrote no class archive at {archive}")
        key = archive_key()
        with open(archive + ".json", "w") as f:
            json.dump(key, f)
        os.replace(archive, path)  # the archive first: a key never stands beside another archive
        os.replace(archive + ".json", path + ".json")
    return {"class_archive": path, "bytes": os.path.getsize(path), **key}


def _warm_up(archive: str, tmp: str) -> None:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from pipeline.config import load_settings

    settings = load_settings({"spark.master": "local[2]", "paths.state_dir": tmp})
    # -Xlog:cds=off: the JVM lists every class it cannot archive (signed jars, generated classes).
    settings.spark.java_options = f"-XX:ArchiveClassesAtExit={archive} -Xlog:cds=off"
    spark = get_spark(settings, "class-archive")
    df = spark.range(2000).select((F.col("id") % 17).alias("k"), F.col("id").alias("v"),
                                  F.concat(F.lit("Category:"), F.col("id").cast("string")).alias("t"))
    df.write.mode("overwrite").parquet(os.path.join(tmp, "t.parquet"))
    back = spark.read.parquet(os.path.join(tmp, "t.parquet")).localCheckpoint()
    joined = back.join(F.broadcast(back.groupBy("k").agg(F.count("*").alias("n"), F.expr("bit_or(v)").alias("m"))), "k")
    ranked = joined.withColumn("r", F.row_number().over(Window.partitionBy("k").orderBy("v")))
    ranked.where("r <= 3").join(back.select("t"), "t", "left_anti").toPandas()
    spark.createDataFrame([(1, "a")], "x long, y string").collect()
    gateway = spark.sparkContext._gateway
    spark.stop()
    # The JVM writes the archive as it exits, which it does once its stdin (our end) closes.
    gateway.shutdown()
    gateway.proc.stdin.close()
    gateway.proc.wait(timeout=300)
