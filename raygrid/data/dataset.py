"""The in-memory dataset every stage after loading works on."""

from __future__ import annotations

from dataclasses import dataclass

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
