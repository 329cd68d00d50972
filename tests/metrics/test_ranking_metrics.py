"""Recall@K and nDCG@K on hand-computed leave-one-out examples."""

import math

import numpy as np
import pytest

from raygrid.metrics.ranking import NDCG, Recall

# Four users, lists of 3 items, best first.
TOPK = np.array(
    [
        [3, 1, 2],  # user 0: test item 1 at rank 2
        [0, 4, 5],  # user 1: test item 5 at rank 3
        [7, 8, 9],  # user 2: test item 6 not in the list
        [1, 2, 3],  # user 3: no test item (-1): excluded from means
    ]
)
TEST = np.array([1, 5, 6, -1])


def test_names_render_cutoff_without_at_sign():
    assert Recall(20).name == "recall_20"
    assert NDCG(20).name == "ndcg_20"
    assert NDCG(50).name == "ndcg_50"
    assert "@" not in Recall(5).name + NDCG(5).name


def test_recall_hand_computed():
    per_user = Recall(3).per_user(TOPK, TEST)
    np.testing.assert_array_equal(per_user[:3], [1.0, 1.0, 0.0])
    assert math.isnan(per_user[3])
    # hits of users 0, 1, 2 only: (1 + 1 + 0) / 3
    assert Recall(3)(TOPK, TEST) == pytest.approx(2 / 3)
    # at K=2 user 1's item (rank 3) falls out: (1 + 0 + 0) / 3
    assert Recall(2)(TOPK, TEST) == pytest.approx(1 / 3)


def test_ndcg_hand_computed():
    # user 0: rank 2 -> 1/log2(3) = 0.6309; user 1: rank 3 -> 1/log2(4) = 0.5; user 2: 0
    per_user = NDCG(3).per_user(TOPK, TEST)
    np.testing.assert_allclose(per_user[:3], [1 / math.log2(3), 0.5, 0.0])
    assert math.isnan(per_user[3])
    assert NDCG(3)(TOPK, TEST) == pytest.approx((1 / math.log2(3) + 0.5 + 0.0) / 3)
    assert NDCG(2)(TOPK, TEST) == pytest.approx((1 / math.log2(3)) / 3)


def test_hit_at_first_rank_scores_one():
    topk = np.array([[4, 0], [0, 4]])
    test = np.array([4, 4])
    np.testing.assert_allclose(NDCG(2).per_user(topk, test), [1.0, 1 / math.log2(3)])
    assert Recall(1)(topk, test) == pytest.approx(0.5)


def test_users_without_test_items_are_excluded_not_zero():
    # Same hits as TOPK[:3] plus many users without a test item: the mean does not move.
    topk = np.vstack([TOPK[:3]] + [TOPK[3:]] * 10)
    test = np.concatenate([TEST[:3], np.full(10, -1)])
    assert Recall(3)(topk, test) == pytest.approx(2 / 3)


def test_no_user_with_test_item_gives_nan():
    assert math.isnan(Recall(3)(TOPK, np.full(4, -1)))


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError):
        Recall(4)(TOPK, TEST)  # lists shorter than K
    with pytest.raises(ValueError):
        NDCG(3)(TOPK, TEST[:3])
    with pytest.raises(ValueError):
        Recall(0)
