"""The study API on small hand-made tables: SCUMBLE and meanIR by hand, AUC(PR), precision and recall
against scikit-learn, the "missed by the graph" list, flat labels from hierarchical ones, run over run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipeline.labels.taxonomy import Taxonomy, slug
from pipeline.lake.layout import Layout
from pipeline.study import tables as study

TAX = Taxonomy.load("v1.3")
NAMES = TAX.names
STEM, DIAGRAMS, MATH = "STEM", "Diagrams", "Mathematics"
LAYOUT = Layout("data", "20260101", "d", "w", taxonomy="v1.3", heuristics="depth")


def _images(spark, rows):
    """rows: (image_key, flat labels, split, pages)."""
    data = [(k, f"File {k}.jpg", labels, TAX.with_ancestors(labels), split, pages, bool(labels))
            for k, labels, split, pages in rows]
    return spark.createDataFrame(data, "image_key string, file_title string, labels array<string>, "
                                       "labels_hier array<string>, split string, page_titles array<string>, "
                                       "labeled boolean")


def _index(spark, images):
    rows = []
    for r in images.collect():
        rows.append((r.image_key, [float(n in r.labels) for n in NAMES], [float(n in r.labels_hier) for n in NAMES],
                     "shards/shard-000000.tar", 0, 10))
    return spark.createDataFrame(rows, "image_key string, multi_hot array<float>, multi_hot_hier array<float>, "
                                       "shard string, offset long, size long")


def _predictions(spark, images, probs: dict[str, dict[str, float]], thresholds):
    slugs = [slug(n) for n in NAMES]
    rows = []
    for r in images.collect():
        p = [float(probs.get(r.image_key, {}).get(n, 0.0)) for n in NAMES]
        rows.append((r.image_key, r.file_title, r.split, r.labeled, "models:/m/1", *p,
                     [n for n, v, t in zip(NAMES, p, thresholds) if v >= t]))
    schema = ("image_key string, file_title string, split string, labeled boolean, model_uri string, "
              + ", ".join(f"p_{s} double" for s in slugs) + ", predicted array<string>")
    return spark.createDataFrame(rows, schema)


def _run(spark, rows, probs=None, thresholds=None):
    images = _images(spark, rows)
    thresholds = thresholds or [0.5] * len(NAMES)
    preds = _predictions(spark, images, probs or {}, thresholds) if probs is not None else None
    return study.Run(LAYOUT, TAX, images, _index(spark, images), preds, thresholds, True)


def test_dataset_metrics_match_hand_computed_scumble_and_mean_ir(spark):
    run = _run(spark, [("a", [DIAGRAMS, MATH], "train", []), ("b", [DIAGRAMS], "train", []),
                       ("c", [DIAGRAMS, MATH], "test", []), ("d", ["Chemistry"], "test", []),
                       ("e", [], "train", [])])
    m = study.dataset_metrics(run).loc["flat"]
    # counts: Diagrams 3, Mathematics 2, Chemistry 1 -> IR 1, 1.5, 3
    assert m["images"] == 5 and m["labeled_images"] == 4 and m["labels_with_images"] == 3
    assert m["labels_per_image"] == pytest.approx(6 / 5)
    assert m["positive_label_ratio"] == pytest.approx(6 / 5 / len(NAMES))
    assert m["mean_ir"] == pytest.approx((1 + 1.5 + 3) / 3) and m["max_ir"] == pytest.approx(3)
    pair = 1 - np.sqrt(1 * 1.5) / ((1 + 1.5) / 2)  # images a and c; b and d have one label: 0
    assert m["scumble"] == pytest.approx(2 * pair / 4)
    hier = study.dataset_metrics(run).loc["hierarchical"]
    assert hier["labels_per_image"] == pytest.approx((3 + 2 + 3 + 2) / 5)  # STEM above all three


def test_flat_predictions_keep_only_the_most_specific_labels(spark):
    df = spark.createDataFrame([([STEM, DIAGRAMS, MATH],), ([STEM],), ([],)], "predicted array<string>")
    got = [sorted(r[0]) for r in df.select(study.most_specific(df.predicted, TAX)).collect()]
    assert got == [sorted([DIAGRAMS, MATH]), [STEM], []]


labels_and_scores = st.lists(st.tuples(st.booleans(), st.integers(0, 10), st.booleans(), st.integers(0, 10)),
                             min_size=4, max_size=30)


@hsettings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels_and_scores)
def test_label_quality_matches_scikit_learn(spark, rows):
    from sklearn.metrics import average_precision_score, precision_score, recall_score

    thresholds = [0.5] * len(NAMES)
    thresholds[NAMES.index(MATH)] = 0.3
    data, probs = [], {}
    for i, (d, ds, m, ms) in enumerate(rows):  # scores in tenths: plenty of ties
        key = f"k{i:03d}"
        data.append((key, [x for x, on in ((DIAGRAMS, d), (MATH, m)) if on], "test", []))
        probs[key] = {DIAGRAMS: ds / 10, MATH: ms / 10}
    run = _run(spark, data, probs, thresholds)
    q = study.label_quality(run).set_index("label")
    labeled = [r for r in rows if r[0] or r[2]]  # an image without graph labels is unlabeled, not negative
    if not labeled:
        assert (q["support"] == 0).all()
        return
    for name, col in ((DIAGRAMS, 0), (MATH, 2)):
        y = np.array([r[col] for r in labeled], dtype=int)
        p = np.array([r[col + 1] / 10 for r in labeled])
        assert q.loc[name, "support"] == y.sum()
        if y.sum():
            assert q.loc[name, "auc_pr"] == pytest.approx(average_precision_score(y, p))
        else:
            assert np.isnan(q.loc[name, "auc_pr"])
        t = thresholds[NAMES.index(name)]
        for suffix, cut in (("05", 0.5), ("thr", t)):
            assert q.loc[name, f"precision_{suffix}"] == pytest.approx(precision_score(y, p >= cut, zero_division=0))
            assert q.loc[name, f"recall_{suffix}"] == pytest.approx(recall_score(y, p >= cut, zero_division=0))
    # STEM is every image's ancestor label: its support counts the hierarchical targets
    assert q.loc[STEM, "support"] == len(labeled)
    curve = study.pr_curves(run)
    for name, col in ((DIAGRAMS, 0), (MATH, 2)):
        points = curve[curve.label == name]
        if any(r[col] for r in labeled):  # the curve ends at recall 1 at the lowest score
            assert points["recall"].max() == pytest.approx(1.0)
        else:
            assert points.empty


def test_quality_summary_groups_top_five_by_train_frequency():
    quality = pd.DataFrame({"label": list("abcdefg"), "support": [5, 5, 5, 5, 5, 5, 0],
                            "auc_pr": [0.9, 0.8, 0.7, 0.6, 0.5, 0.1, float("nan")],
                            **{c: [1.0] * 7 for c in ("precision_05", "recall_05", "precision_thr", "recall_thr")}})
    train = pd.Series({"a": 100, "b": 90, "c": 80, "d": 70, "e": 60, "f": 1, "g": 0})
    summary = study.quality_summary(quality, train)
    assert summary.loc["top 5", "auc_pr"] == pytest.approx(0.7) and summary.loc["top 5", "labels"] == 5
    assert summary.loc["rest", "labels"] == 1 and summary.loc["rest", "auc_pr"] == pytest.approx(0.1)
    assert summary.loc["all labels", "labels"] == 6  # g has no test support
    fva = study.frequency_vs_auc(quality, train)
    assert fva.set_index("label").loc["f", "train_images"] == 1


def test_missed_by_graph_lists_confident_predictions_the_graph_lacks(spark):
    rows = [("miss", [DIAGRAMS], "test", []),      # Mathematics at 0.9, not in the graph: a candidate
            ("known", [MATH], "test", []),         # Mathematics in the graph: not one
            ("weak", [DIAGRAMS], "test", []),      # Mathematics at 0.4 < its threshold 0.5
            ("unlabeled", [], "test", [])]         # no graph labels at all: a candidate too
    probs = {"miss": {MATH: 0.9, DIAGRAMS: 0.8}, "known": {MATH: 0.95}, "weak": {MATH: 0.4},
             "unlabeled": {MATH: 0.7}}
    run = _run(spark, rows, probs)
    missed = study.missed_by_graph(run)
    math = missed[missed.label == MATH]
    assert list(math["image_key"]) == ["miss", "unlabeled"]  # highest probability first
    assert list(math["rank"]) == [1, 2]
    assert MATH in math.iloc[0]["found_not_in_graph"] and DIAGRAMS not in math.iloc[0]["found_not_in_graph"]
    assert set(missed["label"]) == {MATH}  # Diagrams at 0.8 on "miss" is in its graph labels
    ex = study.examples(run, per_label=1)
    assert ex[ex.label == MATH]["image_key"].tolist() == ["known"]  # the most confident, graph or not


def test_topics_per_article(spark):
    rows = [("a", [DIAGRAMS], "train", ["Page 1", "Page 2"]), ("b", [MATH], "train", ["Page 1"]),
            ("c", [], "train", ["Page 2"])]
    probs = {"a": {STEM: 0.9, DIAGRAMS: 0.8}, "b": {STEM: 0.9, MATH: 0.6}, "c": {}}
    top, summary = study.topics_per_article(_run(spark, rows, probs), min_images=1)
    page1 = top.set_index("page").loc["Page 1"]
    assert page1["images"] == 2 and page1["topics"] == [STEM]  # Diagrams 0.4, Mathematics 0.3 on average
    assert summary["articles"] == 2 and summary["images_per_article"] == pytest.approx(2.0)


def test_compare_runs_counts_relabeled_added_and_dropped_images(spark):
    before = _run(spark, [("a", [DIAGRAMS], "train", []), ("b", [MATH], "train", []), ("c", [MATH], "test", [])])
    after = _run(spark, [("a", [DIAGRAMS], "train", []), ("b", [DIAGRAMS], "train", []), ("d", [MATH], "test", [])])
    diff = study.compare_runs(before, after)
    assert diff["images_added"] == 1 and diff["images_dropped"] == 1 and diff["images_relabeled"] == 1
    assert list(diff["relabeled_examples"]["image_key"]) == ["b"]
    per = diff["per_label"].set_index("label")
    # gained and lost count added and dropped images too: the label's images before and after
    assert per.loc[DIAGRAMS, "gained"] == 1 and per.loc[DIAGRAMS, "lost"] == 0
    assert per.loc[MATH, "lost"] == 2 and per.loc[MATH, "gained"] == 1  # b relabeled, c dropped; d added
    assert per.loc[STEM, "gained"] == 1 and per.loc[STEM, "lost"] == 1  # d added; c dropped
