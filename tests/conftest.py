import os

import pytest

from devtools.demo import SMALL_DATA_JVM

# The tests' Spark jobs last seconds, as the demo's: a JVM that compiles less starts faster.
# Set for the whole session, so stage subprocesses inherit it too.
os.environ.setdefault("SPARK_JAVA_OPTIONS", SMALL_DATA_JVM)


@pytest.fixture(autouse=True)
def _mlflow_environment_restored():
    """mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI in os.environ: without this, a test's
    store (a server since stopped) would leak into the stage processes a later test starts."""
    before = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    yield
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        del os.environ[key]
    os.environ.update(before)
    import mlflow

    mlflow.set_tracking_uri(before.get("MLFLOW_TRACKING_URI", ""))
    # the registry URI is a global of its own: a stage's set_registry_uri must not outlive its test
    mlflow.set_registry_uri(before.get("MLFLOW_REGISTRY_URI"))
    if "MLFLOW_TRACKING_URI" not in before:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def spark():
    from pipeline.config import load_settings
    from pipeline.orchestration.spark import get_spark

    s = load_settings({"spark.master": "local[2]", "spark.shuffle_partitions": "4"})
    session = get_spark(s, "tests")
    yield session
    # Stopped here, while pytest's streams are open: left to interpreter exit, py4j logs its
    # shutdown to closed streams ("--- Logging error ---" after the summary line).
    session.stop()
    from pyspark import SparkContext

    if SparkContext._gateway is not None:
        SparkContext._gateway.shutdown()
        SparkContext._gateway = None
        SparkContext._jvm = None


# Measured figures (accuracies, match rates) that tests report: printed in the
# terminal summary, so they show without -s. They travel as the test report's
# user properties, so they also reach the summary from pytest-xdist workers.
_METRICS: list[tuple[str, str]] = []
_PREFIX = "measured: "


@pytest.fixture
def report_metric(request):
    def report(name: str, value) -> None:
        request.node.user_properties.append((_PREFIX + name, str(value)))

    return report


def pytest_runtest_logreport(report):
    if report.when == "call":
        _METRICS.extend((k[len(_PREFIX):], v) for k, v in report.user_properties if k.startswith(_PREFIX))


def pytest_terminal_summary(terminalreporter):
    if _METRICS:
        terminalreporter.section("measured")
        for name, value in _METRICS:
            terminalreporter.write_line(f"{name}: {value}")
