"""Attack objectives: per-sample losses that an attack loop *minimises*.

An objective is any callable ``objective(model, x, labels) -> Tensor (N,)``. It
receives the model itself (not its output) so that each objective decides what
it needs from it: the classifier objectives here call ``model(x)`` for logits;
a feature-matching objective (EXPA) or a recommender-score objective (INSA)
added later calls a feature extractor or a ranker the same way, and the loop
(:func:`raygrid.attacks.loops.iterative_gradient_attack`) does not change.

The loss must be per sample (no reduction over the batch), so that one image's
gradient does not depend on the others in its batch; the loop sums it before
differentiating.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch.nn.functional as F
from torch import Tensor


class Objective(Protocol):
    """A per-sample loss minimised by an attack.

    Args:
        model: What the objective attacks (for the classifier objectives: a
            callable mapping images ``(N, 3, H, W)`` in [0, 1] to logits ``(N, C)``).
        x: Adversarial images being optimised, ``(N, 3, H, W)`` in [0, 1],
            requiring grad.
        labels: Per-sample labels ``(N,)`` whose meaning the objective defines
            (a target class, a true class, an item id...).

    Returns:
        Loss per sample, ``(N,)``; lower is better for the attacker.
    """

    def __call__(self, model: Callable[[Tensor], Any], x: Tensor, labels: Tensor) -> Tensor: ...


def model_logits(model: Callable[[Tensor], Any], x: Tensor) -> Tensor:
    """``model(x)``, checked to be logits ``(N, C)``, with a hint when a model returns a tuple."""
    out = model(x)
    if not isinstance(out, Tensor) or out.ndim != 2:
        kind = type(out).__name__ if not isinstance(out, Tensor) else f"tensor of shape {tuple(out.shape)}"
        raise TypeError(
            f"the attacked model must return logits (N, C), got a {kind}; wrap a model that "
            "returns (features, logits) in raygrid.attacks.base.OutputSelector(model, index=1)"
        )
    return out


def targeted_cross_entropy(model: Callable[[Tensor], Any], x: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy towards the target class: minimising it pulls ``x`` into class ``labels``.

    Args:
        model: Callable mapping images ``(N, 3, H, W)`` in [0, 1] to logits ``(N, C)``.
        x: Images ``(N, 3, H, W)``.
        labels: Target class ids ``(N,)``, int64.

    Returns:
        ``(N,)`` cross-entropy of each image's logits with its target class.
    """
    return F.cross_entropy(model_logits(model, x), labels, reduction="none")


def untargeted_cross_entropy(model: Callable[[Tensor], Any], x: Tensor, labels: Tensor) -> Tensor:
    """Negative cross-entropy of the true class: minimising it pushes ``x`` out of class ``labels``.

    Args:
        model: Callable mapping images ``(N, 3, H, W)`` in [0, 1] to logits ``(N, C)``.
        x: Images ``(N, 3, H, W)``.
        labels: True class ids ``(N,)``, int64.

    Returns:
        ``(N,)`` minus the cross-entropy of each image's logits with its true class.
    """
    return -F.cross_entropy(model_logits(model, x), labels, reduction="none")


def logit_margin(logits: Tensor, labels: Tensor, *, targeted: bool, confidence: float = 0.0) -> Tensor:
    """Carlini-Wagner's margin loss ``f`` on logits, per sample (their "f6").

    Targeted: ``max(max_{i != t} Z_i - Z_t, -confidence)``, which reaches its
    floor ``-confidence`` once the target logit leads every other by
    ``confidence``. Untargeted: ``max(Z_y - max_{i != y} Z_i, -confidence)``.

    Args:
        logits: ``(N, C)`` logits ``Z``.
        labels: ``(N,)`` int64 target classes (targeted) or true classes.
        targeted: Which of the two forms.
        confidence: ``kappa`` >= 0, the margin past which success earns nothing more.

    Returns:
        ``(N,)`` loss; lower is better for the attacker.
    """
    label_logit = logits.gather(1, labels.reshape(-1, 1)).squeeze(1)
    is_label = F.one_hot(labels, logits.shape[1]).bool()
    other_max = logits.masked_fill(is_label, float("-inf")).amax(dim=1)
    margin = other_max - label_logit if targeted else label_logit - other_max
    return margin.clamp(min=-confidence)


def classification_objective(targeted: bool) -> Objective:
    """The cross-entropy objective of a targeted or untargeted classifier attack."""
    return targeted_cross_entropy if targeted else untargeted_cross_entropy


__all__ = [
    "Objective",
    "classification_objective",
    "logit_margin",
    "model_logits",
    "targeted_cross_entropy",
    "untargeted_cross_entropy",
]
