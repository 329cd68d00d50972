"""What the AIP attacks optimise, as modules: images ``(N, 3, H, W)`` in [0, 1] -> one value per image.

INSA (Liu & Larson, section 4.1, eq. 6) maximises the predicted preference of
*all* users for the attacked item. Summing a ranker's score over users one user
at a time (the authors' code: a loop over user batches, per image) is what made
their attack take hours; for the rankers here the sum collapses:

- VBPR and AMR (``x_ui = beta_i + gamma_u . gamma_i + theta_u . (E f_i) + beta' . f_i``,
  ``f_i`` the scaled image features): ``sum_u x_ui = f_i . w + c_i`` with
  ``w = E (sum_u theta_u) + |U| beta'`` and ``c_i`` independent of the image, so the
  image-dependent part is one dot product with the summed user embedding
  (:class:`LinearPreference`);
- DVBPR (``x_ui = theta_u . Phi(X_i)``): ``sum_u x_ui = Phi(X_i) . sum_u theta_u``
  (:class:`LinearPreference`); the paper's eq. 6 sums ``exp(x_ui)`` instead, which
  does not collapse: :class:`ExpPreference` computes it as a log-sum-exp over all
  users (a monotone transform with the same maximiser), still vectorised over items;
- AlexRank (``x_ui = -mean_{j in I_u} |f_i - f_j|``): ``sum_u x_ui = -sum_j c_j |f_i - f_j|``
  with ``c_j = sum_{u: j in I_u} 1 / |I_u|``, a weighted distance to the training
  items (:class:`DistancePreference`), whatever the number of users.

EXPA (section 4.2, eq. 7) minimises the feature distance to the hook item
(:class:`FeatureDistance`). Every module is per image: one image's value never
depends on the others in its batch (in eval mode), so attacks batch over items.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


class ExtractorFeatures(nn.Module):
    """The feature vector of an :class:`~raygrid.extractors.base.Extractor` (its head skipped)."""

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, x: Tensor) -> Tensor:
        return self.extractor.features(x)


class DVBPREmbedding(nn.Module):
    """DVBPR's item embedding ``Phi(X)`` of [0, 1] images (upsampled to CNN-F's minimum side like the ranker does)."""

    def __init__(self, cnn: nn.Module) -> None:
        super().__init__()
        self.cnn = cnn

    def forward(self, x: Tensor) -> Tensor:
        from raygrid.recommenders.dvbpr import DVBPR

        return self.cnn(DVBPR._fit_size(x))


class LinearPreference(nn.Module):
    """``embed(x) . weight``: the image-dependent part of the summed preference of a dot-product ranker.

    Args:
        embed: Images -> ``(N, d)`` (features, or an item embedding).
        weight: ``(d,)`` the summed user embedding (mapped into the embedding's space).
    """

    def __init__(self, embed: nn.Module, weight: Tensor) -> None:
        super().__init__()
        self.embed = embed
        self.register_buffer("weight", weight.detach().float().reshape(-1))

    def forward(self, x: Tensor) -> Tensor:
        return self.embed(x) @ self.weight


class ExpPreference(nn.Module):
    """``log sum_u exp(theta_u . embed(x))``: the paper's DVBPR objective (eq. 6), in log space for stability.

    Args:
        embed: Images -> ``(N, K)``.
        users: ``(n_users, K)`` user embeddings ``theta_u``.
    """

    def __init__(self, embed: nn.Module, users: Tensor) -> None:
        super().__init__()
        self.embed = embed
        self.register_buffer("users", users.detach().float())

    def forward(self, x: Tensor) -> Tensor:
        return torch.logsumexp(self.embed(x) @ self.users.T, dim=1)


class DistancePreference(nn.Module):
    """``-sum_j c_j |embed(x) - a_j|_2``: AlexRank's preference summed over users (eq. 6).

    Args:
        embed: Images -> ``(N, d)`` features.
        anchors: ``(J, d)`` features of the training items.
        weights: ``(J,)`` ``c_j = sum over the users who had item j of 1 / |I_u|``.
    """

    def __init__(self, embed: nn.Module, anchors: Tensor, weights: Tensor) -> None:
        super().__init__()
        self.embed = embed
        self.register_buffer("anchors", anchors.detach().float())
        self.register_buffer("weights", weights.detach().float())

    def forward(self, x: Tensor) -> Tensor:
        f = self.embed(x)
        # Explicit differences, not cdist's matrix-product formula: its sqrt of a
        # near-zero value has an unbounded gradient when an image nears an anchor.
        d2 = (f.square().sum(1, keepdim=True) + self.anchors.square().sum(1) - 2.0 * f @ self.anchors.T).clamp_min(1e-12)
        return -(d2.sqrt() * self.weights).sum(1)


class FeatureDistance(nn.Module):
    """``|embed(x) - target|_2`` per image: EXPA's objective (eq. 7), minimised.

    Args:
        embed: Images -> ``(N, d)``.
        target: ``(d,)`` the hook item's features.
    """

    def __init__(self, embed: nn.Module, target: Tensor) -> None:
        super().__init__()
        self.embed = embed
        self.register_buffer("target", target.detach().float().reshape(-1))

    def forward(self, x: Tensor) -> Tensor:
        return (self.embed(x) - self.target).square().sum(1).clamp_min(1e-12).sqrt()


def ranker_embedding(recommender: Any, extractor: nn.Module | None) -> nn.Module:
    """The image -> representation map a ranker scores with: DVBPR's CNN, else the extractor's features."""
    from raygrid.recommenders.dvbpr import DVBPR

    if isinstance(recommender, DVBPR):
        return DVBPREmbedding(recommender.params.cnn)
    if extractor is None:
        raise ValueError(f"{type(recommender).__name__} scores extractor features: pass the extractor")
    return ExtractorFeatures(extractor)


def summed_preference(recommender: Any, extractor: nn.Module | None = None, *, transform: str = "linear") -> nn.Module:
    """INSA's objective for a trained ranker: images -> sum over all users of their predicted preference.

    Up to a per-item constant that does not depend on the image (see the module
    docstring), so gradients and the ranking of images by this value are exact.

    Args:
        recommender: A fitted VBPR, AMR, DVBPR or AlexRank.
        extractor: The feature extractor of VBPR, AMR and AlexRank (unused for DVBPR).
        transform: ``"linear"`` (sum of scores) or ``"exp"`` (sum of ``exp`` of scores,
            the paper's DVBPR variant; DVBPR only).

    Raises:
        ValueError: Another recommender, or ``"exp"`` for a ranker other than DVBPR.
    """
    from raygrid.recommenders.alexrank import AlexRank
    from raygrid.recommenders.dvbpr import DVBPR
    from raygrid.recommenders.vbpr import VBPR

    embed = ranker_embedding(recommender, extractor)
    if transform not in ("linear", "exp"):
        raise ValueError(f"transform must be 'linear' or 'exp', got {transform!r}")
    if transform == "exp" and not isinstance(recommender, DVBPR):
        raise ValueError(f"INSA's exp objective is defined for DVBPR only (eq. 6), not {type(recommender).__name__}")
    with torch.no_grad():
        if isinstance(recommender, DVBPR):
            users = recommender.params.user_factors.detach()
            if transform == "exp":
                return ExpPreference(embed, users)
            return LinearPreference(embed, users.sum(0))
        if isinstance(recommender, VBPR):  # AMR too: same score
            p = recommender.params
            n_users = p.user_visual_factors.shape[0]
            weight = (p.visual_projection @ p.user_visual_factors.sum(0) + n_users * p.visual_bias) / recommender.feature_scale
            return LinearPreference(embed, weight.detach())
        if isinstance(recommender, AlexRank):
            counts = recommender.seen_counts()
            users = np.repeat(np.arange(counts.shape[0]), counts)
            items = recommender._seen_indices
            per_pair = 1.0 / counts[users]
            weights = np.bincount(items, weights=per_pair, minlength=recommender.n_items)
            keep = np.flatnonzero(weights > 0)
            anchors = recommender._features.index_select(0, torch.as_tensor(keep, device=recommender._features.device))
            return DistancePreference(embed, anchors.cpu(), torch.as_tensor(weights[keep], dtype=torch.float32))
    raise ValueError(f"INSA has no objective for {type(recommender).__name__}; rankers: alexrank, vbpr, amr, dvbpr")


__all__ = [
    "DVBPREmbedding",
    "DistancePreference",
    "ExpPreference",
    "ExtractorFeatures",
    "FeatureDistance",
    "LinearPreference",
    "ranker_embedding",
    "summed_preference",
]
