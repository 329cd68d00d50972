"""VBPR: Visual Bayesian Personalized Ranking (He & McAuley, AAAI 2016)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from raygrid.config.base import ComponentConfig
from raygrid.recommenders.base import Recommender
from raygrid.registry import RECOMMENDERS

logger = logging.getLogger(__name__)

_INIT_STD = 0.01
"""Standard deviation of the normal initialisation of factors and of E (Tang et al.'s code)."""


class _VBPRParameters(torch.nn.Module):
    """The trainable parameters of VBPR (storage only; the maths lives in :class:`VBPR`)."""

    def __init__(
        self, n_users: int, n_items: int, feature_dim: int, factors: int, visual_factors: int, generator: torch.Generator
    ) -> None:
        super().__init__()

        def normal(*shape: int) -> torch.nn.Parameter:
            return torch.nn.Parameter(torch.randn(*shape, generator=generator) * _INIT_STD)

        self.item_bias = torch.nn.Parameter(torch.zeros(n_items))  # beta_i
        self.user_factors = normal(n_users, factors)  # gamma_u
        self.item_factors = normal(n_items, factors)  # gamma_i
        self.user_visual_factors = normal(n_users, visual_factors)  # theta_u
        self.visual_projection = normal(feature_dim, visual_factors)  # E, (d x K')
        self.visual_bias = torch.nn.Parameter(torch.zeros(feature_dim))  # beta'


@RECOMMENDERS.register("vbpr")
class VBPR(Recommender):
    r"""Visual Bayesian Personalized Ranking (He & McAuley, "VBPR: Visual Bayesian
    Personalized Ranking from Implicit Feedback", AAAI 2016).

    Score of user ``u`` for item ``i`` with (scaled) visual feature ``f_i``::

        x_ui = beta_i + gamma_u . gamma_i + theta_u . (E f_i) + beta' . f_i

    The paper's global offset ``alpha`` and user bias ``beta_u`` are omitted: they
    are the same for the two items of a BPR pair, so they cancel in
    ``x_ui - x_uj``, get no gradient and never change a user's ranking.

    Training maximises the BPR criterion (Rendle et al., UAI 2009) with bootstrap
    sampling: each epoch draws ``n_train`` triples ``(u, i, j)`` with replacement,
    ``(u, i)`` a uniformly drawn training interaction and ``j`` a uniformly drawn item
    ``u`` has not interacted with, and runs Adam over minibatches of them. The loss
    of a minibatch ``B`` is::

        1/|B| * sum_B [ softplus(-(x_ui - x_uj))
                        + reg * (|gamma_u|^2 + |theta_u|^2 + |gamma_i|^2 + |gamma_j|^2 + beta_i^2 + beta_j^2) ]
        + reg / |B| * (|E|_F^2 + |beta'|^2)

    i.e. the summed per-triple loss with the shared parameters penalised once per
    minibatch (as in cornac's VBPR), divided by ``|B|`` so that the step size does
    not depend on the batch size.

    Feature scaling: the item features given to :meth:`fit` are divided by one
    global constant, their mean L2 norm (kept as :attr:`feature_scale`), and
    :meth:`score` divides any features it is given by the same constant. Raw CNN
    features (e.g. ResNet50 pool outputs, norms in the tens) would otherwise make
    ``E f_i`` and ``beta' . f_i`` orders of magnitude larger than the 0.01-scale
    factors at initialisation, so the learning rate would have to be retuned per
    extractor. A single constant, unlike per-item normalisation, keeps the geometry
    of the feature space: an attack that changes an item's feature norm or
    direction changes the scaled feature in the same proportion, and features
    swapped in at :meth:`score` time are measured on the scale the model was
    trained on.

    AMR (Tang et al., TKDE 2019) is this model plus an adversarial term: it
    overrides :meth:`_training_loss` to add ``adv_weight * _bpr_loss(users, pos,
    neg, feature_delta=delta)``, where ``delta`` is a perturbation of the scaled
    feature table (obtainable as the gradient of :meth:`_bpr_loss` with respect to
    a zero ``feature_delta``), and may use :meth:`_on_epoch_start` to switch the term
    on after some epochs. VBPR's training draws no random numbers outside
    :meth:`_fit` and :meth:`_sample_negatives`, so an AMR whose adversarial weight is
    0 (and that then draws nothing extra) trains identically for the same seed.

    Deterministic for a seed on CPU: initialisation uses a seeded
    :class:`torch.Generator` on CPU (then moves to ``device``), sampling a seeded
    :func:`numpy.random.default_rng`.

    Args:
        config: :class:`VBPR.Config`.
        seed: Seed of initialisation and sampling.
        device: Torch device of parameters and scoring.
        progress: Called after each epoch with ``(epoch, mean loss)``.

    Attributes:
        feature_scale: The constant the item features are divided by (set by ``fit``).
        loss_history: Mean training loss of each epoch.
    """

    class Config(ComponentConfig):
        """VBPR hyper-parameters.

        Defaults: 64-dimensional collaborative and visual factors and minibatches of
        512 triples follow Tang et al. (AMR, TKDE 2019), whose training settings the
        VAR paper says it used for VBPR and AMR (their released ``run.sh``:
        ``emb1_K=64``, ``batch_size=512``; the VAR authors' code also has
        ``emb1_K=64``). Tang et al. optimise with Adagrad at per-parameter-group
        rates for 2000 epochs; we use Adam at its usual ``lr=1e-3`` on features
        scaled to unit mean norm. ``reg=1e-2`` and 50 epochs were chosen on the
        embedded synthetic catalogue (``small``: 3,000 users, 1,500 items, 8x8
        pooled-colour features as a stand-in for CNN features): Recall@20 0.184 at
        50 epochs against 0.165 with ``reg=1e-3``, 0.158 with ``reg=1e-1`` and 0.162
        for popularity; 100 epochs gain little (0.190). Real datasets may want more
        epochs (:attr:`VBPR.loss_history` is kept).

        Attributes:
            factors: K, length of the collaborative factors gamma_u, gamma_i.
            visual_factors: K', length of the visual factors theta_u and of E f_i.
            epochs: Training epochs; one epoch draws as many triples as there are
                unique training interactions.
            batch_size: Triples per Adam step.
            lr: Adam learning rate.
            reg: L2 regularisation weight lambda_Theta (see the class docstring for
                the exact loss).
        """

        name: Literal["vbpr"] = "vbpr"
        factors: int = Field(64, ge=1)
        visual_factors: int = Field(64, ge=1)
        epochs: int = Field(50, ge=1)
        batch_size: int = Field(512, ge=1)
        lr: float = Field(1e-3, gt=0)
        reg: float = Field(1e-2, ge=0)

    config: Config

    def __init__(self, config: Config | None = None, **kwargs) -> None:
        super().__init__(self.Config() if config is None else config, **kwargs)
        self.params: _VBPRParameters | None = None
        self.feature_scale: float | None = None
        self.loss_history: list[float] = []
        self._features: torch.Tensor | None = None  # scaled fit features, (n_items, d), on device
        self._seen_keys: np.ndarray | None = None  # sorted user * n_items + item of training pairs
        self._epoch = 0
        self._session: tuple[object, tuple[torch.Tensor, torch.Tensor]] | None = None

    # ------------------------------------------------------------------ training

    def _fit(self, train_users: np.ndarray, train_items: np.ndarray, item_features: np.ndarray | None) -> None:
        if item_features is None:
            raise ValueError("VBPR needs item_features (n_items, d) at fit time")
        full = np.flatnonzero(np.diff(self._seen_indptr) >= self.n_items)
        if full.size:
            raise ValueError(f"{full.size} user(s) interacted with every item (e.g. user {full[0]}): no negative to sample")
        cfg = self.config
        features = np.asarray(item_features, dtype=np.float32)
        mean_norm = float(np.linalg.norm(features, axis=1).mean())
        self.feature_scale = mean_norm if mean_norm > 0 else 1.0
        # Scaled exactly as scale_features() does, so that passing the fit features to
        # score() reproduces score(users).
        self._features = torch.as_tensor(features, device=self.device) / self.feature_scale
        self._seen_keys = train_users * self.n_items + train_items  # sorted: fit passes sorted unique pairs

        generator = torch.Generator().manual_seed(self.seed)
        self.params = _VBPRParameters(
            self.n_users, self.n_items, features.shape[1], cfg.factors, cfg.visual_factors, generator
        ).to(self.device)
        # The fused kernel updates all parameters in one pass (faster than the per-tensor loop).
        fused = self.device.type in ("cpu", "cuda")
        optimizer = torch.optim.Adam(self.params.parameters(), lr=cfg.lr, fused=fused or None)
        rng = np.random.default_rng(self.seed)
        n_train = train_users.shape[0]
        self.loss_history = []
        started = time.perf_counter()
        for epoch in range(1, cfg.epochs + 1):
            self._epoch = epoch
            self._on_epoch_start(epoch)
            draw = rng.integers(0, n_train, size=n_train)
            users_np = train_users[draw]
            pos_np = train_items[draw]
            neg_np = self._sample_negatives(users_np, rng)
            users = torch.as_tensor(users_np, device=self.device)
            pos = torch.as_tensor(pos_np, device=self.device)
            neg = torch.as_tensor(neg_np, device=self.device)
            total = torch.zeros((), device=self.device)
            for start in range(0, n_train, cfg.batch_size):
                batch = slice(start, start + cfg.batch_size)
                loss = self._training_loss(users[batch], pos[batch], neg[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * users[batch].shape[0]
            mean_loss = float(total) / n_train
            self.loss_history.append(mean_loss)
            logger.debug("%s epoch %d/%d: loss %.5f", type(self).__name__, epoch, cfg.epochs, mean_loss)
            self._on_epoch_end(epoch, mean_loss)
            if self.progress is not None:
                self.progress(epoch, mean_loss)
        logger.info(
            "%s trained %d epochs on %d interactions in %.1f s, final loss %.5f",
            type(self).__name__, cfg.epochs, n_train, time.perf_counter() - started, self.loss_history[-1],
        )

    def _sample_negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """For each user, a uniformly drawn item the user has not interacted with in training."""
        neg = rng.integers(0, self.n_items, size=users.shape[0])
        redraw = self._is_seen(users, neg)
        while redraw.any():  # terminates: _fit checked that no user has seen every item
            neg[redraw] = rng.integers(0, self.n_items, size=int(redraw.sum()))
            redraw[redraw] = self._is_seen(users[redraw], neg[redraw])
        return neg

    def _is_seen(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + items
        pos = np.searchsorted(self._seen_keys, keys)
        return self._seen_keys[np.minimum(pos, self._seen_keys.shape[0] - 1)] == keys

    def _on_epoch_start(self, epoch: int) -> None:
        """Hook called before each epoch (epochs count from 1); does nothing in VBPR."""

    def _on_epoch_end(self, epoch: int, mean_loss: float) -> None:
        """Hook called after each epoch with its mean training loss; does nothing in VBPR."""

    def _training_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """The minibatch objective that is minimised: BPR loss plus L2 regularisation.

        AMR overrides this to add its adversarial term.
        """
        return self._bpr_loss(users, pos, neg) + self._regularization(users, pos, neg)

    def _bpr_loss(
        self,
        users: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        feature_delta: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean BPR loss ``softplus(-(x_ui - x_uj))`` of a minibatch of triples.

        Args:
            users: ``int64`` ``(B,)`` users.
            pos: ``int64`` ``(B,)`` items the users interacted with.
            neg: ``int64`` ``(B,)`` items the users did not interact with.
            feature_delta: Optional ``(n_items, d)`` perturbation added to the
                *scaled* feature table (indexed by item id) before scoring, e.g.
                AMR's adversarial perturbation.
        """
        p = self.params
        batch = users.shape[0]
        # One lookup for both items of every pair: fewer, larger ops (faster on CPU).
        items = torch.cat((pos, neg))
        f = self._features.index_select(0, items)
        if feature_delta is not None:
            f = f + feature_delta.index_select(0, items)
        gamma_u = p.user_factors.index_select(0, users).repeat(2, 1)
        theta_u = p.user_visual_factors.index_select(0, users).repeat(2, 1)
        x = (
            p.item_bias.index_select(0, items)
            + (gamma_u * p.item_factors.index_select(0, items)).sum(1)
            + (theta_u * (f @ p.visual_projection)).sum(1)
            + f @ p.visual_bias
        )
        return torch.nn.functional.softplus(x[batch:] - x[:batch]).mean()

    def _regularization(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """L2 penalty of a minibatch (see the class docstring)."""
        p = self.params
        items = torch.cat((pos, neg))
        per_triple = (
            p.user_factors.index_select(0, users).square().sum()
            + p.user_visual_factors.index_select(0, users).square().sum()
            + p.item_factors.index_select(0, items).square().sum()
            + p.item_bias.index_select(0, items).square().sum()
        )
        shared = p.visual_projection.square().sum() + p.visual_bias.square().sum()
        return self.config.reg * (per_triple + shared) / users.shape[0]

    # ------------------------------------------------------------------ scoring

    def scale_features(self, item_features: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Raw ``(n_items, d)`` features -> the scaled ``float32`` tensor the model works on."""
        self._check_fitted()
        f = torch.as_tensor(item_features, dtype=torch.float32, device=self.device)
        if tuple(f.shape) != tuple(self._features.shape):
            raise ValueError(f"item_features must be {tuple(self._features.shape)}, got {tuple(f.shape)}")
        return f / self.feature_scale

    def _item_side(self, item_features: np.ndarray | torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(E f_i for all i, beta_i + beta' . f_i for all i)`` for the given raw features."""
        f = self._features if item_features is None else self.scale_features(item_features)
        p = self.params
        return f @ p.visual_projection, p.item_bias + f @ p.visual_bias

    @contextlib.contextmanager
    def _scoring_session(self, item_features: np.ndarray | torch.Tensor | None) -> Iterator[None]:
        # The item side (E f_i, biases) is shared by all user blocks of one topk.
        self._check_fitted()
        self._session = (item_features, self._item_side(item_features))
        try:
            yield
        finally:
            self._session = None

    def score(self, users: np.ndarray, item_features: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``x_ui`` of ``users`` for all items.

        Args:
            users: ``int`` ``(n,)`` user ids.
            item_features: Raw (unscaled) ``(n_items, d)`` features to score with,
                numpy or torch; ``None`` = the features given to :meth:`fit`. They are
                divided by :attr:`feature_scale` like the training features. Pass a
                torch tensor with ``requires_grad=True`` to differentiate the scores
                with respect to the features (e.g. for an attack); otherwise no
                autograd graph is built.

        Returns:
            ``float32`` tensor ``(n, n_items)`` on the model's device.
        """
        self._check_fitted()
        users_t = torch.as_tensor(self._check_users(users), device=self.device)
        wants_grad = torch.is_grad_enabled() and isinstance(item_features, torch.Tensor) and item_features.requires_grad
        with torch.set_grad_enabled(wants_grad):
            if self._session is not None and self._session[0] is item_features:
                visual, bias = self._session[1]
            else:
                visual, bias = self._item_side(item_features)
            p = self.params
            return (
                bias.unsqueeze(0)
                + p.user_factors[users_t] @ p.item_factors.T
                + p.user_visual_factors[users_t] @ visual.T
            )

    def _check_fitted(self) -> None:
        if self.params is None:
            raise RuntimeError("VBPR is not fitted: call fit() first")
        super()._check_fitted()
