"""Loss formulas against hand-written numpy, and the C-HMCNN max constraint."""

import numpy as np
import pytest

from training import losses

Y = np.array([[1, 0, 1], [0, 0, 1]], dtype="float32")
P = np.array([[0.9, 0.2, 0.4], [0.3, 0.01, 0.8]], dtype="float32")


def _np(x):
    from keras import ops

    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


def _bce_terms(y, p):
    return y * np.log(p), (1 - y) * np.log(1 - p)


def test_bce_matches_numpy():
    pos, neg = _bce_terms(Y.astype("float64"), P.astype("float64"))
    expected = -(pos + neg).mean(axis=1).mean()
    got = float(_np(losses.make_loss("bce")(Y, P)))
    assert got == pytest.approx(expected, rel=1e-5)
    # by hand for the first element: -log(0.9)
    per_sample = _np(losses.BinaryCrossEntropy().call(Y, P))
    assert per_sample[0] == pytest.approx(-(np.log(0.9) + np.log(0.8) + np.log(0.4)) / 3, rel=1e-5)


def test_weighted_bce_uses_negatives_over_positives():
    positives, total = np.array([2, 0, 8]), 10
    w = losses.positive_weights(positives, total)
    assert w.tolist() == pytest.approx([4.0, 1.0, 0.25])  # 8/2, no positives -> 1, 2/8
    pos, neg = _bce_terms(Y.astype("float64"), P.astype("float64"))
    expected = -(w * pos + neg).mean(axis=1).mean()
    got = float(_np(losses.make_loss("weighted_bce", positives=positives, total=total)(Y, P)))
    assert got == pytest.approx(expected, rel=1e-5)


def test_class_weighted_bce():
    positives, total = np.array([2, 0, 8]), 10
    w = losses.class_weights(positives, total)
    assert w.tolist() == pytest.approx([10 / (2 * 3), 1.0, 10 / (8 * 3)])
    pos, neg = _bce_terms(Y.astype("float64"), P.astype("float64"))
    expected = -(w * (pos + neg)).mean(axis=1).mean()
    got = float(_np(losses.make_loss("class_weighted_bce", positives=positives, total=total)(Y, P)))
    assert got == pytest.approx(expected, rel=1e-5)


def test_focal_loss_formula_and_gamma_zero_is_bce():
    y, p = Y.astype("float64"), P.astype("float64")
    g = 2.0
    expected = -(y * (1 - p) ** g * np.log(p) + (1 - y) * p**g * np.log(1 - p)).mean(axis=1).mean()
    assert float(_np(losses.make_loss("focal", gamma=g)(Y, P))) == pytest.approx(expected, rel=1e-5)
    assert float(_np(losses.FocalLoss(0.0)(Y, P))) == pytest.approx(float(_np(losses.BinaryCrossEntropy()(Y, P))), rel=1e-5)
    # focusing: a confidently right prediction costs much less than under BCE
    easy_y, easy_p = np.array([[1.0]], "float32"), np.array([[0.95]], "float32")
    assert float(_np(losses.FocalLoss(2.0)(easy_y, easy_p))) < 0.01 * float(_np(losses.BinaryCrossEntropy()(easy_y, easy_p)))


def test_probabilities_are_clipped():
    y = np.array([[1.0, 0.0]], "float32")
    p = np.array([[0.0, 1.0]], "float32")
    v = float(_np(losses.BinaryCrossEntropy()(y, p)))
    # clipped to [EPS, 1 - EPS] (in float32 1 - EPS rounds a little), so finite and about -log(EPS)
    assert np.isfinite(v) and v == pytest.approx(-np.log(losses.EPS), rel=0.02)


def test_max_constraint_and_mcloss():
    # 0 = parent of 1 and 2; R[i, j] = 1 when j is i or a descendant of i
    r = np.array([[1, 1, 1], [0, 1, 0], [0, 0, 1]], "float32")
    h = np.array([[0.2, 0.7, 0.4], [0.9, 0.1, 0.3]], "float32")
    mcm = _np(losses.max_constraint(h, r))
    np.testing.assert_allclose(mcm, [[0.7, 0.7, 0.4], [0.9, 0.1, 0.3]], rtol=1e-6)

    y = np.array([[1, 0, 1], [1, 1, 0]], "float32")
    # numpy reference of C-HMCNN's loss
    constr = (h[:, None, :] * r[None]).max(-1)
    train = ((y * h)[:, None, :] * r[None]).max(-1)
    out = (1 - y) * constr + y * train
    expected = -(y * np.log(out) + (1 - y) * np.log(1 - out)).mean(1).mean()
    got = float(_np(losses.make_loss("mcloss", ancestor_matrix=r)(y, h)))
    assert got == pytest.approx(expected, rel=1e-5)
    # the parent of sample 0 is credited only through its positive child 2 (0.4), not through 1 (0.7)
    assert out[0, 0] == pytest.approx(0.4)


def test_taxonomy_ancestor_matrix_plugs_into_mcm():
    from pipeline.labels.taxonomy import Taxonomy

    tax = Taxonomy.load("v1.3")
    r = tax.ancestor_matrix()
    h = np.zeros((1, len(tax.names)), "float32")
    h[0, tax.names.index("Plants")] = 0.8
    out = _np(losses.max_constraint(h, r))[0]
    for name in ("Plants", "Nature", "STEM"):
        assert out[tax.names.index(name)] == pytest.approx(0.8)
    assert out[tax.names.index("Animals")] == 0.0


def test_make_loss_errors():
    with pytest.raises(ValueError, match="needs train label counts"):
        losses.make_loss("weighted_bce")
    with pytest.raises(ValueError, match="unknown loss"):
        losses.make_loss("hinge")
