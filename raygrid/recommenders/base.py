"""The recommender base class: one required ``score``, ranking derived here.

Modelled on cornac's ``Recommender``: a subclass implements :meth:`Recommender._fit`
(training) and :meth:`Recommender.score` (a dense block of preference scores);
:meth:`Recommender.fit` validates the interactions, keeps the per-user seen items
for masking and returns ``self``; :meth:`Recommender.topk` streams users in blocks
and keeps only the best ``k`` items of each block, so ranking a catalogue never
materialises a users x items matrix.
"""

from __future__ import annotations

import abc
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Self

import numpy as np
import torch

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, float], None]
"""Called after each training epoch with ``(epoch, mean training loss)``; epochs count from 1."""


class Recommender(abc.ABC):
    """Base of every recommender: fit on implicit feedback, score, rank.

    Subclasses are registered in :data:`raygrid.registry.RECOMMENDERS` and carry a
    pydantic ``Config`` model whose ``name`` is ``Literal["<name>"]``.

    Args:
        config: The validated ``Config`` of the subclass (hyper-parameters).
        seed: Seed of every random draw of training (initialisation, sampling).
        device: Torch device for parameters and scoring, e.g. ``"cpu"`` or ``"cuda:0"``.
        progress: Optional :data:`ProgressCallback` invoked once per training epoch
            by recommenders trained in epochs.

    Attributes:
        n_users: Number of users seen by :meth:`fit` (``None`` before).
        n_items: Number of items seen by :meth:`fit` (``None`` before).
    """

    input_kind: ClassVar[str] = "features"
    """What ``item_features`` holds: ``"features"`` (float ``(n_items, d)``) or
    ``"images"`` (the item images, uint8 ``(n_items, H, W, 3)``, for end-to-end
    models such as DVBPR, which check them themselves)."""

    trains_on_device: ClassVar[bool] = True
    """Whether :meth:`fit` does its arithmetic on ``device``. ``False`` (FM: LightFM
    trains on the CPU whatever the device) lets a grid run the model's training
    stage without a GPU share, which a CPU-bound fit would hold idle."""

    def __init__(
        self,
        config: Any,
        *,
        seed: int = 0,
        device: str = "cpu",
        progress: ProgressCallback | None = None,
    ) -> None:
        self.config = config
        self.seed = int(seed)
        self.device = torch.device(device)
        self.progress = progress
        self.n_users: int | None = None
        self.n_items: int | None = None
        # Seen items per user in CSR form: items of user u are
        # _seen_indices[_seen_indptr[u]:_seen_indptr[u + 1]], sorted, unique.
        self._seen_indptr: np.ndarray | None = None
        self._seen_indices: np.ndarray | None = None
        self.validation_items: np.ndarray | None = None
        self.cold_items: np.ndarray | None = None
        #: Whether :meth:`score` returns a new tensor on every call (then :meth:`topk`
        #: masks seen items in place, saving a copy per block). Subclasses that may
        #: return a tensor they keep must leave it False.
        self.fresh_scores = False
        self._session: tuple[object, Any] | None = None

    # ------------------------------------------------------------------ fitting

    def fit(
        self,
        n_users: int,
        n_items: int,
        train_users: np.ndarray,
        train_items: np.ndarray,
        item_features: np.ndarray | None = None,
        *,
        validation_items: np.ndarray | None = None,
        cold_items: np.ndarray | None = None,
    ) -> Self:
        """Train on implicit feedback; returns ``self``.

        Args:
            n_users: Number of users; user ids are ``0..n_users-1``.
            n_items: Number of items; item ids are ``0..n_items-1``.
            train_users: ``int`` ``(n_train,)`` user of each training interaction.
            train_items: ``int`` ``(n_train,)`` item of each training interaction.
                Duplicate ``(user, item)`` pairs are counted once.
            item_features: Optional ``float`` ``(n_items, d)`` item content features
                (e.g. image features); required by visual recommenders.
            validation_items: Optional ``int`` ``(n_users,)`` held-out validation item
                of each user, ``-1`` for none; used by recommenders whose config asks
                for early stopping (kept as :attr:`validation_items`).
            cold_items: Optional ``int`` ids of items held out of training, as the
                AIP study's cold items: they must have no training interaction, and
                recommenders trained with sampled negatives never draw them, so
                their scores come from content alone (kept as :attr:`cold_items`,
                a boolean mask, ``None`` when not given).

        Raises:
            ValueError: On inconsistent shapes or ids out of range.
        """
        n_users, n_items = int(n_users), int(n_items)
        if n_users < 1 or n_items < 1:
            raise ValueError(f"need at least one user and one item, got {n_users} users, {n_items} items")
        users = np.asarray(train_users)
        items = np.asarray(train_items)
        if users.ndim != 1 or users.shape != items.shape:
            raise ValueError(f"train_users {users.shape} and train_items {items.shape} must be 1-d of equal length")
        if users.size == 0:
            raise ValueError("no training interactions")
        if not (np.issubdtype(users.dtype, np.integer) and np.issubdtype(items.dtype, np.integer)):
            raise ValueError("train_users and train_items must be integer arrays")
        if users.min() < 0 or users.max() >= n_users:
            raise ValueError(f"train_users must lie in [0, {n_users}), got [{users.min()}, {users.max()}]")
        if items.min() < 0 or items.max() >= n_items:
            raise ValueError(f"train_items must lie in [0, {n_items}), got [{items.min()}, {items.max()}]")
        if item_features is not None and self.input_kind == "features":
            item_features = np.asarray(item_features)
            if item_features.ndim != 2 or item_features.shape[0] != n_items:
                raise ValueError(f"item_features must be (n_items={n_items}, d), got {item_features.shape}")
            if not np.all(np.isfinite(item_features)):
                raise ValueError("item_features contain NaN or infinite values")

        if validation_items is not None:
            validation_items = np.asarray(validation_items)
            if validation_items.shape != (n_users,) or not np.issubdtype(validation_items.dtype, np.integer):
                raise ValueError(f"validation_items must be integer (n_users={n_users},), got {validation_items.dtype} {validation_items.shape}")
            if validation_items.min() < -1 or validation_items.max() >= n_items:
                raise ValueError(f"validation_items must lie in [-1, {n_items}) (-1 = no validation item)")
            validation_items = validation_items.astype(np.int64, copy=False)
        self.validation_items = validation_items
        if cold_items is not None:
            cold = np.asarray(cold_items)
            if cold.ndim != 1 or not np.issubdtype(cold.dtype, np.integer) or (cold.size and (cold.min() < 0 or cold.max() >= n_items)):
                raise ValueError(f"cold_items must be a 1-d integer array of item ids in [0, {n_items})")
            mask = np.zeros(n_items, dtype=bool)
            mask[cold] = True
            if mask[items].any():
                raise ValueError(f"cold_items must have no training interaction; item {int(items[mask[items]][0])} has one")
            if mask.all():
                raise ValueError("cold_items cover the whole catalogue: nothing left to train on")
            cold_items = mask
        self.cold_items = cold_items

        self.n_users, self.n_items = n_users, n_items
        keys = np.unique(users.astype(np.int64) * n_items + items.astype(np.int64))
        unique_users, unique_items = keys // n_items, keys % n_items
        self._seen_indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(unique_users, minlength=n_users), out=self._seen_indptr[1:])
        self._seen_indices = unique_items  # sorted by user then item, since keys are sorted
        logger.debug(
            "%s: fitting on %d unique interactions (%d users, %d items)",
            type(self).__name__, keys.size, n_users, n_items,
        )
        self._fit(unique_users, unique_items, item_features)
        return self

    @abc.abstractmethod
    def _fit(self, train_users: np.ndarray, train_items: np.ndarray, item_features: np.ndarray | None) -> None:
        """Train the model.

        Called by :meth:`fit` after validation, with the unique interactions as
        ``int64`` arrays sorted by user then item; ``self.n_users``, ``self.n_items``
        and the seen-items structure are already set.
        """

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` has been called."""
        return self._seen_indptr is not None

    def seen_items(self, user: int) -> np.ndarray:
        """The training items of ``user``, sorted ``int64``."""
        self._check_fitted()
        return self._seen_indices[self._seen_indptr[user] : self._seen_indptr[user + 1]]

    def seen_counts(self) -> np.ndarray:
        """Number of distinct training items per user, ``int64`` ``(n_users,)``."""
        self._check_fitted()
        return np.diff(self._seen_indptr)

    # ------------------------------------------------------------------ scoring

    @abc.abstractmethod
    def score(self, users: np.ndarray, item_features: np.ndarray | None = None) -> torch.Tensor:
        """Preference scores of ``users`` for every item.

        Args:
            users: ``int`` ``(n,)`` user ids.
            item_features: ``(n_items, d)`` item features to score with instead of
                those given to :meth:`fit` (an attack swaps some items' features
                without refitting); ``None`` = the features given to :meth:`fit`.
                Recommenders without content features ignore it.

        Returns:
            ``float32`` tensor ``(n, n_items)`` on the model's device; higher is better.
        """

    def _item_side(self, item_features: Any) -> Any:
        """Item-side quantities of a ranking that do not depend on the users (e.g. item
        embeddings of the given features); ``None`` by default.

        Computed once per :meth:`topk` (see :meth:`_scoring_session`) and read in
        :meth:`score` through :meth:`_session_item_side`.
        """
        return None

    @contextlib.contextmanager
    def _scoring_session(self, item_features: Any) -> Iterator[None]:
        """Context around the repeated :meth:`score` calls of one :meth:`topk`.

        Computes :meth:`_item_side` once for all user blocks instead of once per block.
        """
        self._check_fitted()
        self._session = (item_features, self._item_side(item_features))
        try:
            yield
        finally:
            self._session = None

    def _session_item_side(self, item_features: Any) -> Any:
        """:meth:`_item_side` of ``item_features``: the ranking session's if it is for the same object."""
        if self._session is not None and self._session[0] is item_features:
            return self._session[1]
        return self._item_side(item_features)

    def topk(
        self,
        k: int,
        users: np.ndarray | None = None,
        item_features: np.ndarray | None = None,
        *,
        block_size: int = 1024,
        exclude_seen: bool = True,
    ) -> np.ndarray:
        """The ``k`` best items of each user, best first.

        Users are scored ``block_size`` at a time and only the top ``k`` of each
        block is kept, so peak memory is about ``block_size x n_items`` scores.

        Args:
            k: List length, ``1 <= k <= n_items``.
            users: ``int`` ``(n,)`` user ids; ``None`` = all users in id order.
            item_features: Passed to :meth:`score` (``None`` = the fitted features).
            block_size: Users scored at once.
            exclude_seen: Mask each user's training items. If a user has fewer than
                ``k`` unseen items, the list is completed by seen items (scored
                ``-inf``) in an unspecified order.

        Returns:
            ``int64`` array ``(n, k)`` of item ids sorted by decreasing score.
        """
        self._check_fitted()
        if not 1 <= k <= self.n_items:
            raise ValueError(f"k must lie in [1, n_items={self.n_items}], got {k}")
        if block_size < 1:
            raise ValueError(f"block_size must be positive, got {block_size}")
        users_arr = np.arange(self.n_users, dtype=np.int64) if users is None else self._check_users(users)
        out = np.empty((users_arr.shape[0], k), dtype=np.int64)
        with torch.no_grad(), self._scoring_session(item_features):
            for start in range(0, users_arr.shape[0], block_size):
                block = users_arr[start : start + block_size]
                scores = self.score(block, item_features)
                if scores.shape != (block.shape[0], self.n_items):
                    raise RuntimeError(
                        f"{type(self).__name__}.score returned {tuple(scores.shape)}, "
                        f"expected {(block.shape[0], self.n_items)}"
                    )
                if exclude_seen:
                    rows, cols = self._seen_pairs(block)
                    index = (torch.as_tensor(rows, device=scores.device), torch.as_tensor(cols, device=scores.device))
                    minus_inf = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
                    # Out of place unless score() promises a fresh tensor: it may hand back one it keeps.
                    scores = scores.index_put_(index, minus_inf) if self.fresh_scores else scores.index_put(index, minus_inf)
                # torch.topk returns values in descending order (sorted=True).
                out[start : start + block.shape[0]] = torch.topk(scores, k, dim=1, sorted=True).indices.cpu().numpy()
        return out

    # ------------------------------------------------------------------ helpers

    def _seen_pairs(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row in ``block``, item) index pairs of the training interactions of ``block``."""
        starts = self._seen_indptr[block]
        counts = self._seen_indptr[block + 1] - starts
        rows = np.repeat(np.arange(block.shape[0], dtype=np.int64), counts)
        # Position of each pair inside its user's CSR slice, then absolute index.
        offsets = np.arange(rows.shape[0], dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        cols = self._seen_indices[np.repeat(starts, counts) + offsets]
        return rows, cols

    def _check_users(self, users: np.ndarray) -> np.ndarray:
        """Validated ``int64`` copy-free view of user ids."""
        arr = np.asarray(users)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"users must be a 1-d integer array, got {arr.dtype} {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.n_users):
            raise ValueError(f"user ids must lie in [0, {self.n_users})")
        return arr.astype(np.int64, copy=False)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() first")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r}, seed={self.seed}, device={str(self.device)!r})"
