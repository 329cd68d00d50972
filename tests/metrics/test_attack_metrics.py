"""Attack metrics with hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raygrid.metrics.attack import feature_loss, feature_rmse, success_rate


def test_targeted_success_rate_is_the_share_predicted_as_target():
    predicted = np.array([3, 3, 1, 3, 0])
    targets = np.array([3, 3, 3, 3, 3])
    assert success_rate(predicted, targets) == pytest.approx(3 / 5)


def test_untargeted_success_rate_is_the_share_no_longer_true():
    predicted = np.array([2, 0, 1, 1])
    true = np.array([2, 1, 1, 0])
    assert success_rate(predicted, true, targeted=False) == pytest.approx(2 / 4)


def test_success_rate_extremes_and_empty():
    labels = np.array([1, 2])
    assert success_rate(labels, labels) == 1.0
    assert success_rate(labels, labels, targeted=False) == 0.0
    assert math.isnan(success_rate(np.array([], dtype=int), np.array([], dtype=int)))


def test_success_rate_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        success_rate(np.array([1, 2]), np.array([1]))


def test_feature_loss_is_the_mean_over_items_and_dimensions():
    clean = np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    attacked = np.array([[1.0, 1.0, 0.0], [1.0, 4.0, 1.0]])
    # squared differences: (1, 0, 4) and (0, 9, 0): sum 14 over 6 entries
    assert feature_loss(clean, attacked) == pytest.approx(14 / 6)
    assert feature_loss(clean, clean) == 0.0


def test_feature_loss_accepts_float32_and_is_symmetric():
    clean = np.array([[0.5, -0.5]], dtype=np.float32)
    attacked = np.array([[0.0, 0.5]], dtype=np.float32)
    assert feature_loss(clean, attacked) == pytest.approx((0.25 + 1.0) / 2)
    assert feature_loss(attacked, clean) == feature_loss(clean, attacked)


def test_feature_loss_empty_is_nan_and_shapes_are_checked():
    assert math.isnan(feature_loss(np.zeros((0, 4)), np.zeros((0, 4))))
    with pytest.raises(ValueError):
        feature_loss(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError):
        feature_loss(np.zeros(3), np.zeros(3))


def test_feature_rmse_is_the_mean_over_items_of_each_items_rmse():
    clean = np.zeros((2, 4))
    attacked = np.array([[2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 2.0]])
    # item RMSEs: sqrt(16 / 4) = 2 and sqrt(4 / 4) = 1
    assert feature_rmse(clean, attacked) == pytest.approx(1.5)
    # the paper's FL over the same items: (16 + 4) / 8 = 2.5; RMSE variant <= sqrt(FL) (Jensen)
    assert feature_loss(clean, attacked) == pytest.approx(2.5)
    assert feature_rmse(clean, attacked) <= math.sqrt(feature_loss(clean, attacked))


def test_feature_rmse_empty_is_nan_and_shapes_are_checked():
    assert feature_rmse(np.ones((3, 2)), np.ones((3, 2))) == 0.0
    assert math.isnan(feature_rmse(np.zeros((0, 4)), np.zeros((0, 4))))
    with pytest.raises(ValueError):
        feature_rmse(np.zeros((2, 3)), np.zeros((3, 3)))
