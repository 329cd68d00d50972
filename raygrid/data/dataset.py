"""The in-memory dataset every stage after loading works on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """Implicit-feedback interactions split for evaluation, plus one canonical image per item.

    Arrays may be read-only (they can come zero-copy from the Ray object store):
    copy before mutating.

    Attributes:
        name: Human-readable dataset name.
        n_users: Number of users; user ids are ``0..n_users-1``.
        n_items: Number of items; item ids are ``0..n_items-1``.
        images: ``uint8`` array ``(n_items, H, W, 3)``, RGB, the canonical product images.
        item_labels: ``int64`` ``(n_items,)`` ground-truth category of each item,
            ``-1`` where unknown (real datasets have no labels; extractors then classify).
        category_names: Name of each category index used in ``item_labels``.
        train_users: ``int64`` ``(n_train,)`` user of each training interaction.
        train_items: ``int64`` ``(n_train,)`` item of each training interaction.
        test_items: ``int64`` ``(n_users,)`` held-out (temporally last) item of each
            user, ``-1`` for a user without one.
        origin_category: A rarely recommended category suggested as attack origin
            (the synthetic generator knows it; ``None`` for real data).
        target_category: A popular category suggested as attack target.
        validation_items: ``int64`` ``(n_users,)`` held-out validation item of each
            user (the latest interaction before the test one), ``-1`` for none;
            ``None`` when the dataset holds out no validation item.
        cold_items: ``int64`` ids of the cold items held out for the AIP study:
            items in the catalogue (with images) that no user interacted with;
            ``None`` when none are held out.
        item_ids: The source's id of each item (e.g. its ASIN), by item index;
            empty for generated data.
        user_ids: The source's id of each user, by user index; empty for generated data.
        item_features: ``float32`` ``(n_items, D)`` features shipped with the
            source (the VAR layout's ``features.npy``), else ``None``.
        stats: Statistics of the dataset and its preprocessing (see
            :func:`raygrid.data.stats.dataset_stats`); empty for generated data.
    """

    name: str
    n_users: int
    n_items: int
    images: np.ndarray
    item_labels: np.ndarray
    category_names: tuple[str, ...]
    train_users: np.ndarray
    train_items: np.ndarray
    test_items: np.ndarray
    origin_category: int | None = None
    target_category: int | None = None
    validation_items: np.ndarray | None = None
    cold_items: np.ndarray | None = None
    item_ids: tuple[str, ...] = ()
    user_ids: tuple[str, ...] = ()
    item_features: np.ndarray | None = None
    stats: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (n_items, H, W, 3), got {self.images.dtype} {self.images.shape}")
        if self.images.shape[0] != self.n_items:
            raise ValueError(f"{self.images.shape[0]} images for {self.n_items} items")
        if self.item_labels.shape != (self.n_items,):
            raise ValueError("item_labels must have one entry per item")
        if self.train_users.shape != self.train_items.shape:
            raise ValueError("train_users and train_items must have the same length")
        if self.test_items.shape != (self.n_users,):
            raise ValueError("test_items must have one entry per user")
        if self.validation_items is not None and self.validation_items.shape != (self.n_users,):
            raise ValueError("validation_items must have one entry per user")
        if self.item_ids and len(self.item_ids) != self.n_items:
            raise ValueError("item_ids must have one entry per item")
        if self.user_ids and len(self.user_ids) != self.n_users:
            raise ValueError("user_ids must have one entry per user")
        if self.item_features is not None and self.item_features.shape[0] != self.n_items:
            raise ValueError("item_features must have one row per item")

    @property
    def n_train(self) -> int:
        """Number of training interactions."""
        return int(self.train_users.shape[0])

    @property
    def image_size(self) -> int:
        """Side of the (square) item images in pixels."""
        return int(self.images.shape[1])

    def item_popularity(self) -> np.ndarray:
        """Training interactions per item, ``int64`` ``(n_items,)``."""
        return np.bincount(self.train_items, minlength=self.n_items)
