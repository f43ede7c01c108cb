import pytest


@pytest.fixture(scope="session")
def spark():
    from pipeline.config import load_settings
    from pipeline.spark import get_spark
    s = load_settings({"spark.master": "local[2]", "spark.shuffle_partitions": "4"})
    return get_spark(s, "tests")
