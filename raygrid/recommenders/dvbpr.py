"""DVBPR: Deep-style VBPR, user embeddings and a CNN-F image network trained end to end (Kang et al., ICDM 2017)."""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from raygrid.recommenders.pairwise import PairwiseConfig, PairwiseRecommender
from raygrid.registry import RECOMMENDERS

logger = logging.getLogger(__name__)

_INIT_STD = 0.01
"""Standard deviation of the normal initialisation of the user embeddings."""

DEVICE_COPY_BYTES = 2 << 30
"""On a GPU, a catalogue up to this size is copied to the device once for training; a larger one is read per step."""


class _DVBPRParameters(torch.nn.Module):
    """User content embeddings ``theta_u`` and the image network ``Phi`` (storage only)."""

    def __init__(self, n_users: int, factors: int, cnn: torch.nn.Module, generator: torch.Generator) -> None:
        super().__init__()
        self.user_factors = torch.nn.Parameter(torch.randn(n_users, factors, generator=generator) * _INIT_STD)
        self.cnn = cnn


@RECOMMENDERS.register("dvbpr")
class DVBPR(PairwiseRecommender):
    """Scores ``x_ui = theta_u . Phi(X_i)``, with ``Phi`` a CNN-F trained with the users' factors on item images.

    Kang et al. ("Visually-Aware Fashion Recommendation and Design with Generative
    Image Models", ICDM 2017), the end-to-end ranker of the AIP study: no item
    factors or biases, so an item's score comes from its image alone (a cold item
    is ranked like any other). Trained with BPR on bootstrap-sampled triples, Adam,
    L2 ``reg`` on ``theta_u`` per triple and weight decay ``cnn_weight_decay`` on
    the network.

    The item content given to :meth:`fit` and :meth:`score` is the catalogue's
    images, ``uint8`` ``(n_items, H, W, 3)`` (the VAR stage passes the dataset's
    images with the attacked ones swapped in), or to :meth:`score` a float tensor
    ``(n_items, 3, H, W)`` in ``[0, 1]``, with ``requires_grad`` to differentiate
    scores with respect to pixels (INSA-style attacks). Dropout is active only
    while training; scores are computed in evaluation mode (the AIP code left
    dropout on at evaluation).

    The images stay where the caller keeps them (a memory map, or a
    :class:`~raygrid.data.patched.PatchedRows` view with some items swapped):
    each training step reads its triples' images and each scoring pass reads the
    catalogue ``score_batch`` images at a time, moving only those to the device
    (on a GPU, a catalogue of at most :data:`DEVICE_COPY_BYTES` is copied there
    once for training instead). At the AIP study's scale (326k items at 224 px:
    49 GB) neither host nor GPU memory holds a copy of the catalogue. A fitted
    model keeps only the items' embeddings, not the images.

    Deterministic for a seed on CPU: the network's initialisation is seeded
    (:class:`~raygrid.extractors.cnnf.CNNF`), and dropout draws from the global
    torch generator reseeded inside a :func:`torch.random.fork_rng` block, so
    the caller's random state is left untouched.

    Args:
        config: :class:`DVBPR.Config`.
        seed: Seed of initialisation, sampling and dropout.
        device: Torch device (a GPU makes the CNN practical at real image sizes).
        progress: Called after each epoch with ``(epoch, mean loss)``.
    """

    input_kind: ClassVar[str] = "images"

    class Config(PairwiseConfig):
        """DVBPR hyper-parameters.

        Attributes:
            factors: K, the embedding length (100 in the AIP paper).
            fc_dim: Width of CNN-F's fc6 and fc7 (4096 in CNN-F; smaller for CPU demos).
            dropout: Dropout after fc6 and fc7 while training.
            lr: Adam learning rate (1e-3, within the AIP paper's search grid).
            user_lr: Adam learning rate of the user embeddings (``None``: ``lr``).
                A user is in a handful of triples per epoch (2.7 on the demo data)
                while the network learns from every one, so at the network's rate
                the user embeddings lag far behind it.
            reg: L2 weight on ``theta_u`` per triple.
            cnn_weight_decay: Adam weight decay of the network's weights
                (1e-4, within the AIP paper's search grid).
            batch_size: Triples per step (each needs two images through the CNN).
            epochs: Training epochs (20: the CNN is trained from scratch on the catalogue).
            score_batch: Images per CNN forward pass when embedding the catalogue for scoring.
        """

        name: Literal["dvbpr"] = "dvbpr"
        factors: int = Field(100, ge=1)
        fc_dim: int = Field(4096, ge=8)
        dropout: float = Field(0.5, ge=0, lt=1)
        lr: float = Field(1e-3, gt=0)
        user_lr: float | None = Field(None, gt=0)
        reg: float = Field(1e-3, ge=0)
        cnn_weight_decay: float = Field(1e-4, ge=0)
        batch_size: int = Field(128, ge=1)
        epochs: int = Field(20, ge=1)
        score_batch: int = Field(256, ge=1)

    config: Config

    def __init__(self, config: Config | None = None, **kwargs: Any) -> None:
        super().__init__(self.Config() if config is None else config, **kwargs)
        self._images: Any = None  # uint8 (n_items, H, W, 3) array-like (or small device tensor), while fitting
        self._item_embeddings: torch.Tensor | None = None  # of the fitted images, after training
        self.fresh_scores = True  # score() returns a new tensor each call

    # ------------------------------------------------------------------ training

    def _fit(self, train_users: np.ndarray, train_items: np.ndarray, item_features: np.ndarray | None) -> None:
        self._item_embeddings = None
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)  # dropout masks
            super()._fit(train_users, train_items, item_features)
        with torch.no_grad():
            self._item_embeddings = self._embed(None)
        self._images = None  # the embeddings stand for the fitted images from now on

    def _build(self, train_users, train_items, item_features, generator) -> _DVBPRParameters:
        from raygrid.extractors.cnnf import CNNF

        images = self._check_images(item_features)
        if self.device.type == "cuda" and np.prod(images.shape) <= DEVICE_COPY_BYTES:
            images = torch.as_tensor(np.asarray(images), device=self.device)  # one copy instead of one per step
        self._images = images
        cfg = self.config
        cnn = CNNF(cfg.factors, dropout=cfg.dropout, fc_dim=cfg.fc_dim, seed=self.seed)
        return _DVBPRParameters(self.n_users, cfg.factors, cnn, generator)

    def _optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        groups = [
            {"params": [self.params.user_factors], "weight_decay": 0.0, "lr": cfg.user_lr or cfg.lr},
            {"params": list(self.params.cnn.parameters()), "weight_decay": cfg.cnn_weight_decay},
        ]
        return torch.optim.Adam(groups, lr=cfg.lr)

    def _training_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        items = torch.cat((pos, neg))
        embeddings = self.params.cnn(self._float_images(self._read(self._images, items)))
        theta_u = self.params.user_factors.index_select(0, users)
        x = (theta_u.repeat(2, 1) * embeddings).sum(1)
        return self._pair_loss(x) + self.config.reg * theta_u.square().sum() / users.shape[0]

    # ------------------------------------------------------------------ images

    def _check_images(self, images: Any) -> Any:
        """``images`` if it is a ``uint8`` ``(n_items, H, W, 3)`` array-like, read without copying it.

        An ``ndarray``, a memory map or a :class:`~raygrid.data.patched.PatchedRows`
        passes as it is; anything else (nested lists) is converted.
        """
        if images is None:
            raise ValueError("DVBPR needs the item images, uint8 (n_items, H, W, 3), as item_features")
        if isinstance(images, torch.Tensor):
            images = images.cpu().numpy()
        if not all(hasattr(images, name) for name in ("shape", "dtype", "__getitem__")):
            images = np.asarray(images)
        shape, dtype = tuple(images.shape), np.dtype(images.dtype)
        if dtype != np.uint8 or len(shape) != 4 or shape[0] != self.n_items or shape[-1] != 3:
            raise ValueError(f"DVBPR item images must be uint8 (n_items={self.n_items}, H, W, 3), got {dtype} {shape}")
        return images

    def _read(self, images: Any, index: slice | torch.Tensor) -> torch.Tensor:
        """Rows ``index`` (a slice, or item ids) of uint8 ``images`` as a tensor on the model's device."""
        if isinstance(images, torch.Tensor):  # a catalogue copied to the device
            return images[index] if isinstance(index, slice) else images.index_select(0, index.to(images.device))
        batch = np.asarray(images[index if isinstance(index, slice) else index.cpu().numpy()])
        if not (batch.flags.writeable and batch.flags.c_contiguous):
            batch = np.array(batch)  # a slice of a read-only memory map: torch wants writable rows
        return torch.from_numpy(batch).to(self.device)

    @staticmethod
    def _float_images(images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` -> float ``(N, 3, H, W)`` in ``[0, 1]`` (see :meth:`_fit_size`)."""
        return DVBPR._fit_size(images.permute(0, 3, 1, 2).float().div_(255.0))

    @staticmethod
    def _fit_size(images: torch.Tensor) -> torch.Tensor:
        """Images smaller than CNN-F's minimum side are upsampled (bilinear) to it; others pass unchanged."""
        from raygrid.extractors.cnnf import upsample_to_min_side

        return upsample_to_min_side(images)

    def _embed(self, item_features: Any) -> torch.Tensor:
        """``Phi(X_i)`` for every item, ``(n_items, K)``, in evaluation mode, in batches of ``score_batch``."""
        if item_features is None:
            if self._item_embeddings is not None:
                return self._item_embeddings
            source, is_float = self._images, False
        elif isinstance(item_features, torch.Tensor) and item_features.is_floating_point():
            source, is_float = item_features.to(self.device), True
            if tuple(source.shape[:2]) != (self.n_items, 3):
                raise ValueError(f"float item images must be (n_items={self.n_items}, 3, H, W), got {tuple(source.shape)}")
        else:
            source, is_float = self._check_images(item_features), False
        cnn = self.params.cnn
        was_training = cnn.training
        cnn.eval()
        try:
            step = self.config.score_batch
            parts = []
            for start in range(0, self.n_items, step):
                rows = slice(start, start + step)
                chunk = self._fit_size(source[rows]) if is_float else self._float_images(self._read(source, rows))
                parts.append(cnn(chunk))
            return torch.cat(parts)
        finally:
            cnn.train(was_training)

    # ------------------------------------------------------------------ scoring

    def _item_side(self, item_features: Any) -> torch.Tensor:
        # The catalogue goes through the CNN once per ranking, not once per user block.
        return self._embed(item_features)

    def score(self, users: np.ndarray, item_features: Any = None) -> torch.Tensor:
        """``float32`` ``(n, n_items)`` scores ``theta_u . Phi(X_i)``.

        Args:
            users: ``int`` ``(n,)`` user ids.
            item_features: Item images to score with instead of the fitted ones:
                ``uint8`` ``(n_items, H, W, 3)``, or a float tensor ``(n_items, 3, H, W)``
                in ``[0, 1]`` (with ``requires_grad`` to differentiate); ``None`` =
                the fitted images.
        """
        self._check_fitted()
        users_t = torch.as_tensor(self._check_users(users), device=self.device)
        wants_grad = torch.is_grad_enabled() and isinstance(item_features, torch.Tensor) and item_features.requires_grad
        with torch.set_grad_enabled(wants_grad):
            embeddings = self._session_item_side(item_features)
            return self.params.user_factors[users_t] @ embeddings.T
