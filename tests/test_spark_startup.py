"""A stage's Spark session starts without warnings the project can avoid."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_spark_starts_without_avoidable_warnings(tmp_path):
    code = ("from pipeline.config import load_settings; from pipeline.orchestration.spark import get_spark; "
            "import pandas; s = get_spark(load_settings({'spark.master': 'local[1]', "
            f"'paths.state_dir': {str(tmp_path)!r}}}), 't'); "
            "print('rows', s.range(5).toPandas().shape[0]); s.stop()")
    out = subprocess.run([sys.executable, "-W", "default", "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "rows 5" in out.stdout
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    # The JVM announces the incubator module Spark 4's launcher adds; nothing else may speak.
    unexpected = [ln for ln in lines if ln != "WARNING: Using incubator modules: jdk.incubator.vector"]
    assert not unexpected, unexpected
    import pandas
    import pyspark

    assert int(pandas.__version__.split(".")[0]) < 3, "PySpark 4.3 supports pandas < 3"
    assert pyspark.__version__.startswith("4.3")


def test_the_class_archive_is_used_only_where_it_was_built_for(tmp_path):
    import json
    import os

    from pipeline.orchestration.spark import archive_key, archive_options

    fake = tmp_path / "classes.jsa"
    assert archive_options(str(fake)) == [] and archive_options("") == []  # none yet: plain start-up
    fake.write_bytes(b"not an archive")
    assert archive_options(str(fake)) == []  # no key beside it
    (tmp_path / "classes.jsa.json").write_text(json.dumps({**archive_key(), "pyspark": "3.5.0"}))
    assert archive_options(str(fake)) == []  # built for another Spark
    (tmp_path / "classes.jsa.json").write_text(json.dumps(archive_key()))
    assert archive_options(str(fake)) == [f"-XX:SharedArchiveFile={fake}"]
    assert os.path.isfile(str(fake))


def test_a_stage_jvm_maps_the_archive_make_built(tmp_path):
    """-Xshare:on makes the JVM refuse to start unless it can map the archive: Spark starting, and
    saying nothing else, shows the archive `make` built is valid and used."""
    import os

    import pytest

    from pipeline.orchestration.spark import archive_options

    path = os.environ.get("SPARK_CLASS_ARCHIVE", "")
    if not archive_options(path):
        pytest.skip("no class archive for this Spark and JDK: `make test` builds one "
                    "(python -m pipeline spark-archive --out PATH, then SPARK_CLASS_ARCHIVE=PATH)")
    code = ("from pipeline.config import load_settings; from pipeline.orchestration.spark import get_spark; "
            "s = get_spark(load_settings({'spark.master': 'local[1]', 'spark.java_options': '-Xshare:on', "
            f"'paths.state_dir': {str(tmp_path)!r}}}), 't'); print('rows', s.range(3).count()); s.stop()")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "rows 3" in out.stdout, out.stderr[-3000:] + out.stdout[-2000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert lines == ["WARNING: Using incubator modules: jdk.incubator.vector"], lines


def test_the_code_zip_for_executors_is_built_once_per_version_and_old_versions_go(tmp_path):
    """``project_archive``: the same sources give the same zip (reused, touched); a zip of another
    version unused for a week is removed, a recent one is kept (a running stage may still ship it)."""
    import os
    import time
    import zipfile

    from pipeline.orchestration.spark import project_archive

    out = tmp_path / "spark-pyfiles"
    out.mkdir()
    old, recent = out / "wiki_image_topics-0000000000000000.zip", out / "wiki_image_topics-1111111111111111.zip"
    for path, age_days in ((old, 8), (recent, 1)):
        path.write_bytes(b"PK")
        os.utime(path, (time.time() - age_days * 86400,) * 2)
    first = project_archive(str(out))
    assert not old.exists() and recent.exists()
    names = zipfile.ZipFile(first).namelist()
    assert "pipeline/orchestration/spark.py" in names and "training/pyfunc.py" in names
    # the stages' code only: not the model server (its own env), not the development tooling
    assert {n.split("/")[0] for n in names} == {"pipeline", "spark_jobs", "training"}, sorted(names)[:20]
    assert not [n for n in names if "sample" in n.split("/") or n.endswith(("demo.py", "synthetic.py"))]
    os.utime(first, (time.time() - 3 * 86400,) * 2)
    built = os.stat(first).st_ino
    assert project_archive(str(out)) == first and os.stat(first).st_ino == built  # reused, not rebuilt
    assert time.time() - os.path.getmtime(first) < 60  # and touched


def test_the_small_data_jvm_keeps_the_full_code_cache():
    """C1 alone would give the JVM a 48 MB code cache; a test session's long-lived driver filled it
    ("Out of space in CodeCache for adapters") and every later Spark test on that worker failed."""
    from devtools.demo import SMALL_DATA_JVM
    from pipeline.orchestration.spark import java_binary

    out = subprocess.run([java_binary(), *SMALL_DATA_JVM.split(), "-XX:+PrintFlagsFinal", "-version"],
                         capture_output=True, text=True, check=True).stdout
    size = next(int(line.split()[3]) for line in out.splitlines() if line.split()[1:2] == ["ReservedCodeCacheSize"])
    assert size >= 240 * 1024 * 1024
