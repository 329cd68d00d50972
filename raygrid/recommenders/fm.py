"""FM: a factorisation machine with visual item features, trained by LightFM with the BPR loss (VAR paper)."""

from __future__ import annotations

import copy
import logging
import time
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from raygrid.recommenders.base import Recommender
from raygrid.recommenders.training import EarlyStopping, EpochTrainingConfig
from raygrid.registry import RECOMMENDERS

logger = logging.getLogger(__name__)


@RECOMMENDERS.register("fm")
class FM(Recommender):
    """LightFM (Kula, 2015) hybrid factorisation machine, BPR loss, items described by identity and visual features.

    The item representation is the weighted sum of the embeddings (and biases) of
    the item's features; the score is ``user_bias + item_bias + <user, item>``.
    Item feature columns, in this order, each with a name in :attr:`feature_names`:

    * ``item:<id>``: one identity column per item, weight 1;
    * ``visual:<k>``: one column per visual feature dimension, with the item's
      feature divided by the catalogue's mean L2 norm (so visual weights are of
      the order of the identity weight, whatever the extractor's scale).

    Identity and visual columns are distinct (the published VAR code let visual
    features share columns with identity features), and ids are mapped
    explicitly: raygrid's user and item ids are contiguous ``0..n-1`` and are
    LightFM's row indices, item ``i``'s identity column is ``i``, and visual
    dimension ``k`` is column ``n_items + k``.

    :meth:`score` builds item representations from the features it is given,
    so an attack's features are scored without refitting: LightFM's learned
    per-feature embeddings are fixed, the item's visual weights change.

    Defaults are LightFM's (10 components, Adagrad, learning rate 0.05), with BPR
    loss and 100 epochs, as in the VAR paper ("100 epochs ... all the parameters
    with the default values in the library"). Deterministic for a seed with one
    thread; LightFM's Hogwild training is not with several.

    Args:
        config: :class:`FM.Config`.
        seed: LightFM's ``random_state``.
        device: Torch device of the returned scores (training runs on CPU in LightFM).
        progress: Called after each epoch with ``(epoch, nan)`` (LightFM reports no loss).
    """

    class Config(EpochTrainingConfig):
        """FM hyper-parameters (LightFM's names).

        Attributes:
            no_components: Length of the latent embeddings.
            epochs: Passes over the interactions (100 in the VAR paper).
            learning_rate: Initial learning rate.
            learning_schedule: ``adagrad`` or ``adadelta``.
            item_alpha: L2 penalty on item feature embeddings.
            user_alpha: L2 penalty on user feature embeddings.
            num_threads: LightFM training threads (1 = deterministic).
            visual: Whether to give LightFM the visual features (False = identity only, plain BPR-MF-like FM).
        """

        name: Literal["fm"] = "fm"
        no_components: int = Field(10, ge=1)
        epochs: int = Field(100, ge=1)
        learning_rate: float = Field(0.05, gt=0)
        learning_schedule: Literal["adagrad", "adadelta"] = "adagrad"
        item_alpha: float = Field(0.0, ge=0)
        user_alpha: float = Field(0.0, ge=0)
        num_threads: int = Field(1, ge=1)
        visual: bool = True

    config: Config
    trains_on_device: ClassVar[bool] = False  # LightFM's Cython loop runs on the CPU

    def __init__(self, config: Config | None = None, **kwargs: Any) -> None:
        super().__init__(self.Config() if config is None else config, **kwargs)
        self.model: Any = None
        self.feature_scale: float = 1.0
        self.feature_names: tuple[str, ...] = ()
        self.early_stopping: EarlyStopping | None = None
        self._feature_dim = 0
        self._user_repr: tuple[torch.Tensor, torch.Tensor] | None = None
        self._fit_item_repr: tuple[torch.Tensor, torch.Tensor] | None = None
        self.fresh_scores = True  # score() returns a new tensor each call

    def _fit(self, train_users: np.ndarray, train_items: np.ndarray, item_features: np.ndarray | None) -> None:
        try:
            from lightfm import LightFM
        except ImportError as exc:  # pragma: no cover - lightfm-next is a dependency
            raise ImportError("the fm recommender needs LightFM: pip install lightfm-next") from exc
        import scipy.sparse as sp

        cfg = self.config
        if self.cold_items is not None:
            logger.warning("FM: LightFM samples BPR negatives from every item; cold_items are sampled too")
        if cfg.visual:
            if item_features is None:
                raise ValueError("FM needs item_features (n_items, d) at fit time (or set visual: false)")
            features = np.asarray(item_features, dtype=np.float32)
            mean_norm = float(np.linalg.norm(features, axis=1).mean())
            self.feature_scale = mean_norm if mean_norm > 0 else 1.0
            self._feature_dim = features.shape[1]
        self.feature_names = tuple(f"item:{i}" for i in range(self.n_items)) + tuple(
            f"visual:{k}" for k in range(self._feature_dim)
        )
        matrix = self._item_matrix(item_features)
        interactions = sp.coo_matrix(
            (np.ones(train_users.shape[0], dtype=np.float32), (train_users, train_items)),
            shape=(self.n_users, self.n_items),
        )
        self.model = LightFM(
            no_components=cfg.no_components,
            loss="bpr",
            learning_rate=cfg.learning_rate,
            learning_schedule=cfg.learning_schedule,
            item_alpha=cfg.item_alpha,
            user_alpha=cfg.user_alpha,
            random_state=np.random.RandomState(self.seed),
        )
        self._item_matrix_fit = matrix
        self.early_stopping = EarlyStopping.for_model(self, lambda: copy.deepcopy(self.model), self._restore)
        started = time.perf_counter()
        # Epochs run in chunks up to the next validation or progress report: each
        # fit_partial call re-validates its inputs, which costs time on small data.
        chunk = cfg.validate_every if self.early_stopping is not None else (1 if self.progress else cfg.epochs)
        epoch = 0
        while epoch < cfg.epochs:
            n = min(chunk, cfg.epochs - epoch)
            self.model.fit_partial(interactions, item_features=matrix, epochs=n, num_threads=cfg.num_threads)
            epoch += n
            self._refresh()
            if self.progress is not None:
                self.progress(epoch, float("nan"))
            if self.early_stopping is not None and self.early_stopping.after_epoch(epoch):
                break
        if self.early_stopping is not None:
            self.early_stopping.finish()
        logger.info("FM trained %d epochs in %.1f s", epoch, time.perf_counter() - started)

    def _restore(self, model: Any) -> None:
        self.model = model
        self._refresh()

    def _refresh(self) -> None:
        """Cache the user and fitted item representations as tensors (after each training step)."""
        user_bias, user_emb = self.model.get_user_representations()
        self._user_repr = (torch.as_tensor(user_bias, device=self.device), torch.as_tensor(user_emb, device=self.device))
        self._fit_item_repr = self._item_representations(self._item_matrix_fit)

    def _item_matrix(self, item_features: np.ndarray | torch.Tensor | None) -> Any:
        """The ``(n_items, n_items + d)`` CSR feature matrix LightFM sees (identity block, scaled visual block)."""
        import scipy.sparse as sp

        identity = sp.identity(self.n_items, dtype=np.float32, format="csr")
        if not self._feature_dim:
            return identity
        if isinstance(item_features, torch.Tensor):
            item_features = item_features.detach().cpu().numpy()
        visual = np.asarray(item_features, dtype=np.float32)
        if visual.shape != (self.n_items, self._feature_dim):
            raise ValueError(f"item_features must be ({self.n_items}, {self._feature_dim}), got {visual.shape}")
        return sp.hstack([identity, sp.csr_matrix(visual / self.feature_scale)], format="csr", dtype=np.float32)

    def _item_representations(self, matrix: Any) -> tuple[torch.Tensor, torch.Tensor]:
        bias, emb = self.model.get_item_representations(matrix)
        return torch.as_tensor(bias, device=self.device), torch.as_tensor(emb, device=self.device)

    def _item_side(self, item_features: np.ndarray | torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if item_features is None:
            return self._fit_item_repr
        return self._item_representations(self._item_matrix(item_features))

    def score(self, users: np.ndarray, item_features: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """``float32`` ``(n, n_items)`` scores; ``item_features`` (raw) replace the fitted visual features."""
        self._check_fitted()
        users_t = torch.as_tensor(self._check_users(users), device=self.device)
        item_bias, item_emb = self._session_item_side(item_features)
        user_bias, user_emb = self._user_repr
        return user_bias[users_t].unsqueeze(1) + item_bias.unsqueeze(0) + user_emb[users_t] @ item_emb.T

    def _check_fitted(self) -> None:
        if self.model is None or self._user_repr is None:
            raise RuntimeError("FM is not fitted: call fit() first")
        super()._check_fitted()
