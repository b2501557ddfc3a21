"""benchmarks/paired_validation.py's statistics: the campaign's ship decisions rest on them."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def paired():
    return load_benchmark("paired_validation")


def test_mcnemar_exact_p(paired):
    assert paired.mcnemar_exact_p(0, 0) == 1.0
    assert paired.mcnemar_exact_p(5, 5) == 1.0
    # 0 against 6 discordant: 2 * 0.5 ** 6
    assert paired.mcnemar_exact_p(0, 6) == pytest.approx(2 / 64)
    assert paired.mcnemar_exact_p(6, 0) == paired.mcnemar_exact_p(0, 6)
    # 2 against 10: 2 * P(X <= 2), X ~ Binomial(12, 0.5)
    assert paired.mcnemar_exact_p(2, 10) == pytest.approx(2 * (1 + 12 + 66) / 4096)


def test_paired_difference_counts_and_error(paired):
    reference = np.array([1, 1, 1, 0, 0, 1, 0, 1], bool)
    other = np.array([1, 1, 0, 1, 1, 1, 0, 1], bool)
    r = paired.paired_difference(reference, other)
    assert (r["only_reference_right"], r["only_this_right"]) == (1, 2)
    assert r["difference"] == pytest.approx(1 / 8)
    assert r["top1"] - r["reference_top1"] == pytest.approx(r["difference"])
    per_image = other.astype(float) - reference
    assert r["standard_error"] == pytest.approx(per_image.std(ddof=1) / np.sqrt(8))
    assert r["interval_95"][0] < r["difference"] < r["interval_95"][1]


def test_identical_models_differ_by_nothing(paired):
    right = np.random.default_rng(0).random(100) < 0.6
    r = paired.paired_difference(right, right)
    assert r["difference"] == 0 and r["standard_error"] == 0 and r["mcnemar_p"] == 1.0
