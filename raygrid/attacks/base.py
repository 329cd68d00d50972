"""The base class of registered attacks, and a model adaptor.

An :class:`Attack` is a thin configured object over the functional loop in
:mod:`raygrid.attacks.loops`: it turns its pydantic config (eps in 0-255 pixel
units, as users write it) into a threat model, an objective and loop settings.
Attacks are built from configs through the registry::

    from raygrid.registry import ATTACKS
    attack = ATTACKS.build(ATTACKS.get("pgd").Config(eps=8))
    x_adv = attack(model, images, target_labels)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from raygrid.attacks.threat import ThreatModel
from raygrid.config.base import Configured


class Attack(Configured, ABC):
    """An adversarial attack on images in pixel space [0, 1].

    Subclasses set ``Config`` (a :class:`ComponentConfig` whose ``name`` is
    ``Literal[<registered name>]``) and implement :attr:`threat`, :meth:`label`
    and :meth:`perturb`.

    Arguments:
        config: The attack's config; ``None`` uses the defaults of ``Config``.

    Shape:
        - images: ``(N, 3, H, W)``, float in [0, 1] (the model normalises inside).
        - labels: ``(N,)``, int64: target class ids if the attack is targeted,
          true class ids otherwise.
        - output: ``(N, 3, H, W)``, detached, same dtype and device, in [0, 1].
    """

    @property
    @abstractmethod
    def threat(self) -> ThreatModel:
        """The perturbation set this attack stays in (radius in [0, 1] pixel units)."""

    @property
    def eps(self) -> float:
        """Perturbation budget in [0, 1] pixel units (config eps / 255); 0 for the identity."""
        return self.threat.eps

    @property
    def targeted(self) -> bool:
        """Whether ``labels`` are target classes (True) or true classes (False)."""
        return bool(getattr(self.config, "targeted", False))

    @property
    def is_identity(self) -> bool:
        """True only for the attack that returns its images unchanged."""
        return False

    @abstractmethod
    def label(self) -> str:
        """Short readable label, e.g. ``"pgd_eps8"``, for names and plots (not a cache key)."""

    @abstractmethod
    def perturb(
        self,
        model: Callable[[Tensor], Any],
        images: Tensor,
        labels: Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Compute the adversarial images; inputs are already checked by :meth:`__call__`."""

    def __call__(
        self,
        model: Callable[[Tensor], Any],
        images: Tensor,
        labels: Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Attack a batch of images.

        Args:
            model: Callable mapping images ``(N, 3, H, W)`` in [0, 1] to logits
                ``(N, C)``. A module returning ``(features, logits)`` is wrapped
                in :class:`OutputSelector`.
            images: ``(N, 3, H, W)`` float in [0, 1]; not modified.
            labels: ``(N,)`` int64 target class ids (targeted) or true class ids.
            generator: Randomness of a random start (use a CPU generator for the
                same result on every device); ``None`` uses torch's global one.

        Returns:
            Detached adversarial images ``(N, 3, H, W)`` in [0, 1].
        """
        if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
            raise ValueError(f"images must be a float tensor (N, 3, H, W), got {_describe(images)}")
        if not isinstance(labels, Tensor) or labels.shape != images.shape[:1]:
            raise ValueError(f"labels must be a tensor of shape ({images.shape[0]},), got {_describe(labels)}")
        if images.numel() and (images.min() < 0 or images.max() > 1):
            raise ValueError("images must be in [0, 1] pixel space (normalisation belongs inside the model)")
        return self.perturb(model, images, labels, generator=generator)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items() if k != "name")
        return f"{type(self).__name__}({fields})"


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def format_eps(eps_255: float) -> str:
    """``8.0 -> "8"``, ``2.5 -> "2.5"``: eps in 0-255 units as it appears in labels."""
    return f"{eps_255:g}"


class OutputSelector(nn.Module):
    """Expose one element of a model's tuple output, e.g. the logits of an extractor.

    Attacks expect a model returning logits; an extractor returns
    ``(features, logits)``. Wrapping it as a module (rather than a lambda) keeps
    the eval-mode handling of the attack loop working on the wrapped model.

    Arguments:
        model: Module whose forward returns a tuple or list.
        index: Which element to return (``1`` for the logits of ``(features, logits)``).

    Examples::
        >>> logits_model = OutputSelector(extractor, index=1)
        >>> x_adv = attack(logits_model, images, targets)
    """

    def __init__(self, model: nn.Module, index: int) -> None:
        super().__init__()
        self.model = model
        self.index = index

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)[self.index]


__all__ = ["Attack", "OutputSelector", "format_eps"]
