"""Cold-start metrics (candidate ranks, cold HR@N, prediction shift) and paired significance tests."""

import math

import numpy as np
import pytest
from scipy import stats

from raygrid.metrics.coldstart import ColdHitRatio, candidate_ranks, prediction_shift, prediction_shift_per_item
from raygrid.metrics.significance import paired_metrics, paired_tests

CANDIDATES = np.array([[0.9, 0.5, 0.1], [0.2, 0.3, 0.4]])
# two injected items; user 0 scores them 0.6 and 0.5 (a tie with a candidate), user 1: 0.5 and 0.0
TARGETS = np.array([[0.6, 0.5], [0.5, 0.0]])


def test_candidate_ranks_hand_computed_ties_pessimistic():
    # user 0: 0.6 is below 0.9 only -> rank 2; 0.5 ties 0.5 -> counted below it: rank 3
    # user 1: 0.5 above all -> 1; 0.0 below all -> 4
    np.testing.assert_array_equal(candidate_ranks(TARGETS, CANDIDATES), [[2, 3], [1, 4]])


def test_cold_hit_ratio_per_item_then_mean():
    # N=2: item 0 in the top-2 of both users (1.0); item 1 of neither (0.0)
    np.testing.assert_allclose(ColdHitRatio(2).per_item(TARGETS, CANDIDATES), [1.0, 0.0])
    assert ColdHitRatio(2)(TARGETS, CANDIDATES) == pytest.approx(0.5)
    assert ColdHitRatio(3)(TARGETS, CANDIDATES) == pytest.approx((1.0 + 0.5) / 2)
    assert ColdHitRatio(5).name == "cold_hr_5"


def test_prediction_shift_averages_users_then_items():
    coop = np.array([[0.0, 1.0], [2.0, 1.0], [1.0, 1.0]])
    adv = np.array([[1.0, 1.0], [4.0, 1.0], [1.0, 4.0]])
    np.testing.assert_allclose(prediction_shift_per_item(coop, adv), [1.0, 1.0])
    assert prediction_shift(coop, adv) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        prediction_shift(coop, adv[:2])


def test_paired_tests_hand_computed():
    baseline = np.array([1.0, 1.0, 1.0, 1.0, np.nan])
    treated = np.array([2.0, 3.0, 4.0, 5.0, 0.0])  # differences 1, 2, 3, 4; the NaN pair is dropped
    result = paired_tests(treated, baseline)
    assert result.n == 4 and result.mean_difference == pytest.approx(2.5)
    # t = mean / (sd / sqrt(n)) with sd = sqrt(5/3)
    t = 2.5 / (math.sqrt(5 / 3) / 2)
    assert result.t_statistic == pytest.approx(t)
    assert result.t_pvalue == pytest.approx(2 * stats.t.sf(t, df=3))
    # all four differences positive: exact two-sided Wilcoxon p = 2 / 2^4
    assert result.wilcoxon_pvalue == pytest.approx(2 / 16)


def test_paired_tests_edge_cases():
    same = paired_tests(np.ones(5), np.ones(5))
    assert same.t_pvalue == 1.0 and same.wilcoxon_pvalue == 1.0
    assert math.isnan(paired_tests(np.array([1.0]), np.array([0.0])).t_pvalue)
    shifted = paired_tests(np.full(6, 2.0), np.ones(6))  # constant non-zero shift: certain
    assert shifted.t_pvalue == 0.0


def test_paired_metrics_names_and_shared_keys_only():
    rng = np.random.default_rng(0)
    base = {"recall_20": rng.random(30), "chr_20": rng.random(30)}
    lift = 0.5 + 0.1 * rng.random(30)
    treated = {"recall_20": base["recall_20"] + lift, "ndcg_20": rng.random(30)}
    out = paired_metrics(treated, base)
    assert set(out) == {"ttest_p_recall_20", "wilcoxon_p_recall_20", "delta_recall_20"}
    assert out["delta_recall_20"] == pytest.approx(lift.mean())
    assert out["ttest_p_recall_20"] < 1e-10 and out["wilcoxon_p_recall_20"] < 1e-5
