"""Accuracy metrics against a plain-Python reference implementation."""

from __future__ import annotations

import numpy as np
import pytest

from edgefer.bench.accuracy import (
    agreement,
    class_order,
    confusion_matrix,
    score,
    top1_in_order,
)
from edgefer.errors import ConfigError
from edgefer.labels import CLASS_NAMES


def reference_scores(labels, predicted, n):
    """The textbook definitions, one loop each."""
    out = []
    for k in range(n):
        tp = sum(1 for y, p in zip(labels, predicted, strict=True) if y == k and p == k)
        fp = sum(1 for y, p in zip(labels, predicted, strict=True) if y != k and p == k)
        fn = sum(1 for y, p in zip(labels, predicted, strict=True) if y == k and p != k)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out.append((precision, recall, f1, tp + fn))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_definitions(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, 500)
    predicted = np.where(rng.random(500) < 0.6, labels, rng.integers(0, 7, 500))
    acc = score(labels, predicted)
    ref = reference_scores(labels.tolist(), predicted.tolist(), 7)
    assert acc.top1 == pytest.approx(np.mean(labels == predicted))
    for name, (p, r, f, s) in zip(CLASS_NAMES, ref, strict=True):
        got = acc.per_class[name]
        assert (got.precision, got.recall, got.f1, got.support) == pytest.approx((p, r, f, s))
    assert acc.macro_f1 == pytest.approx(np.mean([f for _, _, f, _ in ref]))
    confusion = np.asarray(acc.confusion)
    assert confusion.sum() == 500 == acc.images
    for y, p in zip(labels[:20], predicted[:20], strict=True):
        assert confusion[y, p] >= 1


def test_confusion_rows_are_true_classes():
    confusion = confusion_matrix(np.array([0, 0, 1, 2]), np.array([1, 0, 1, 1]), 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_absent_class_is_left_out_of_macro_f1():
    labels = np.array([0, 0, 1, 1])
    acc = score(labels, labels)
    assert acc.top1 == 1.0
    assert acc.macro_f1 == 1.0  # classes 2..6 have no support and do not count
    assert acc.per_class["fear"].support == 0


def test_bad_inputs_raise():
    with pytest.raises(ConfigError):
        confusion_matrix(np.array([0, 1]), np.array([0]), 7)
    with pytest.raises(ConfigError):
        confusion_matrix(np.array([0, 9]), np.array([0, 1]), 7)
    with pytest.raises(ConfigError):
        agreement(np.array([0, 1]), np.array([0, 1, 2]))


def test_agreement():
    assert agreement(np.array([0, 1, 2, 3]), np.array([0, 1, 0, 0])) == 0.5


def test_label_order_maps_baseline_outputs():
    theirs = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry")
    rng = np.random.default_rng(0)
    ours = rng.random((50, 7))
    # the same probabilities, columns in their order
    permuted = ours[:, [CLASS_NAMES.index(c) for c in theirs]]
    assert np.array_equal(top1_in_order(permuted, theirs), ours.argmax(1))
    assert np.array_equal(permuted[:, class_order(theirs)], ours)


def test_label_order_must_be_a_permutation():
    with pytest.raises(ConfigError):
        class_order(("angry", "happy"))
    with pytest.raises(ConfigError):
        class_order(("angry",) * 7)
    with pytest.raises(ConfigError):
        top1_in_order(np.zeros((2, 6)), CLASS_NAMES)
