"""PGD: projected gradient descent in the Linf ball."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from raygrid.attacks.base import Attack, format_eps
from raygrid.attacks.loops import iterative_gradient_attack
from raygrid.attacks.objectives import classification_objective
from raygrid.attacks.threat import ThreatModel, threat_model
from raygrid.config.base import ComponentConfig
from raygrid.registry import ATTACKS


@ATTACKS.register("pgd")
class PGD(Attack):
    r"""PGD in the paper 'Towards Deep Learning Models Resistant to Adversarial Attacks'.
    [https://arxiv.org/abs/1706.06083] (Madry, Makelov, Schmidt, Tsipras and Vladu, ICLR 2018)

    Starting from a uniform random point of the Linf ball (or the clean image),
    ``steps`` signed-gradient steps of size ``step_size`` on the cross-entropy
    (down towards the target if targeted, up from the true class otherwise),
    each followed by projection onto the ball and onto [0, 1].

    Distance Measure : Linf (default), or L2 with ``norm="l2"`` (normalised-gradient steps,
    projection onto the L2 ball)

    Arguments:
        config (PGD.Config):
            ``eps`` (float): maximum perturbation in 0-255 pixel units,
            ``0 < eps <= 255`` (default 8, i.e. 8/255 in [0, 1]).
            ``steps`` (int): number of iterations, >= 1 (default 10, as in VAR).
            ``step_size`` (float | None): step alpha in 0-255 pixel units
            (default None = eps / 6, as in VAR).
            ``random_start`` (bool): start uniformly in the eps ball (default True).
            ``targeted`` (bool): move towards ``labels`` (default True, the VAR setting).
            ``norm`` ("linf" or "l2"): the threat model (default "linf"; for
            "l2", eps and step_size are L2 lengths in 0-255 units).

    Shape:
        - model: callable mapping ``(N, 3, H, W)`` in [0, 1] to logits ``(N, C)``.
        - images: ``(N, 3, H, W)`` float in [0, 1].
        - labels: ``(N,)`` int64, target class ids if targeted, else true class ids.
        - output: ``(N, 3, H, W)`` float in [0, 1], detached.

    Examples::
        >>> attack = PGD(PGD.Config(eps=8))          # 10 steps of 8/6 /255, random start
        >>> adv_images = attack(model, images, target_labels,
        ...                     generator=torch.Generator().manual_seed(0))

    Notes:
        - The AIP study's TAaMR baseline is ``PGD.Config(eps=..., steps=20)``.
        - eps and step_size are in pixel space [0, 1] (eps=8 means 8/255); the
          model must normalise inside. The VAR authors applied them in the
          ImageNet-normalised space, roughly 4.4 times weaker in pixels.
        - All ``steps`` are run (as CleverHans, the authors' library, does);
          there is no early stop once an image reaches its target.
        - With ``step_size * steps < eps`` the ball cannot be crossed; VAR's
          eps/6 x 10 steps can.
        - The random start uses ``generator``; pass a seeded CPU generator for
          reproducible results on any device.
    """

    class Config(ComponentConfig):
        name: Literal["pgd"] = "pgd"
        eps: float = Field(8.0, gt=0, le=255)  # 0-255 pixel units
        steps: int = Field(10, ge=1)
        step_size: float | None = Field(None, gt=0)  # 0-255 units, default eps/6 (the VAR paper)
        random_start: bool = True
        targeted: bool = True
        norm: Literal["linf", "l2"] = "linf"

    config: Config

    @property
    def threat(self) -> ThreatModel:
        return threat_model(self.config.norm, self.config.eps / 255)

    @property
    def step_size(self) -> float:
        """Step alpha in [0, 1] pixel units (config step_size / 255, default eps / 6)."""
        step_255 = self.config.step_size if self.config.step_size is not None else self.config.eps / 6
        return step_255 / 255

    def label(self) -> str:
        config, defaults = self.config, type(self.config).model_fields
        parts = [f"pgd_eps{format_eps(config.eps)}"]
        if config.norm != "linf":
            parts.append(config.norm)
        if config.steps != defaults["steps"].default:
            parts.append(f"steps{config.steps}")
        if config.step_size is not None:
            parts.append(f"step{format_eps(config.step_size)}")
        if not config.random_start:
            parts.append("norand")
        if not config.targeted:
            parts.append("untargeted")
        return "_".join(parts)

    def perturb(
        self,
        model: Callable[[Tensor], Any],
        images: Tensor,
        labels: Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return iterative_gradient_attack(
            model,
            images,
            labels,
            objective=classification_objective(self.config.targeted),
            threat=self.threat,
            steps=self.config.steps,
            step_size=self.step_size,
            random_start=self.config.random_start,
            generator=generator,
        )
