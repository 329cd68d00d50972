"""Accuracy of top-K lists against leave-one-out test items: Recall@K, nDCG@K, HR@K, Precision@K.

Metric objects in the manner of cornac's ``cornac/metrics/ranking.py``: built with
their cutoff, named with it (``Recall(20).name == "recall_20"``; never ``@``,
which MLflow rejects in metric keys), with a per-user and a mean form.

Every user has at most one test item (temporal leave-one-out), ``-1`` when the
user has none; such users get ``NaN`` per user and are left out of the mean.
"""

from __future__ import annotations

import numpy as np

from raygrid.metrics.base import CutoffMetric


def _check_inputs(topk: np.ndarray, test_items: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    topk = np.asarray(topk)
    test_items = np.asarray(test_items)
    if topk.ndim != 2 or topk.shape[1] < k:
        raise ValueError(f"topk must be (n_users, >= {k}), got {topk.shape}")
    if test_items.shape != (topk.shape[0],):
        raise ValueError(f"test_items must be ({topk.shape[0]},) to match topk, got {test_items.shape}")
    return topk[:, :k], test_items


def _nan_mean(values: np.ndarray) -> float:
    """Mean over the non-NaN entries; NaN when there are none."""
    valid = values[~np.isnan(values)]
    return float(valid.mean()) if valid.size else float("nan")


class RankingMetric(CutoffMetric):
    """A top-K accuracy metric against one held-out test item per user.

    Args:
        k: Cutoff: only the first ``k`` items of each list count.
    """

    def per_user(self, topk: np.ndarray, test_items: np.ndarray) -> np.ndarray:
        """Value of each user, ``float64`` ``(n_users,)``; ``NaN`` for users without a test item.

        Args:
            topk: ``int`` ``(n_users, >= k)`` recommended items, best first.
            test_items: ``int`` ``(n_users,)`` held-out item of each user, ``-1`` = none.
        """
        topk, test_items = _check_inputs(topk, test_items, self.k)
        # 1-based rank of the test item in the top-k, 0 if absent.
        hits = topk == test_items[:, None]
        rank = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)
        values = self._from_rank(rank).astype(np.float64)
        values[test_items < 0] = np.nan
        return values

    def __call__(self, topk: np.ndarray, test_items: np.ndarray) -> float:
        """Mean over the users that have a test item (``NaN`` if none has)."""
        return _nan_mean(self.per_user(topk, test_items))

    def _from_rank(self, rank: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Recall(RankingMetric):
    """Recall@K: the share of a user's test items found in the top-K.

    With one test item per user it is 1 if that item is in the top-K, else 0
    (equal to HR@K in this protocol).
    """

    prefix = "recall"

    def _from_rank(self, rank: np.ndarray) -> np.ndarray:
        return (rank > 0).astype(np.float64)


class NDCG(RankingMetric):
    """nDCG@K with binary relevance and a ``log2(1 + rank)`` discount.

    With one test item the ideal DCG is 1, so a user's value is
    ``1 / log2(1 + rank)`` if the test item is at ``rank <= K``, else 0.
    """

    prefix = "ndcg"

    def _from_rank(self, rank: np.ndarray) -> np.ndarray:
        out = np.zeros(rank.shape, dtype=np.float64)
        hit = rank > 0
        out[hit] = 1.0 / np.log2(1.0 + rank[hit])
        return out


class HitRate(RankingMetric):
    """HR@K: 1 if any of the user's test items is in the top-K, else 0.

    With one test item per user it equals :class:`Recall`; both are reported
    because the VAR paper speaks of Recall and the AIP paper of HR.
    """

    prefix = "hr"

    def _from_rank(self, rank: np.ndarray) -> np.ndarray:
        return (rank > 0).astype(np.float64)


class Precision(RankingMetric):
    """Precision@K: the share of the top-K that are test items.

    With one test item per user it is ``1/K`` on a hit, else 0.
    """

    prefix = "precision"

    def _from_rank(self, rank: np.ndarray) -> np.ndarray:
        return (rank > 0).astype(np.float64) / self.k
