"""CHR@K, nCDCG@K and the authors' variants on a hand-computed 3-user example."""

import math

import numpy as np
import pytest

from raygrid.metrics.category import CHR, NCDCG, CHRCount, NCDCGGlobal, seen_category_counts

# Six items; the category I_c = {0, 1, 2}, |I_c| = 3.
CATEGORY = np.array([True, True, True, False, False, False])
K = 3
TOPK = np.array(
    [
        [0, 3, 1],  # user 0: category hits at ranks 1 and 3
        [4, 5, 2],  # user 1: category hit at rank 3
        [3, 4, 5],  # user 2: no category item
    ]
)
# Training interactions: user 0 saw no category item, user 1 saw items 0 and 1,
# user 2 saw all three (item 2 twice: duplicates count once).
TRAIN_USERS = np.array([0, 1, 1, 1, 2, 2, 2, 2])
TRAIN_ITEMS = np.array([5, 0, 1, 3, 0, 1, 2, 2])
SEEN = np.array([0, 2, 3])

# Discounts 1/log2(1 + rank): rank 1 -> 1, rank 2 -> 1/log2(3) = 0.6309, rank 3 -> 1/log2(4) = 0.5.
D1, D2, D3 = 1.0, 1 / math.log2(3), 0.5


def test_names_render_cutoff_without_at_sign():
    assert CHR(20).name == "chr_20"
    assert CHRCount(20).name == "chr_count_20"
    assert NCDCG(50).name == "ncdcg_50"
    assert NCDCGGlobal(50).name == "ncdcg_global_50"
    for metric in (CHR(5), CHRCount(5), NCDCG(5), NCDCGGlobal(5)):
        assert "@" not in metric.name


def test_seen_category_counts_helper():
    np.testing.assert_array_equal(seen_category_counts(3, TRAIN_USERS, TRAIN_ITEMS, CATEGORY), SEEN)
    # a user without interactions gets 0
    np.testing.assert_array_equal(seen_category_counts(4, TRAIN_USERS, TRAIN_ITEMS, CATEGORY), [0, 2, 3, 0])


def test_chr_is_the_share_of_the_top_k():
    # (1/K) sum chit: user 0 2/3, user 1 1/3, user 2 0
    np.testing.assert_allclose(CHR(K).per_user(TOPK, CATEGORY), [2 / 3, 1 / 3, 0.0])
    assert CHR(K)(TOPK, CATEGORY) == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    # at K=1 only user 0's first item is a category item
    assert CHR(1)(TOPK, CATEGORY) == pytest.approx(1 / 3)


def test_chr_count_is_k_times_chr():
    # authors' code: number of category items, user 0 2, user 1 1, user 2 0 -> mean 1
    np.testing.assert_allclose(CHRCount(K).per_user(TOPK, CATEGORY), [2.0, 1.0, 0.0])
    assert CHRCount(K)(TOPK, CATEGORY) == pytest.approx(1.0)
    assert CHRCount(K)(TOPK, CATEGORY) == pytest.approx(K * CHR(K)(TOPK, CATEGORY))


def test_ncdcg_hand_computed():
    # Relevance of a category item 2^(1-1+1)-1 = 1.
    # user 0: DCG = D1 + D3 = 1.5; ideal min(3, 3-0) = 3 items: D1 + D2 + D3 = 2.1309 -> 0.7039
    # user 1: DCG = D3 = 0.5; ideal min(3, 3-2) = 1 item: D1 = 1 -> 0.5
    # user 2: saw every category item: ideal 0 -> counts 0
    expected = [(D1 + D3) / (D1 + D2 + D3), D3 / D1, 0.0]
    np.testing.assert_allclose(NCDCG(K).per_user(TOPK, CATEGORY, SEEN), expected)
    assert NCDCG(K)(TOPK, CATEGORY, SEEN) == pytest.approx(sum(expected) / 3)


def test_ncdcg_global_uses_category_size_for_every_user():
    # ideal min(3, |I_c|) = 3 items for everybody: D1 + D2 + D3
    ideal = D1 + D2 + D3
    expected = [(D1 + D3) / ideal, D3 / ideal, 0.0]
    np.testing.assert_allclose(NCDCGGlobal(K).per_user(TOPK, CATEGORY), expected)
    assert NCDCGGlobal(K)(TOPK, CATEGORY) == pytest.approx(sum(expected) / 3)
    # it ignores the seen counts and is never above the per-user ideal
    assert NCDCGGlobal(K)(TOPK, CATEGORY, SEEN) == NCDCGGlobal(K)(TOPK, CATEGORY)
    assert NCDCGGlobal(K)(TOPK, CATEGORY) <= NCDCG(K)(TOPK, CATEGORY, SEEN)


def test_ncdcg_ideal_list_shorter_than_k_when_category_is_small():
    # |I_c| = 1 (item 0); K = 3; list [0, 3, 4] is ideal -> 1.0; [3, 0, 4] -> D2 / D1
    category = np.array([True, False, False, False, False])
    topk = np.array([[0, 3, 4], [3, 0, 4]])
    np.testing.assert_allclose(NCDCG(3).per_user(topk, category, np.array([0, 0])), [1.0, D2])


def test_perfect_list_scores_one():
    topk = np.array([[2, 1, 0, 3]])
    assert NCDCG(3)(topk, CATEGORY, np.array([0])) == pytest.approx(1.0)
    assert CHR(3)(topk, CATEGORY) == pytest.approx(1.0)


def test_ncdcg_requires_seen_counts_and_checks_them():
    with pytest.raises(ValueError, match="seen_category_counts"):
        NCDCG(K)(TOPK, CATEGORY)
    with pytest.raises(ValueError):
        NCDCG(K)(TOPK, CATEGORY, np.array([0, 1]))  # wrong length
    with pytest.raises(ValueError):
        NCDCG(K)(TOPK, CATEGORY, np.array([0, 1, 4]))  # more than |I_c|


def test_lists_shorter_than_k_are_rejected():
    with pytest.raises(ValueError):
        CHR(4)(TOPK, CATEGORY)
