"""Metrics against scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

from pipeline.labels import scores
from training import metrics


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    n, k = 300, 9
    prev = np.linspace(0.02, 0.5, k)
    y = (rng.random((n, k)) < prev).astype("float32")
    y[:, 4] = 0  # a label without positives
    p = np.clip(0.35 * y + rng.random((n, k)) * 0.65, 0, 1).astype("float32")
    p[:, 2] = np.round(p[:, 2], 1)  # ties
    thr = np.linspace(0.3, 0.7, k).astype("float32")
    names = [f"L{j}" for j in range(k)]
    return y, p, thr, names


def test_average_precision_matches_sklearn(problem):
    y, p, _, _ = problem
    for j in range(y.shape[1]):
        if y[:, j].sum() == 0:
            assert np.isnan(metrics.average_precision(y[:, j], p[:, j]))
            continue
        assert metrics.average_precision(y[:, j], p[:, j]) == pytest.approx(
            average_precision_score(y[:, j], p[:, j]), abs=1e-9
        )
    keep = y.sum(0) > 0
    assert metrics.macro_average_precision(y, p) == pytest.approx(
        average_precision_score(y[:, keep], p[:, keep], average="macro"), abs=1e-9
    )


@pytest.mark.parametrize("average", ["micro", "macro"])
def test_prf_matches_sklearn(problem, average):
    y, p, thr, _ = problem
    for cut in (0.5, thr):
        pred = (p >= cut).astype(int)
        got = scores.prf_summary(y, pred)
        kw = dict(average=average, zero_division=0)
        assert got[f"precision_{average}"] == pytest.approx(precision_score(y, pred, **kw))
        assert got[f"recall_{average}"] == pytest.approx(recall_score(y, pred, **kw))
        assert got[f"f1_{average}"] == pytest.approx(f1_score(y, pred, **kw))


def test_evaluate_groups_and_labels_per_image(problem):
    y, p, thr, names = problem
    train_counts = np.arange(len(names))[::-1]  # L0..L4 most frequent on "train"
    out = metrics.evaluate(y, p, thr, names, train_counts=train_counts)
    top = [0, 1, 2, 3, 4]
    rest = [5, 6, 7, 8]
    pred = (p >= thr).astype(int)
    assert out["top5_atthr_f1_macro"] == pytest.approx(f1_score(y[:, top], pred[:, top], average="macro", zero_division=0))
    assert out["rest_atthr_f1_micro"] == pytest.approx(f1_score(y[:, rest], pred[:, rest], average="micro", zero_division=0))
    assert out["all_at05_f1_micro"] == pytest.approx(f1_score(y, (p >= 0.5).astype(int), average="micro", zero_division=0))
    assert out["atthr_labels_per_image"] == pytest.approx(pred.sum(1).mean())
    assert out["true_labels_per_image"] == pytest.approx(y.sum(1).mean())
    assert out["labels_with_positives"] == 8
    assert out["mean_prevalence"] == pytest.approx(y.mean())
    assert out["mean_prevalence_positive_labels"] == pytest.approx(y.mean(0)[y.sum(0) > 0].mean())


def test_per_label_table_and_plots(problem, tmp_path):
    y, p, thr, names = problem
    table = metrics.per_label_table(y, p, thr, names)
    assert list(table["label"]) == names
    assert table["support"].tolist() == y.sum(0).astype(int).tolist()
    j = 6
    pred = (p[:, j] >= thr[j]).astype(int)
    assert table.loc[j, "f1_atthr"] == pytest.approx(f1_score(y[:, j], pred, zero_division=0))
    assert table.loc[j, "average_precision"] == pytest.approx(average_precision_score(y[:, j], p[:, j]))
    png = metrics.plot_pr_curves(y, p, names, str(tmp_path / "pr.png"))
    png2 = metrics.plot_thresholds(thr, names, str(tmp_path / "thr.png"), table["f1_at05"], table["f1_atthr"])
    for path in (png, png2):
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
