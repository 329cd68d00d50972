"""How much one item category is recommended: CHR@K and nCDCG@K (VAR paper, section 3.3).

The category ``I_c`` is given as a boolean mask over items (in the VAR study: the
items whose images the extractor classifies as the attacked origin category).
Top-K lists are expected to exclude each user's training items, as
:meth:`raygrid.recommenders.base.Recommender.topk` does by default; the paper's
categorical hit counts only category items the user has not interacted with.

Paper definitions, under their own names:

- :class:`CHR` (``chr_K``): ``CHR_u@K = (1/K) sum_k chit(u, k)``, the share of the
  top-K that are category items, averaged over users.
- :class:`NCDCG` (``ncdcg_K``): category DCG over the top-K normalised by the DCG of
  an ideal list of category items, averaged over users.

Variants of the authors' code, kept under distinct names so that our numbers can
be compared with the published tables:

- :class:`CHRCount` (``chr_count_K``): the mean *number* of category items in the
  top-K, i.e. ``K x CHR``.
- :class:`NCDCGGlobal` (``ncdcg_global_K``): nCDCG whose ideal list has
  ``min(K, |I_c|)`` relevant items for every user, ignoring what the user has
  already interacted with.

All metrics average over all users given (all rows of ``topk``).
"""

from __future__ import annotations

import numpy as np

from raygrid.metrics.base import CutoffMetric


def seen_category_counts(
    n_users: int, train_users: np.ndarray, train_items: np.ndarray, category_mask: np.ndarray
) -> np.ndarray:
    """Number of distinct category items each user interacted with in training.

    Args:
        n_users: Number of users.
        train_users: ``int`` ``(n_train,)`` user of each training interaction.
        train_items: ``int`` ``(n_train,)`` item of each training interaction.
        category_mask: ``bool`` ``(n_items,)``, True for items of the category.

    Returns:
        ``int64`` ``(n_users,)``; duplicate interactions count once.
    """
    train_users = np.asarray(train_users, dtype=np.int64)
    train_items = np.asarray(train_items, dtype=np.int64)
    category_mask = np.asarray(category_mask, dtype=bool)
    if train_users.shape != train_items.shape:
        raise ValueError("train_users and train_items must have the same shape")
    n_items = category_mask.shape[0]
    in_category = category_mask[train_items]
    pairs = np.unique(train_users[in_category] * n_items + train_items[in_category])
    return np.bincount(pairs // n_items, minlength=n_users).astype(np.int64)


def _discounts(k: int) -> np.ndarray:
    """``1 / log2(1 + rank)`` for ranks ``1..k``."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


class CategoryMetric(CutoffMetric):
    """A metric of how much the items of one category fill the top-K lists.

    Args:
        k: Cutoff: only the first ``k`` items of each list count.
    """

    def _hits(self, topk: np.ndarray, category_mask: np.ndarray) -> np.ndarray:
        """``bool`` ``(n_users, k)``: whether each of the first ``k`` items is a category item."""
        topk = np.asarray(topk)
        category_mask = np.asarray(category_mask, dtype=bool)
        if topk.ndim != 2 or topk.shape[1] < self.k:
            raise ValueError(f"topk must be (n_users, >= {self.k}), got {topk.shape}")
        if category_mask.ndim != 1:
            raise ValueError(f"category_mask must be a 1-d boolean item mask, got shape {category_mask.shape}")
        return category_mask[topk[:, : self.k]]

    def per_user(
        self, topk: np.ndarray, category_mask: np.ndarray, seen_category_counts: np.ndarray | None = None
    ) -> np.ndarray:
        """Value of each user (row of ``topk``), ``float64`` ``(n_users,)``.

        Args:
            topk: ``int`` ``(n_users, >= k)`` recommended items, best first.
            category_mask: ``bool`` ``(n_items,)``, True for items of the category.
            seen_category_counts: ``int`` ``(n_users,)`` category items each row's
                user interacted with in training (see :func:`seen_category_counts`);
                needed by :class:`NCDCG` only, ignored by the others.
        """
        raise NotImplementedError

    def __call__(
        self, topk: np.ndarray, category_mask: np.ndarray, seen_category_counts: np.ndarray | None = None
    ) -> float:
        """Mean of :meth:`per_user` over all users (``NaN`` for no users)."""
        values = self.per_user(topk, category_mask, seen_category_counts)
        return float(values.mean()) if values.size else float("nan")


class CHR(CategoryMetric):
    """Category Hit Ratio, CHR@K (VAR paper, Definition 1, eq. 3).

    ``CHR_u@K = (1/K) sum_{k=1..K} chit(u, k)`` with ``chit(u, k) = 1`` when the
    k-th recommended item is in the category: the share of the top-K taken by
    the category, in ``[0, 1]``.
    """

    prefix = "chr"

    def per_user(self, topk, category_mask, seen_category_counts=None) -> np.ndarray:
        return self._hits(topk, category_mask).mean(axis=1, dtype=np.float64)


class CHRCount(CategoryMetric):
    """CHR as computed by the VAR authors' code: the mean number of category items in the top-K.

    Equals ``K x CHR@K``. Kept only to compare with the published tables; report
    :class:`CHR` otherwise.
    """

    prefix = "chr_count"

    def per_user(self, topk, category_mask, seen_category_counts=None) -> np.ndarray:
        return self._hits(topk, category_mask).sum(axis=1).astype(np.float64)


class NCDCG(CategoryMetric):
    """Normalised Category Discounted Cumulative Gain, nCDCG@K (VAR paper, Definition 2, eqs. 4-7).

    Relevance (eq. 5) of a category item is ``2^(s_ui - tau + 1) - 1``; with
    implicit 0/1 feedback the maximum score ``s_max = 1`` and the threshold
    ``tau = 1``, so every category item has relevance ``2^1 - 1 = 1`` and every
    other item 0. ``CDCG_u@K = sum_{k=1..K} rel(k) / log2(1 + k)`` (eq. 6).

    The ideal list (eq. 7) holds ``min(K, |I_c \\ I_u^+|)`` category items: only
    category items the user has *not* interacted with in training can be
    recommended once training items are masked, so the ideal counts only those
    (eq. 7 writes ``|I_c|``; the difference matters for users who bought many
    category items). A user with no such item has an ideal of 0 and counts as 0:
    no list could recommend the category to them, and the mean still runs over
    all users.
    """

    prefix = "ncdcg"

    def _ideal_sizes(self, n_category: int, seen_category_counts: np.ndarray | None, n_users: int) -> np.ndarray:
        if seen_category_counts is None:
            raise ValueError(
                f"{type(self).__name__} needs seen_category_counts; compute them with "
                "raygrid.metrics.category.seen_category_counts(n_users, train_users, train_items, category_mask)"
            )
        seen = np.asarray(seen_category_counts, dtype=np.int64)
        if seen.shape != (n_users,):
            raise ValueError(f"seen_category_counts must be ({n_users},) to match topk, got {seen.shape}")
        if seen.size and (seen.min() < 0 or seen.max() > n_category):
            raise ValueError(f"seen_category_counts must lie in [0, {n_category}] (the category size)")
        return np.minimum(self.k, n_category - seen)

    def per_user(self, topk, category_mask, seen_category_counts=None) -> np.ndarray:
        hits = self._hits(topk, category_mask)
        discounts = _discounts(self.k)
        dcg = hits @ discounts
        n_category = int(np.count_nonzero(category_mask))
        ideal_sizes = self._ideal_sizes(n_category, seen_category_counts, hits.shape[0])
        # ideal_dcg[m] = sum of the first m discounts (m relevant items at the top).
        ideal_dcg = np.concatenate(([0.0], np.cumsum(discounts)))[ideal_sizes]
        out = np.zeros(hits.shape[0], dtype=np.float64)
        ok = ideal_sizes > 0
        out[ok] = dcg[ok] / ideal_dcg[ok]
        return out


class NCDCGGlobal(NCDCG):
    """nCDCG@K as in the VAR authors' code: the ideal list has ``min(K, |I_c|)`` items for every user.

    Ignores the user's training interactions (``seen_category_counts`` is not
    needed), so on lists without training items it is never higher than
    :class:`NCDCG`. Kept only to compare with the published tables.
    """

    prefix = "ncdcg_global"

    def _ideal_sizes(self, n_category: int, seen_category_counts: np.ndarray | None, n_users: int) -> np.ndarray:
        return np.full(n_users, min(self.k, n_category), dtype=np.int64)
