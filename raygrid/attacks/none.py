"""The identity attack: the clean baseline of a grid."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from raygrid.attacks.base import Attack
from raygrid.attacks.threat import LinfThreat
from raygrid.config.base import ComponentConfig
from raygrid.registry import ATTACKS


@ATTACKS.register("none")
class NoAttack(Attack):
    """No attack: returns a copy of the clean images, so a grid has its clean baseline.

    Distance Measure : none (Linf distance 0)

    Arguments:
        config (NoAttack.Config): only ``name="none"``.

    Shape:
        - images: ``(N, 3, H, W)`` float in [0, 1].
        - labels: ``(N,)``, ignored.
        - output: ``(N, 3, H, W)``, a detached copy of ``images``.

    Examples::
        >>> attack = NoAttack()
        >>> torch.equal(attack(model, images, labels), images)
        True

    Notes:
        - The model is never called; :func:`raygrid.attacks.run.attack_images`
          does not even convert the images.
        - ``eps`` is 0 and ``targeted`` is False.
    """

    class Config(ComponentConfig):
        name: Literal["none"] = "none"

    @property
    def threat(self) -> LinfThreat:
        return LinfThreat(0.0)

    @property
    def is_identity(self) -> bool:
        return True

    def label(self) -> str:
        return "none"

    def perturb(
        self,
        model: Callable[[Tensor], Any],
        images: Tensor,
        labels: Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return images.detach().clone()
