"""Cold-start metrics of the AIP study: hit ratio of injected items in a candidate set, prediction shift.

In the AIP protocol (Liu & Larson, section 5) each user's second-stage ranker
orders a candidate set (the first stage's top items plus the user's test item)
into which one cold item is injected, cooperative (original image) or
adversarial. Scores are given as dense ``(n_users, m)`` blocks: the candidate set
is small (about a thousand items), unlike the catalogue.

Ties: an injected item is ranked below every candidate with an equal score
(pessimistic), so an attack never gains from a tie.
"""

from __future__ import annotations

import numpy as np
import torch

from raygrid.metrics.base import CutoffMetric


def candidate_ranks(target_scores: np.ndarray, candidate_scores: np.ndarray) -> np.ndarray:
    """1-based rank of each target item when injected alone into each user's candidate set.

    ``rank = 1 + #(candidates scoring >= the target)``. The candidates must not
    include the targets themselves.

    Args:
        target_scores: ``(n_users, m)`` score of each of ``m`` injected items for each user.
        candidate_scores: ``(n_users, c)`` scores of each user's candidates.

    Returns:
        ``int64`` ``(n_users, m)``.
    """
    targets = torch.as_tensor(np.asarray(target_scores, dtype=np.float64))
    candidates = torch.as_tensor(np.asarray(candidate_scores, dtype=np.float64))
    if targets.ndim != 2 or candidates.ndim != 2 or targets.shape[0] != candidates.shape[0]:
        raise ValueError(
            f"target_scores (n_users, m) and candidate_scores (n_users, c) must share n_users, "
            f"got {tuple(targets.shape)} and {tuple(candidates.shape)}"
        )
    ascending = torch.sort(candidates, dim=1).values
    # Sorting once makes this O(n m log c) instead of n x m x c comparisons.
    below = torch.searchsorted(ascending.contiguous(), targets.contiguous(), side="left")
    return (1 + candidates.shape[1] - below).numpy().astype(np.int64)


class ColdHitRatio(CutoffMetric):
    """HR@N of injected items (``cold_hr_N``): per item, the share of users whose top-N holds it; averaged over items.

    The same function of other scores gives the AIP paper's *availability*: pass
    the users' test items as targets and the candidate set with the cold item
    added as candidates.
    """

    prefix = "cold_hr"

    def per_item(self, target_scores: np.ndarray, candidate_scores: np.ndarray) -> np.ndarray:
        """``float64`` ``(m,)``: for each injected item, the share of users ranking it in their top-N."""
        return (candidate_ranks(target_scores, candidate_scores) <= self.k).mean(axis=0, dtype=np.float64)

    def __call__(self, target_scores: np.ndarray, candidate_scores: np.ndarray) -> float:
        """Mean of :meth:`per_item` over the injected items."""
        values = self.per_item(target_scores, candidate_scores)
        return float(values.mean()) if values.size else float("nan")


def prediction_shift_per_item(cooperative_scores: np.ndarray, adversarial_scores: np.ndarray) -> np.ndarray:
    """Per cold item, the mean over users of ``adversarial - cooperative`` score, ``float64`` ``(m,)``.

    Args:
        cooperative_scores: ``(n_users, m)`` scores of the cold items with their original images.
        adversarial_scores: ``(n_users, m)`` scores of the same items with attacked images.
    """
    coop = np.asarray(cooperative_scores, dtype=np.float64)
    adv = np.asarray(adversarial_scores, dtype=np.float64)
    if coop.shape != adv.shape or coop.ndim != 2:
        raise ValueError(f"score arrays must both be (n_users, m), got {coop.shape} and {adv.shape}")
    return (adv - coop).mean(axis=0)


def prediction_shift(cooperative_scores: np.ndarray, adversarial_scores: np.ndarray) -> float:
    """Mean prediction shift: averaged over users, then over items (AIP paper, section 3.3)."""
    values = prediction_shift_per_item(cooperative_scores, adversarial_scores)
    return float(values.mean()) if values.size else float("nan")
