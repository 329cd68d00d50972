"""HR, Precision, item coverage, Gini and EFD on hand-computed examples, and a randomised
cross-check of Recall, nDCG and Gini against straightforward loops written here."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raygrid.metrics.beyond import (
    EFD,
    Gini,
    GiniDiversity,
    ItemCoverage,
    ItemCoverageShare,
    gini_coefficient,
    item_novelty,
    item_user_counts,
)
from raygrid.metrics.ranking import NDCG, HitRate, Precision, Recall


def test_hr_and_precision_hand_computed():
    topk = np.array([[3, 1, 2], [0, 4, 5], [7, 8, 9]])
    test = np.array([1, 5, -1])
    # user 0 hits at rank 2, user 1 at rank 3, user 2 has no test item
    assert HitRate(3)(topk, test) == pytest.approx(1.0)
    assert HitRate(2)(topk, test) == pytest.approx(0.5)
    assert Precision(3)(topk, test) == pytest.approx(1 / 3)
    assert Precision(2)(topk, test) == pytest.approx((1 / 2 + 0) / 2)
    assert math.isnan(Precision(3).per_user(topk, test)[2])
    assert HitRate(20).name == "hr_20" and Precision(50).name == "precision_50"


# Four items, four users, lists of length 2 whose first item is: 3, 3, 3, 2.
TOP = np.array([[3, 0], [3, 1], [3, 0], [2, 1]])


def test_item_coverage_hand_computed():
    assert ItemCoverage(1)(TOP, 4) == 2.0  # items 3 and 2
    assert ItemCoverageShare(1)(TOP, 4) == pytest.approx(0.5)
    assert ItemCoverage(2)(TOP, 4) == 4.0
    assert ItemCoverage(20).name == "item_coverage_20"


def test_gini_hand_computed():
    # K=1: counts (0, 0, 1, 3) sorted; weights 2j - n - 1 = -3, -1, 1, 3:
    # G = (1*1 + 3*3) / ((4 - 1) * 4) = 10/12
    assert Gini(1)(TOP, 4) == pytest.approx(10 / 12)
    assert GiniDiversity(1)(TOP, 4) == pytest.approx(2 / 12)
    assert Gini(20).name == "gini_20" and GiniDiversity(20).name == "gini_diversity_20"


def test_gini_extremes():
    assert gini_coefficient(np.array([5, 5, 5])) == pytest.approx(0.0)  # perfectly even
    assert gini_coefficient(np.array([0, 0, 0, 7])) == pytest.approx(1.0)  # one item gets everything
    assert math.isnan(gini_coefficient(np.zeros(3)))


def test_efd_hand_computed():
    # 4 users; items seen by 4, 2, 1 and 0 users -> novelty 0, 1, 2, and 2 (unseen floored to 1 user)
    novelty = item_novelty(np.array([4, 2, 1, 0]), 4)
    np.testing.assert_allclose(novelty, [0.0, 1.0, 2.0, 2.0])
    topk = np.array([[1, 0], [0, 2], [1, 2], [3, 1]])
    test = np.array([1, 2, -1, 0])
    norm = 1 + 1 / math.log2(3)
    per_user = EFD(2).per_user(topk, test, novelty)
    # user 0: test item 1 at rank 1 (novelty 1); user 1: item 2 at rank 2 (novelty 2); user 3: miss
    np.testing.assert_allclose(per_user[[0, 1, 3]], [1 / norm, 2 / math.log2(3) / norm, 0.0])
    assert math.isnan(per_user[2])
    assert EFD(2)(topk, test, novelty) == pytest.approx((1 / norm + 2 / math.log2(3) / norm) / 3)


def test_item_user_counts_count_distinct_users():
    # item 0: users 0 and 1 (user 0 twice); item 2: user 1
    np.testing.assert_array_equal(item_user_counts(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 2]), 3), [2, 0, 1])


# --------------------------------------------------------------------- randomised cross-check


def reference_recall_ndcg(topk, test, k):
    """Per user, with plain loops: recall and nDCG of one test item."""
    recall, ndcg = [], []
    for row, item in zip(topk, test):
        if item < 0:
            continue
        hit_rank = None
        for position in range(k):
            if row[position] == item:
                hit_rank = position + 1
                break
        recall.append(1.0 if hit_rank else 0.0)
        ndcg.append(1.0 / math.log2(hit_rank + 1) if hit_rank else 0.0)
    return (sum(recall) / len(recall), sum(ndcg) / len(ndcg)) if recall else (math.nan, math.nan)


def reference_gini(topk, n_items, k):
    """Gini from the mean absolute difference: G = sum_ij |x_i - x_j| / (2 n^2 mean) * n / (n - 1)."""
    counts = [0] * n_items
    for row in topk:
        for item in row[:k]:
            counts[item] += 1
    n = n_items
    mean = sum(counts) / n
    mad = sum(abs(a - b) for a in counts for b in counts)
    return mad / (2 * n * n * mean) * n / (n - 1)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n_users=st.integers(1, 12),
    n_items=st.integers(3, 9),
    k=st.integers(1, 3),
)
def test_recall_ndcg_gini_match_straightforward_implementations(seed, n_users, n_items, k):
    rng = np.random.default_rng(seed)
    topk = np.stack([rng.permutation(n_items)[:3] for _ in range(n_users)])
    test = rng.integers(-1, n_items, size=n_users)
    expected_recall, expected_ndcg = reference_recall_ndcg(topk, test, k)
    if math.isnan(expected_recall):
        assert math.isnan(Recall(k)(topk, test))
    else:
        assert Recall(k)(topk, test) == pytest.approx(expected_recall)
        assert NDCG(k)(topk, test) == pytest.approx(expected_ndcg)
    assert Gini(k)(topk, n_items) == pytest.approx(reference_gini(topk, n_items, k))
