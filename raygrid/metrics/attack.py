"""Attack metrics of the VAR study: success rate (SR) and feature loss (FL, and its RMSE variant).

The realised perturbation distances of stored images are in
:func:`raygrid.attacks.storage.realised_distances`.
"""

from __future__ import annotations

import numpy as np


def success_rate(predicted: np.ndarray, labels: np.ndarray, *, targeted: bool = True) -> float:
    """Attack success rate SR: the share of attacked images on which the attack worked.

    Args:
        predicted: ``(N,)`` class predicted by the classifier for each attacked image.
        labels: ``(N,)`` target class of each image if ``targeted``, else its true class.
        targeted: Targeted SR is the share predicted as the target label (VAR's SR);
            untargeted SR is the share no longer predicted as the true label.

    Returns:
        A share in [0, 1]; ``nan`` for no images.

    Examples:
        >>> success_rate(np.array([3, 3, 1, 3]), np.array([3, 3, 3, 3]))
        0.75
    """
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    if predicted.ndim != 1 or predicted.shape != labels.shape:
        raise ValueError(f"predicted {predicted.shape} and labels {labels.shape} must be equal 1-d shapes")
    if predicted.size == 0:
        return float("nan")
    hits = predicted == labels
    return float(hits.mean() if targeted else 1.0 - hits.mean())


def feature_loss(clean: np.ndarray, attacked: np.ndarray) -> float:
    """Feature loss FL: mean squared error between clean and attacked features (VAR).

    Args:
        clean: ``(N, D)`` features of the clean images.
        attacked: ``(N, D)`` features of the same images after the attack, same order.

    Returns:
        The mean over items *and* dimensions of the squared difference, computed
        in float64; ``nan`` for no items (or no dimensions).

    Examples:
        >>> feature_loss(np.array([[0.0, 0.0]]), np.array([[1.0, 3.0]]))
        5.0
    """
    clean, attacked = _feature_pair(clean, attacked)
    if clean.size == 0:
        return float("nan")
    return float(np.mean(np.square(attacked - clean)))


def feature_rmse(clean: np.ndarray, attacked: np.ndarray) -> float:
    """Per-item RMSE of the features, averaged over items: the variant the VAR authors' code logged.

    The paper defines FL as the mean squared error (:func:`feature_loss`); the
    published evaluation logged, per attacked item, the root of the mean
    squared difference over the feature dimensions, averaged over items. It is
    reported under this distinct name so numbers from both can be compared; by
    Jensen's inequality it is at most ``sqrt(feature_loss)``.

    Args:
        clean: ``(N, D)`` features of the clean images.
        attacked: ``(N, D)`` features of the same images after the attack, same order.

    Returns:
        ``mean_i sqrt(mean_d (attacked - clean)^2)`` in float64; ``nan`` for no
        items (or no dimensions).

    Examples:
        >>> feature_rmse(np.array([[0.0, 0.0], [0.0, 0.0]]), np.array([[3.0, 3.0], [1.0, 1.0]]))
        2.0
    """
    clean, attacked = _feature_pair(clean, attacked)
    if clean.size == 0:
        return float("nan")
    return float(np.mean(np.sqrt(np.mean(np.square(attacked - clean), axis=1))))


def _feature_pair(clean: np.ndarray, attacked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both feature matrices as float64, checked to be equal ``(N, D)`` shapes."""
    clean, attacked = np.asarray(clean, dtype=np.float64), np.asarray(attacked, dtype=np.float64)
    if clean.ndim != 2 or clean.shape != attacked.shape:
        raise ValueError(f"clean {clean.shape} and attacked {attacked.shape} must be equal (N, D) shapes")
    return clean, attacked


__all__ = ["feature_loss", "feature_rmse", "success_rate"]
