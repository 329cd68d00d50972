"""VBPR: Visual Bayesian Personalized Ranking (He & McAuley, AAAI 2016)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from raygrid.recommenders.pairwise import PairwiseConfig, PairwiseRecommender
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
class VBPR(PairwiseRecommender):
    r"""Visual Bayesian Personalized Ranking (He & McAuley, "VBPR: Visual Bayesian
    Personalized Ranking from Implicit Feedback", AAAI 2016).

    Score of user ``u`` for item ``i`` with (scaled) visual feature ``f_i``::

        x_ui = beta_i + gamma_u . gamma_i + theta_u . (E f_i) + beta' . f_i

    The paper's global offset ``alpha`` and user bias ``beta_u`` are omitted: they
    are the same for the two items of a BPR pair, so they cancel in
    ``x_ui - x_uj``, get no gradient and never change a user's ranking.

    Training (:class:`~raygrid.recommenders.pairwise.PairwiseRecommender`) maximises
    the BPR criterion with bootstrap sampling of triples ``(u, i, j)`` and Adam over
    minibatches. The loss of a minibatch ``B`` is::

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

    He and McAuley regularise ``E`` with its own weight ``lambda_E``; one weight
    ``reg`` serves all parameters here (as in cornac), since the features are
    rescaled to unit mean norm.

    AMR (:class:`~raygrid.recommenders.amr.AMR`) is this model plus an adversarial
    term: it overrides :meth:`_training_loss` and scores perturbed features through
    the ``pair_features`` argument of :meth:`_bpr_loss`.

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

    class Config(PairwiseConfig):
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
            epochs, batch_size, lr, reg: See :class:`PairwiseConfig` (the exact loss
                is in the class docstring); early-stopping fields: see
                :class:`~raygrid.recommenders.training.EpochTrainingConfig`.
        """

        name: Literal["vbpr"] = "vbpr"
        factors: int = Field(64, ge=1)
        visual_factors: int = Field(64, ge=1)

    config: Config

    def __init__(self, config: Config | None = None, **kwargs) -> None:
        super().__init__(self.Config() if config is None else config, **kwargs)
        self.feature_scale: float | None = None
        self._features: torch.Tensor | None = None  # scaled fit features, (n_items, d), on device
        self.fresh_scores = True  # score() returns a new tensor each call: topk may mask it in place

    # ------------------------------------------------------------------ training

    def _build(
        self, train_users: np.ndarray, train_items: np.ndarray, item_features: np.ndarray | None, generator: torch.Generator
    ) -> _VBPRParameters:
        if item_features is None:
            raise ValueError(f"{type(self).__name__} needs item_features (n_items, d) at fit time")
        cfg = self.config
        features = np.asarray(item_features, dtype=np.float32)
        mean_norm = float(np.linalg.norm(features, axis=1).mean())
        self.feature_scale = mean_norm if mean_norm > 0 else 1.0
        # Scaled exactly as scale_features() does, so that passing the fit features to
        # score() reproduces score(users).
        self._features = torch.as_tensor(features, device=self.device) / self.feature_scale
        return _VBPRParameters(self.n_users, self.n_items, features.shape[1], cfg.factors, cfg.visual_factors, generator)

    def _training_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """The minibatch objective that is minimised: BPR loss plus L2 regularisation.

        AMR overrides this to add its adversarial term.
        """
        return self._bpr_loss(users, pos, neg) + self._regularization(users, pos, neg)

    def _pair_features(self, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """Scaled features of ``cat(pos, neg)``, ``(2B, d)``: the rows :meth:`_bpr_loss` scores."""
        return self._features.index_select(0, torch.cat((pos, neg)))

    def _bpr_loss(
        self,
        users: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        pair_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean BPR loss ``softplus(-(x_ui - x_uj))`` of a minibatch of triples.

        Args:
            users: ``int64`` ``(B,)`` users.
            pos: ``int64`` ``(B,)`` items the users interacted with.
            neg: ``int64`` ``(B,)`` items the users did not interact with.
            pair_features: Optional ``(2B, d)`` scaled features of ``cat(pos, neg)``
                to score with instead of :meth:`_pair_features` (e.g. AMR's
                perturbed features, or a leaf tensor to differentiate with respect to).
        """
        p = self.params
        # One lookup for both items of every pair: fewer, larger ops (faster on CPU).
        items = torch.cat((pos, neg))
        f = self._pair_features(pos, neg) if pair_features is None else pair_features
        gamma_u = p.user_factors.index_select(0, users).repeat(2, 1)
        theta_u = p.user_visual_factors.index_select(0, users).repeat(2, 1)
        x = (
            p.item_bias.index_select(0, items)
            + (gamma_u * p.item_factors.index_select(0, items)).sum(1)
            + (theta_u * (f @ p.visual_projection)).sum(1)
            + f @ p.visual_bias
        )
        return self._pair_loss(x)

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

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, path: str | Path) -> None:
        """Write the trained parameters and feature scale to ``path`` (``torch.save``), e.g. to warm-start AMR."""
        self._check_fitted()
        torch.save(
            {
                "state_dict": {k: v.detach().cpu() for k, v in self.params.state_dict().items()},
                "feature_scale": self.feature_scale,
                "shape": (self.n_users, self.n_items, int(self._features.shape[1])),
            },
            Path(path),
        )

    def _load_checkpoint(self, path: str | Path) -> None:
        """Replace the freshly built parameters by those of a VBPR checkpoint of the same shape."""
        try:
            state = torch.load(Path(path), map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as exc:
            raise ValueError(f"cannot read VBPR checkpoint {str(path)!r} ({exc}); give a file written by VBPR.save_checkpoint") from None
        expected = (self.n_users, self.n_items, int(self._features.shape[1]))
        if tuple(state["shape"]) != expected:
            raise ValueError(f"VBPR checkpoint {str(path)!r} is for (users, items, feature dim) {tuple(state['shape'])}, not {expected}")
        try:
            self.params.load_state_dict(state["state_dict"])
        except RuntimeError as exc:
            raise ValueError(f"VBPR checkpoint {str(path)!r} does not match the configured factors ({str(exc).splitlines()[0]})") from None
        # Keep the checkpoint's feature scale: its E and beta' were learned on it.
        scale = float(state["feature_scale"])
        self._features = self._features * (self.feature_scale / scale)
        self.feature_scale = scale

    # ------------------------------------------------------------------ scoring

    def scale_features(self, item_features: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Raw ``(n_items, d)`` features -> the scaled ``float32`` tensor the model works on."""
        self._check_fitted()
        f = torch.as_tensor(item_features, dtype=torch.float32, device=self.device)
        if tuple(f.shape) != tuple(self._features.shape):
            raise ValueError(f"item_features must be {tuple(self._features.shape)}, got {tuple(f.shape)}")
        return f / self.feature_scale

    def _item_side(self, item_features: np.ndarray | torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``([gamma_i, E f_i] for all i, beta_i + beta' . f_i for all i)`` for the given raw features.

        The collaborative and visual item factors side by side, so that a block of
        scores is one matrix product with ``[gamma_u, theta_u]`` plus the bias
        (:func:`torch.addmm`), about 2-3x faster on CPU than two products and two sums.
        """
        f = self._features if item_features is None else self.scale_features(item_features)
        p = self.params
        factors = torch.cat((p.item_factors, f @ p.visual_projection), dim=1)
        return factors, p.item_bias + f @ p.visual_bias

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
            item_factors, bias = self._session_item_side(item_features)
            p = self.params
            user_factors = torch.cat((p.user_factors[users_t], p.user_visual_factors[users_t]), dim=1)
            return torch.addmm(bias.unsqueeze(0), user_factors, item_factors.T)
