"""The training loop shared by the BPR-trained recommenders (BPR-MF, VBPR, AMR, DVBPR).

BPR (Rendle et al., UAI 2009) with bootstrap sampling: each epoch draws
``n_train`` triples ``(u, i, j)`` with replacement, ``(u, i)`` a uniformly drawn
training interaction and ``j`` a uniformly drawn item ``u`` has not interacted
with, and runs Adam over minibatches of them. A subclass builds its parameters
(:meth:`PairwiseRecommender._build`) and defines the minibatch objective
(:meth:`PairwiseRecommender._training_loss`); this class owns sampling, epochs,
progress, and early stopping.
"""

from __future__ import annotations

import abc
import logging
import time
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from raygrid.recommenders.base import Recommender
from raygrid.recommenders.training import EarlyStopping, EpochTrainingConfig

logger = logging.getLogger(__name__)


class PairwiseConfig(EpochTrainingConfig):
    """Fields of every BPR-trained recommender.

    Attributes:
        epochs: Training epochs; one epoch draws as many triples as there are
            unique training interactions.
        batch_size: Triples per optimiser step.
        lr: Learning rate of the optimiser.
        reg: L2 regularisation weight lambda_Theta.
        optimizer: ``adam``, or ``sgd`` (plain minibatch gradient descent on the
            mean loss, as the AIP authors train BPR-MF). Adam normalises each
            parameter's step, so a rarely sampled item's bias moves about as fast
            as a popular one's; SGD keeps steps proportional to how often an item
            is sampled, which preserves popularity in the item biases.
    """

    epochs: int = Field(50, ge=1)
    batch_size: int = Field(512, ge=1)
    lr: float = Field(1e-3, gt=0)
    reg: float = Field(1e-2, ge=0)
    optimizer: Literal["adam", "sgd"] = "adam"


class PairwiseRecommender(Recommender):
    """Base of the recommenders trained with the BPR criterion and bootstrap sampling.

    Deterministic for a seed on CPU: :meth:`_build` gets a seeded CPU
    :class:`torch.Generator`, sampling uses a seeded :func:`numpy.random.default_rng`,
    and nothing else draws random numbers unless a subclass does.

    Attributes:
        params: The trainable :class:`torch.nn.Module` (set by ``fit``).
        loss_history: Mean training loss of each epoch.
        early_stopping: The :class:`EarlyStopping` of the last ``fit`` (``None`` when off).
    """

    config: PairwiseConfig

    def __init__(self, config: PairwiseConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.params: torch.nn.Module | None = None
        self.loss_history: list[float] = []
        self.early_stopping: EarlyStopping | None = None
        self._seen_keys: np.ndarray | None = None  # sorted user * n_items + item of training pairs
        self._epoch = 0

    # ------------------------------------------------------------------ subclass API

    @abc.abstractmethod
    def _build(
        self, train_users: np.ndarray, train_items: np.ndarray, item_features: np.ndarray | None, generator: torch.Generator
    ) -> torch.nn.Module:
        """Check the inputs and return the freshly initialised parameters (on CPU or the device)."""

    @abc.abstractmethod
    def _training_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """The minibatch objective that is minimised (BPR loss plus regularisation)."""

    def _optimizer(self) -> torch.optim.Optimizer:
        """Adam (the fused kernel updates all parameters in one pass) or SGD, as configured."""
        if self.config.optimizer == "sgd":
            return torch.optim.SGD(self.params.parameters(), lr=self.config.lr)
        fused = self.device.type in ("cpu", "cuda")
        return torch.optim.Adam(self.params.parameters(), lr=self.config.lr, fused=fused or None)

    def _on_epoch_start(self, epoch: int) -> None:
        """Hook called before each epoch (epochs count from 1)."""

    def _on_epoch_end(self, epoch: int, mean_loss: float) -> None:
        """Hook called after each epoch with its mean training loss."""

    def _train_mode(self, training: bool) -> None:
        """Switch modules with dropout or batch norm between training and evaluation."""
        self.params.train(training)

    # ------------------------------------------------------------------ training

    def _fit(self, train_users: np.ndarray, train_items: np.ndarray, item_features: np.ndarray | None) -> None:
        n_warm = self.n_items if self.cold_items is None else int((~self.cold_items).sum())
        full = np.flatnonzero(np.diff(self._seen_indptr) >= n_warm)
        if full.size:
            raise ValueError(f"{full.size} user(s) interacted with every item (e.g. user {full[0]}): no negative to sample")
        cfg = self.config
        self._seen_keys = train_users * self.n_items + train_items  # sorted: fit passes sorted unique pairs
        generator = torch.Generator().manual_seed(self.seed)
        self.params = self._build(train_users, train_items, item_features, generator).to(self.device)
        optimizer = self._optimizer()
        self.early_stopping = EarlyStopping.for_model(self, self._snapshot, self._restore)
        rng = np.random.default_rng(self.seed)
        n_train = train_users.shape[0]
        self.loss_history = []
        started = time.perf_counter()
        for epoch in range(1, cfg.epochs + 1):
            self._epoch = epoch
            self._on_epoch_start(epoch)
            self._train_mode(True)
            draw = rng.integers(0, n_train, size=n_train)
            users_np = train_users[draw]
            neg_np = self._sample_negatives(users_np, rng)
            users = torch.as_tensor(users_np, device=self.device)
            pos = torch.as_tensor(train_items[draw], device=self.device)
            neg = torch.as_tensor(neg_np, device=self.device)
            total = torch.zeros((), device=self.device)
            for start in range(0, n_train, cfg.batch_size):
                batch = slice(start, start + cfg.batch_size)
                loss = self._training_loss(users[batch], pos[batch], neg[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * users[batch].shape[0]
            self._train_mode(False)
            mean_loss = float(total) / n_train
            self.loss_history.append(mean_loss)
            logger.debug("%s epoch %d/%d: loss %.5f", type(self).__name__, epoch, cfg.epochs, mean_loss)
            self._on_epoch_end(epoch, mean_loss)
            if self.progress is not None:
                self.progress(epoch, mean_loss)
            if self.early_stopping is not None and self.early_stopping.after_epoch(epoch):
                break
        if self.early_stopping is not None:
            self.early_stopping.finish()
        self._train_mode(False)
        logger.info(
            "%s trained %d epochs on %d interactions in %.1f s, final loss %.5f",
            type(self).__name__, len(self.loss_history), n_train, time.perf_counter() - started, self.loss_history[-1],
        )

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.params.state_dict().items()}

    def _restore(self, state: dict[str, torch.Tensor]) -> None:
        self.params.load_state_dict(state)

    def _sample_negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """For each user, a uniformly drawn item the user has not interacted with in training.

        Cold items (``fit(cold_items=...)``) are never drawn: they are not part of
        the training catalogue.
        """
        if self.cold_items is None:
            def draw(n: int) -> np.ndarray:
                return rng.integers(0, self.n_items, size=n)
        else:
            warm = np.flatnonzero(~self.cold_items)

            def draw(n: int) -> np.ndarray:
                return warm[rng.integers(0, warm.shape[0], size=n)]

        neg = draw(users.shape[0])
        redraw = self._is_seen(users, neg)
        while redraw.any():  # terminates: _fit checked that every user has an item left to draw
            neg[redraw] = draw(int(redraw.sum()))
            redraw[redraw] = self._is_seen(users[redraw], neg[redraw])
        return neg

    def _is_seen(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + items
        pos = np.searchsorted(self._seen_keys, keys)
        return self._seen_keys[np.minimum(pos, self._seen_keys.shape[0] - 1)] == keys

    @staticmethod
    def _pair_loss(x: torch.Tensor) -> torch.Tensor:
        """Mean ``softplus(-(x_ui - x_uj))`` of scores stacked as ``[x_ui for the batch, x_uj for the batch]``."""
        batch = x.shape[0] // 2
        return torch.nn.functional.softplus(x[batch:] - x[:batch]).mean()

    def _check_fitted(self) -> None:
        if self.params is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() first")
        super()._check_fitted()
