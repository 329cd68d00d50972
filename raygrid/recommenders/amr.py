"""AMR: Adversarial Multimedia Recommendation (Tang et al., TKDE 2019) = VBPR + adversarial training."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from raygrid.recommenders.vbpr import VBPR
from raygrid.registry import RECOMMENDERS


@RECOMMENDERS.register("amr")
class AMR(VBPR):
    r"""VBPR trained against adversarial perturbations of the item image features.

    Tang et al. ("Adversarial Training Towards Robust Multimedia Recommender
    System", TKDE 2019) keep VBPR's score and add to each minibatch's objective
    the BPR loss under the worst-case perturbation ``Delta`` of the features of
    the minibatch's items within an L2 ball of radius ``eps`` per item::

        L = L_BPR(f) + reg_terms + adv_weight * L_BPR(f + Delta_adv)
        Delta_adv_i = eps * g_i / |g_i|_2,   g_i = dL_BPR(f + Delta) / dDelta_i at Delta = 0

    i.e. the fast gradient (FGSM-like, L2) approximation of the inner maximisation,
    with each item's gradient accumulated over all its occurrences in the
    minibatch (as positive or negative item) and then normalised per item.
    ``Delta_adv`` is a constant of the outer minimisation (no gradient flows
    through it). Features are VBPR's scaled features (unit mean L2 norm), so
    ``eps`` is measured relative to the mean feature norm.

    Warm start, as Tang et al. pretrain VBPR before adversarial training: either
    load a VBPR checkpoint (``warm_start``, written by
    :meth:`VBPR.save_checkpoint` on the same users, items and feature dimension)
    or train the first ``pretrain_epochs`` epochs as plain VBPR.

    With ``adv_weight = 0`` the adversarial term is still computed but contributes
    exactly zero to every gradient, and AMR draws no random numbers of its own, so
    it trains bit for bit like VBPR from the same seed (tested).

    Args:
        config: :class:`AMR.Config`.
        seed: Seed of initialisation and sampling.
        device: Torch device.
        progress: Called after each epoch with ``(epoch, mean loss)``.
    """

    class Config(VBPR.Config):
        """AMR hyper-parameters: VBPR's plus the adversarial ones.

        Attributes:
            adv_weight: lambda_adv, weight of the adversarial BPR loss; 1 as in
                Tang et al. and the AIP paper.
            eps: Radius of each item's L2 perturbation, in units of the mean
                feature norm (features are scaled to unit mean norm).
            pretrain_epochs: Epochs trained as plain VBPR before the adversarial term
                switches on (counted within ``epochs``).
            warm_start: Path of a VBPR checkpoint to start from instead of a random
                initialisation.
        """

        name: Literal["amr"] = "amr"  # type: ignore[assignment]
        adv_weight: float = Field(1.0, ge=0)
        eps: float = Field(0.1, ge=0)
        pretrain_epochs: int = Field(0, ge=0)
        warm_start: str | None = None

    config: Config

    def __init__(self, config: Config | None = None, **kwargs) -> None:
        super().__init__(self.Config() if config is None else config, **kwargs)

    def _build(self, train_users, train_items, item_features, generator):
        params = super()._build(train_users, train_items, item_features, generator)
        if self.config.warm_start is not None:
            self.params = params
            self._load_checkpoint(self.config.warm_start)
        return params

    def _training_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        if self._epoch <= self.config.pretrain_epochs:
            return super()._training_loss(users, pos, neg)
        # A leaf copy of the minibatch's features, to differentiate the clean loss with respect to.
        f = self._pair_features(pos, neg).detach().requires_grad_(True)
        clean = self._bpr_loss(users, pos, neg, f)
        (grad,) = torch.autograd.grad(clean, f, retain_graph=True)
        delta = self.adversarial_delta(torch.cat((pos, neg)), grad)
        adversarial = self._bpr_loss(users, pos, neg, f.detach() + delta)
        return clean + self._regularization(users, pos, neg) + self.config.adv_weight * adversarial

    def adversarial_delta(self, items: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Per-occurrence rows of ``Delta_adv`` from per-occurrence gradients.

        Args:
            items: ``int64`` ``(n,)`` item of each row (an item may repeat).
            grad: ``(n, d)`` gradient of the loss with respect to each row's features.

        Returns:
            ``(n, d)``: ``eps * G_i / |G_i|`` for the row's item ``i``, where ``G_i``
            sums the gradient rows of item ``i`` (zero where ``G_i`` is zero).
        """
        unique, inverse = torch.unique(items, return_inverse=True)
        summed = torch.zeros(unique.shape[0], grad.shape[1], dtype=grad.dtype, device=grad.device)
        summed.index_add_(0, inverse, grad)
        direction = torch.nn.functional.normalize(summed, p=2.0, dim=1)
        return (self.config.eps * direction).index_select(0, inverse)
