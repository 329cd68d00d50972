"""What recommenders trained in epochs share: early-stopping settings and the early stopper.

Early stopping follows the protocol of the AIP paper (model selected on its best
validation performance): every ``validate_every`` epochs the model ranks all
items for the users that have a validation item (training items masked) and
Recall@``validation_cutoff`` of those items is measured; training stops after
``early_stopping_patience`` validations without improvement and the parameters
of the best validation are restored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import Field

from raygrid.config.base import ComponentConfig

logger = logging.getLogger(__name__)


class EpochTrainingConfig(ComponentConfig):
    """Early-stopping fields of every recommender trained in epochs.

    Attributes:
        early_stopping_patience: Validations without improvement before training
            stops; ``None`` (default) trains all epochs without validating.
        validate_every: Epochs between validations.
        validation_cutoff: K of the validation Recall@K.
    """

    early_stopping_patience: int | None = Field(None, ge=1)
    validate_every: int = Field(1, ge=1)
    validation_cutoff: int = Field(20, ge=1)


class EarlyStopping:
    """Validates a model during training, remembers its best state and restores it at the end.

    Args:
        model: The recommender being trained (a :class:`~raygrid.recommenders.base.Recommender`
            whose :meth:`topk` works between epochs).
        validation_items: ``int`` ``(n_users,)`` validation item per user, ``-1`` = none.
        config: The model's :class:`EpochTrainingConfig`.
        snapshot: Returns a copy of the trainable state (taken at each improvement).
        restore: Puts a snapshot back.

    Attributes:
        history: ``(epoch, validation recall)`` of every validation.
        best_epoch: Epoch of the best validation (0 before any).
    """

    def __init__(
        self,
        model: Any,
        validation_items: np.ndarray,
        config: EpochTrainingConfig,
        snapshot: Callable[[], Any],
        restore: Callable[[Any], None],
    ) -> None:
        self.model = model
        self.users = np.flatnonzero(validation_items >= 0)
        if self.users.size == 0:
            raise ValueError("early stopping needs at least one user with a validation item")
        self.items = validation_items[self.users]
        self.config = config
        self.cutoff = min(config.validation_cutoff, model.n_items)
        self._snapshot, self._restore = snapshot, restore
        self.history: list[tuple[int, float]] = []
        self.best_epoch = 0
        self._best_value = -np.inf
        self._best_state: Any = None
        self._since_best = 0

    @classmethod
    def for_model(
        cls, model: Any, snapshot: Callable[[], Any], restore: Callable[[Any], None]
    ) -> EarlyStopping | None:
        """The stopper the model's config asks for, or ``None`` when early stopping is off.

        Raises:
            ValueError: Early stopping is on but ``fit`` got no validation items.
        """
        config = model.config
        if config.early_stopping_patience is None:
            return None
        if model.validation_items is None:
            raise ValueError(
                f"{type(model).__name__}: early_stopping_patience is set but fit() got no validation_items; "
                "pass them or set early_stopping_patience to null"
            )
        return cls(model, model.validation_items, config, snapshot, restore)

    def validate(self) -> float:
        """Recall@cutoff of the validation items under the model's current state."""
        top = self.model.topk(self.cutoff, self.users)
        return float((top == self.items[:, None]).any(axis=1).mean())

    def after_epoch(self, epoch: int) -> bool:
        """Validate if due; returns whether training should stop."""
        if epoch % self.config.validate_every:
            return False
        value = self.validate()
        self.history.append((epoch, value))
        if value > self._best_value:
            self._best_value, self.best_epoch, self._since_best = value, epoch, 0
            self._best_state = self._snapshot()
        else:
            self._since_best += 1
        logger.debug("epoch %d: validation recall@%d %.4f (best %.4f)", epoch, self.cutoff, value, self._best_value)
        return self._since_best >= self.config.early_stopping_patience

    def finish(self) -> None:
        """Restore the best validated state (if any validation ran)."""
        if self._best_state is not None:
            self._restore(self._best_state)
            logger.info("early stopping: kept epoch %d (validation recall@%d %.4f)", self.best_epoch, self.cutoff, self._best_value)
