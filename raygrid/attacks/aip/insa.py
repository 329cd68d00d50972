"""INSA: the insider attack of the AIP study (Liu & Larson, section 4.1)."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from raygrid.attacks.base import format_eps
from raygrid.config.base import ComponentConfig, Configured
from raygrid.registry import ATTACKS

#: Adam learning rates of the paper (section 5.3.2): 1e-3 for DVBPR, 1e-4 for VBPR and AlexRank (and AMR, a VBPR).
PAPER_LR: dict[str, float] = {"dvbpr": 1e-3, "vbpr": 1e-4, "amr": 1e-4, "alexrank": 1e-4}


@ATTACKS.register("insa")
class INSA(Configured):
    """Perturb a cold item's image to maximise the predicted preference of all users (eq. 6).

    The attacker knows the trained ranker (its user embeddings, its extractor).
    Adam on the perturbation, Linf budget ``eps``, image clipped to [0, 1] after
    every step and rounded to 8 bits at the end (Algorithm 1). The objective is
    :func:`~raygrid.attacks.aip.preference.summed_preference`: one dot product with
    the summed user embedding for VBPR, AMR and DVBPR, a weighted distance to the
    training items for AlexRank; batched over items.

    Steps: the paper runs 10 epochs, an epoch being one Adam step per batch of
    256 users (the authors' code); with the summed objective every step sees all
    users, and we keep the paper's step count, ``epochs * ceil(n_users / user_batch)``.

    Arguments:
        config (INSA.Config): ``eps`` (0-255 pixel units, default 32 as in the
            paper), ``epochs`` (10), ``user_batch`` (256), ``lr`` (``None``: the
            paper's rate for the ranker, :data:`PAPER_LR`), ``transform``
            (``linear`` sum of scores; ``exp``: the paper's DVBPR form, DVBPR only),
            ``batch_size`` (items per pass).
    """

    studies: ClassVar[frozenset[str]] = frozenset({"aip"})

    class Config(ComponentConfig):
        name: Literal["insa"] = "insa"
        eps: float = Field(32.0, gt=0, le=255)
        epochs: int = Field(10, ge=1)
        user_batch: int = Field(256, ge=1)
        steps: int | None = Field(None, ge=1, description="Adam steps; default epochs * ceil(n_users / user_batch)")
        lr: float | None = Field(None, gt=0)
        transform: Literal["linear", "exp"] = "linear"
        batch_size: int = Field(128, ge=1)

    config: Config

    def steps_for(self, n_users: int) -> int:
        """Adam steps for a dataset of ``n_users`` users (``steps`` if set)."""
        if self.config.steps is not None:
            return self.config.steps
        return self.config.epochs * math.ceil(max(n_users, 1) / self.config.user_batch)

    def lr_for(self, ranker: str) -> float:
        """The learning rate against ``ranker`` (a recommender name)."""
        if self.config.lr is not None:
            return self.config.lr
        return PAPER_LR.get(ranker, 1e-4)

    def label(self) -> str:
        """E.g. ``insa_eps32``."""
        return f"insa_eps{format_eps(self.config.eps)}"


__all__ = ["INSA", "PAPER_LR"]
