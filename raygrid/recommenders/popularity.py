"""Most-popular ranking: the non-personalised baseline every recommender must beat."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from raygrid.config.base import ComponentConfig
from raygrid.recommenders.base import Recommender
from raygrid.registry import RECOMMENDERS


@RECOMMENDERS.register("pop")
class Popularity(Recommender):
    """Scores every item by its number of distinct training users, the same for every user.

    Ties are broken by item id (lower first, as :func:`torch.topk` keeps the order of
    equal scores only approximately, the score adds a tiny id-decreasing term).
    ``item_features`` are ignored.
    """

    class Config(ComponentConfig):
        """No hyper-parameters."""

        name: Literal["pop"] = "pop"

    def __init__(self, config: Config | None = None, **kwargs) -> None:
        super().__init__(self.Config() if config is None else config, **kwargs)
        self.popularity: np.ndarray | None = None
        self._scores: torch.Tensor | None = None

    def _fit(self, train_users: np.ndarray, train_items: np.ndarray, item_features: np.ndarray | None) -> None:
        self.popularity = np.bincount(train_items, minlength=self.n_items).astype(np.int64)
        tie_break = np.arange(self.n_items, dtype=np.float64) / (2.0 * self.n_items)
        self._scores = torch.as_tensor(self.popularity - tie_break, dtype=torch.float64, device=self.device)

    def score(self, users: np.ndarray, item_features: np.ndarray | None = None) -> torch.Tensor:
        """``float64`` ``(n, n_items)``: each row is the popularity (minus the tie-break term)."""
        self._check_fitted()
        users = self._check_users(users)
        return self._scores.unsqueeze(0).expand(users.shape[0], -1)
