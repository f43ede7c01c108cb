"""A stage's Spark session starts without warnings the project can avoid."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_spark_starts_without_avoidable_warnings(tmp_path):
    code = ("from pipeline.config import load_settings; from pipeline.spark import get_spark; "
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
