import pytest


@pytest.fixture(scope="session")
def spark():
    from pipeline.config import load_settings
    from pipeline.spark import get_spark
    s = load_settings({"spark.master": "local[2]", "spark.shuffle_partitions": "4"})
    return get_spark(s, "tests")


# Measured figures (accuracies, match rates) that tests report: printed in the
# terminal summary, so they show without -s.
_METRICS: list[tuple[str, str]] = []


@pytest.fixture(scope="session")
def report_metric():
    def report(name: str, value) -> None:
        _METRICS.append((name, str(value)))

    return report


def pytest_terminal_summary(terminalreporter):
    if _METRICS:
        terminalreporter.section("measured")
        for name, value in _METRICS:
            terminalreporter.write_line(f"{name}: {value}")
