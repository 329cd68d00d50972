"""Beyond-accuracy metrics of top-K lists: item coverage, Gini index, expected free discovery.

The VAR paper reports ``ICov@K``, ``Gini@K`` and ``EFD@K`` next to accuracy, as
computed by Elliot. Conventions, stated once here:

* **Item coverage** (:class:`ItemCoverage`, ``item_coverage_K``): the number of
  distinct items that appear in at least one user's top-K;
  :class:`ItemCoverageShare` (``item_coverage_share_K``) divides it by the
  catalogue size.
* **Gini index.** Let ``x_(1) <= ... <= x_(n)`` be the number of top-K lists each of
  the ``n`` catalogue items appears in (items never recommended count with 0).
  The concentration is::

      G = sum_{j=1..n} (2j - n - 1) x_(j) / ((n - 1) sum_j x_j)

  0 when every item is recommended equally often, 1 when all recommendations go
  to one item. :class:`Gini` (``gini_K``) reports ``G`` (lower = more even);
  :class:`GiniDiversity` (``gini_diversity_K``) reports ``1 - G`` (higher = more
  even), which is what Elliot (and so the VAR paper's tables) call "Gini".
* **Expected free discovery** (Vargas & Castells, RecSys 2011), relevance- and
  rank-aware, per user::

      EFD_u@K = (1 / sum_{k=1..K} d(k)) * sum_{k=1..K} d(k) * rel(u, i_k) * nov(i_k)
      d(k) = 1 / log2(k + 1),   nov(i) = -log2(max(n_i, 1) / |U|)

  where ``n_i`` is the number of distinct training users of item ``i`` (so
  ``n_i / |U|`` estimates ``p(seen | i)``; items nobody interacted with get the
  largest novelty, that of an item seen once) and ``rel(u, i) = 1`` for the
  user's test item, else 0. Users without a test item are left out of the mean.
"""

from __future__ import annotations

import numpy as np

from raygrid.metrics.base import CutoffMetric


def recommendation_counts(topk: np.ndarray, n_items: int, k: int) -> np.ndarray:
    """How many of the first-``k`` lists each item appears in, ``int64`` ``(n_items,)``."""
    topk = np.asarray(topk)
    if topk.ndim != 2 or topk.shape[1] < k:
        raise ValueError(f"topk must be (n_users, >= {k}), got {topk.shape}")
    if topk.size and (topk.min() < 0 or topk.max() >= n_items):
        raise ValueError(f"item ids in topk must lie in [0, {n_items})")
    return np.bincount(topk[:, :k].ravel(), minlength=n_items).astype(np.int64)


def gini_coefficient(counts: np.ndarray) -> float:
    """Concentration ``G`` of non-negative counts (see the module docstring); NaN if all are 0.

    Args:
        counts: ``(n,)`` count of every item, zeros included.
    """
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n = x.shape[0]
    total = x.sum()
    if n == 0 or total <= 0:
        return float("nan")
    if n == 1:
        return 0.0
    j = np.arange(1, n + 1, dtype=np.float64)
    return float(((2 * j - n - 1) * x).sum() / ((n - 1) * total))


class ItemCoverage(CutoffMetric):
    """Number of distinct items recommended in at least one top-K list (``item_coverage_K``)."""

    prefix = "item_coverage"

    def __call__(self, topk: np.ndarray, n_items: int) -> float:
        """Args: ``topk`` ``int`` ``(n_users, >= k)``; ``n_items`` the catalogue size."""
        return float(np.count_nonzero(recommendation_counts(topk, n_items, self.k)))


class ItemCoverageShare(ItemCoverage):
    """Share of the catalogue recommended in at least one top-K list, in ``[0, 1]``."""

    prefix = "item_coverage_share"

    def __call__(self, topk: np.ndarray, n_items: int) -> float:
        return super().__call__(topk, n_items) / n_items


class Gini(CutoffMetric):
    """Gini concentration ``G`` of how often items are recommended (``gini_K``): 0 even, 1 one item.

    See the module docstring; :class:`GiniDiversity` is ``1 - G``.
    """

    prefix = "gini"

    def __call__(self, topk: np.ndarray, n_items: int) -> float:
        """Args: ``topk`` ``int`` ``(n_users, >= k)``; ``n_items`` the catalogue size (zeros count)."""
        return gini_coefficient(recommendation_counts(topk, n_items, self.k))


class GiniDiversity(Gini):
    """``1 - G`` (``gini_diversity_K``): what Elliot, and so the VAR paper, reports as Gini; higher = more even."""

    prefix = "gini_diversity"

    def __call__(self, topk: np.ndarray, n_items: int) -> float:
        return 1.0 - super().__call__(topk, n_items)


def item_novelty(item_user_counts: np.ndarray, n_users: int) -> np.ndarray:
    """``nov(i) = -log2(max(n_i, 1) / n_users)`` for every item (see the module docstring)."""
    counts = np.maximum(np.asarray(item_user_counts, dtype=np.float64), 1.0)
    if n_users < 1:
        raise ValueError(f"n_users must be positive, got {n_users}")
    return -np.log2(counts / n_users)


def item_user_counts(train_users: np.ndarray, train_items: np.ndarray, n_items: int) -> np.ndarray:
    """Number of distinct training users of each item, ``int64`` ``(n_items,)``."""
    users = np.asarray(train_users, dtype=np.int64)
    items = np.asarray(train_items, dtype=np.int64)
    n_users = int(users.max()) + 1 if users.size else 1
    pairs = np.unique(items * n_users + users)
    return np.bincount(pairs // n_users, minlength=n_items).astype(np.int64)


class EFD(CutoffMetric):
    """Expected free discovery EFD@K (Vargas & Castells 2011), per user; formula in the module docstring."""

    prefix = "efd"

    def per_user(self, topk: np.ndarray, test_items: np.ndarray, novelty: np.ndarray) -> np.ndarray:
        """Value of each user, ``float64`` ``(n_users,)``; ``NaN`` for users without a test item.

        Args:
            topk: ``int`` ``(n_users, >= k)`` recommended items, best first.
            test_items: ``int`` ``(n_users,)`` held-out item of each user, ``-1`` = none.
            novelty: ``(n_items,)`` novelty of every item, from :func:`item_novelty`.
        """
        topk = np.asarray(topk)
        test_items = np.asarray(test_items)
        if topk.ndim != 2 or topk.shape[1] < self.k:
            raise ValueError(f"topk must be (n_users, >= {self.k}), got {topk.shape}")
        if test_items.shape != (topk.shape[0],):
            raise ValueError(f"test_items must be ({topk.shape[0]},) to match topk, got {test_items.shape}")
        top = topk[:, : self.k]
        discounts = 1.0 / np.log2(np.arange(2, self.k + 2, dtype=np.float64))
        relevant = top == test_items[:, None]
        values = (relevant * discounts * np.asarray(novelty, dtype=np.float64)[top]).sum(axis=1) / discounts.sum()
        values[test_items < 0] = np.nan
        return values

    def __call__(self, topk: np.ndarray, test_items: np.ndarray, novelty: np.ndarray) -> float:
        """Mean over users with a test item (``NaN`` if none has)."""
        values = self.per_user(topk, test_items, novelty)
        valid = values[~np.isnan(values)]
        return float(valid.mean()) if valid.size else float("nan")
