"""TAaMR: the classifier-targeted baseline of the AIP study (Di Noia et al. 2020; Liu & Larson, section 6.3)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from raygrid.attacks.base import Attack, format_eps
from raygrid.config.base import ComponentConfig, Configured
from raygrid.registry import ATTACKS


def most_popular_class(train_items: np.ndarray, item_classes: np.ndarray, n_classes: int) -> int:
    """The class with the most training interactions, counting each interaction by its item's predicted class.

    Ties go to the lower class index.
    """
    counts = np.bincount(np.asarray(item_classes)[np.asarray(train_items)], minlength=n_classes)
    return int(np.argmax(counts))


@ATTACKS.register("taamr")
class TAaMR(Configured):
    """Targeted FGSM or PGD towards the most popular class of the training interactions.

    TAaMR perturbs an item's image so the classifier (AlexNet in the paper; the
    trial's extractor here) sees it as the class most users interacted with. The
    paper runs FGSM and PGD with 20 steps; eps defaults to the paper's 32. The
    attack itself is the project's :class:`~raygrid.attacks.fgsm.FGSM` /
    :class:`~raygrid.attacks.pgd.PGD` (pixel space, rounded 8-bit storage).

    Arguments:
        config (TAaMR.Config): ``method`` (``fgsm`` or ``pgd``), ``eps`` (0-255 units),
            ``steps`` (PGD, 20), ``step_size`` (PGD, 0-255 units; ``None``: ``2.5 * eps / steps``,
            Madry et al.'s rule, so the ball can be crossed), ``random_start`` (PGD).
    """

    studies: ClassVar[frozenset[str]] = frozenset({"aip"})

    class Config(ComponentConfig):
        name: Literal["taamr"] = "taamr"
        method: Literal["fgsm", "pgd"] = "pgd"
        eps: float = Field(32.0, gt=0, le=255)
        steps: int = Field(20, ge=1)
        step_size: float | None = Field(None, gt=0)
        random_start: bool = True

    config: Config

    def classifier_attack(self) -> Attack:
        """The FGSM or PGD attack this config describes (targeted)."""
        from raygrid.attacks.fgsm import FGSM
        from raygrid.attacks.pgd import PGD

        c = self.config
        if c.method == "fgsm":
            return FGSM(FGSM.Config(eps=c.eps, targeted=True))
        step = c.step_size if c.step_size is not None else 2.5 * c.eps / c.steps
        return PGD(PGD.Config(eps=c.eps, steps=c.steps, step_size=step, random_start=c.random_start, targeted=True))

    def label(self) -> str:
        """E.g. ``taamr_pgd_eps32``."""
        return f"taamr_{self.config.method}_eps{format_eps(self.config.eps)}"


__all__ = ["TAaMR", "most_popular_class"]
