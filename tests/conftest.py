import os

import pytest

from pipeline.demo import SMALL_DATA_JVM

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
    if "MLFLOW_TRACKING_URI" not in before:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def spark():
    from pipeline.config import load_settings
    from pipeline.spark import get_spark

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


# The files that take longest (a fresh clone's `--durations=0`, 2026-12-03), longest first.
SLOW_FILES = ("test_text_model.py", "test_label_topics.py", "test_realgraph.py", "test_cluster.py",
              "test_training.py", "test_launch.py", "test_ingest.py", "test_postgres.py", "test_registry.py")


def pytest_collection_modifyitems(session, config, items):
    """The end-to-end test file first: with --dist loadfile the N xdist workers get files 1..N, then
    N+1..2N, so the first worker starts the longest test at once, and a quick file placed at N+1
    is all it has queued behind it. The other slow files follow, longest first, so that the last
    files the workers pick up are short ones and no worker finishes long after the others."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    files = list(dict.fromkeys(item.nodeid.split("::")[0] for item in items))
    first = [f for f in files if f.endswith("test_e2e.py")]
    quick = [f for f in files if f.endswith("test_config.py")]
    slow = {name: i for i, name in enumerate(SLOW_FILES)}
    rest = sorted((f for f in files if f not in first + quick),
                  key=lambda f: slow.get(os.path.basename(f), len(slow)))
    order = {f: i for i, f in enumerate(first + rest[:workers - 1] + quick + rest[workers - 1:])}
    items.sort(key=lambda item: order[item.nodeid.split("::")[0]])
