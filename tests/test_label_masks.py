"""Label masks in Spark columns == the same bit arithmetic in Python, for both taxonomies."""

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from pipeline.labels.masks import ancestor_masks, hier_mask, label_stats, labels_to_mask, mask_to_labels
from pipeline.labels.taxonomy import Taxonomy


@pytest.mark.parametrize("version", ["v1.3", "v1.4"])
@hsettings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_masks_to_labels_and_their_closure_match_python(spark, version, data):
    tax = Taxonomy.load(version)
    n = len(tax.names)
    masks = data.draw(st.lists(st.integers(0, (1 << n) - 1), min_size=1, max_size=40))
    df = spark.createDataFrame([(i, m) for i, m in enumerate(masks)], "i int, mask long")
    rows = df.select("i", mask_to_labels(F.col("mask"), tax).alias("labels"), hier_mask(F.col("mask"), tax).alias("hier"),
                     labels_to_mask(mask_to_labels(F.col("mask"), tax), tax).alias("back")).orderBy("i").collect()
    ancestors = ancestor_masks(tax)
    for mask, row in zip(masks, rows):
        bits = [i for i in range(n) if mask >> i & 1]
        assert list(row.labels) == [tax.names[i] for i in bits]
        hier = 0
        for i in bits:
            hier |= ancestors[i]
        assert row.hier == hier
        assert row.back == mask


def test_label_stats_count_each_file_once_per_label(spark):
    tax = Taxonomy.load("v1.3")
    a, b = tax.names[0], tax.names[1]
    files = [[a], [a, b], [a, b], [], [b]]
    df = spark.createDataFrame([(f,) for f in files], "labels array<string>")
    stats = label_stats(df, tax)["labels"]
    assert stats["files"] == 5
    assert stats["images_per_label"][a] == 3 and stats["images_per_label"][b] == 3
    assert stats["labels_per_image_mean"] == pytest.approx(6 / 5)
    assert stats["unlabeled_share"] == pytest.approx(1 / 5)
    # equal counts: every IRLbl is 1, so every labeled file's geometric and arithmetic means agree
    assert stats["SCUMBLE"] == pytest.approx(0.0)
    assert stats["meanIR"] == pytest.approx(1.0)


def test_scumble_weighs_each_labeled_file(spark):
    tax = Taxonomy.load("v1.3")
    a, b = tax.names[0], tax.names[1]
    df = spark.createDataFrame([([a],), ([a],), ([a],), ([a, b],), ([],)], "labels array<string>")
    stats = label_stats(df, tax)["labels"]
    # IRLbl: a 1, b 4; the file with both: 1 - sqrt(1 * 4) / ((1 + 4) / 2) = 0.2; the other three 0
    assert stats["SCUMBLE"] == pytest.approx(0.2 / 4)
    assert stats["meanIR"] == pytest.approx(2.5)
