"""FGSM: the fast gradient sign method."""

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


@ATTACKS.register("fgsm")
class FGSM(Attack):
    r"""FGSM in the paper 'Explaining and Harnessing Adversarial Examples'.
    [https://arxiv.org/abs/1412.6572] (Goodfellow, Shlens and Szegedy, ICLR 2015)

    One signed-gradient step of size eps: targeted,
    :math:`x' = \mathrm{clip}_{[0,1]}(x - \epsilon\,\mathrm{sign}\,\nabla_x \mathrm{CE}(f(x), t))`;
    untargeted, the same step up the cross-entropy of the true class.

    Distance Measure : Linf (default), or L2 with ``norm="l2"`` (one normalised-gradient
    step of length eps: the fast gradient method)

    Arguments:
        config (FGSM.Config): ``eps`` (float): maximum perturbation in 0-255
            pixel units, ``0 < eps <= 255`` (default 8, i.e. 8/255 in [0, 1]);
            ``targeted`` (bool): move towards ``labels`` (True, the VAR setting)
            or away from them (default True); ``norm`` ("linf" or "l2"): the
            threat model (default "linf"; for "l2", eps is the L2 radius in
            0-255 units: 255 means 1.0 in [0, 1] units).

    Shape:
        - model: callable mapping ``(N, 3, H, W)`` in [0, 1] to logits ``(N, C)``.
        - images: ``(N, 3, H, W)`` float in [0, 1].
        - labels: ``(N,)`` int64, target class ids if targeted, else true class ids.
        - output: ``(N, 3, H, W)`` float in [0, 1], detached.

    Examples::
        >>> attack = FGSM(FGSM.Config(eps=4))
        >>> adv_images = attack(model, images, target_labels)

    Notes:
        - eps is in pixel space [0, 1] (eps=8 means 8/255 per channel); the
          model must normalise inside. The VAR authors applied eps in the
          ImageNet-normalised space, where "eps 4" was about 4/255 * 0.226, i.e.
          roughly 1/255 in pixels: our eps 4 is about four times stronger than
          theirs. To approximate their numbers, divide eps by about 4.4.
        - Store results with :func:`raygrid.attacks.storage.quantize`, which
          rounds; the authors truncated, which erased most of a small perturbation.
        - FGSM is deterministic: ``generator`` is accepted and ignored.
    """

    class Config(ComponentConfig):
        name: Literal["fgsm"] = "fgsm"
        eps: float = Field(8.0, gt=0, le=255)  # 0-255 pixel units
        targeted: bool = True
        norm: Literal["linf", "l2"] = "linf"

    config: Config

    @property
    def threat(self) -> ThreatModel:
        return threat_model(self.config.norm, self.config.eps / 255)

    def label(self) -> str:
        suffix = "" if self.config.norm == "linf" else f"_{self.config.norm}"
        suffix += "" if self.config.targeted else "_untargeted"
        return f"fgsm_eps{format_eps(self.config.eps)}{suffix}"

    def perturb(
        self,
        model: Callable[[Tensor], Any],
        images: Tensor,
        labels: Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        threat = self.threat
        return iterative_gradient_attack(
            model,
            images,
            labels,
            objective=classification_objective(self.config.targeted),
            threat=threat,
            steps=1,
            step_size=threat.eps,
            random_start=False,
        )
