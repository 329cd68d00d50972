"""EXPA: the expert attack of the AIP study (Liu & Larson, section 4.2)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from raygrid.attacks.base import format_eps
from raygrid.config.base import ComponentConfig, Configured
from raygrid.registry import ATTACKS


@ATTACKS.register("expa")
class EXPA(Configured):
    """Perturb a cold item's image so its features approach the hook item's (eq. 7).

    The attacker knows the feature extractor (DVBPR: its image network) and picks a
    popular hook item; minimising ``|Phi(X + delta) - Phi(X_hook)|_2`` moves the
    cold item into the hook's region of the item space. Adam, lr 1e-2, 5000
    iterations, Linf budget ``eps`` (32 by default), 8-bit rounding at the end
    (section 5.3.2, Algorithm 1); batched over items
    (:func:`~raygrid.attacks.aip.batched.adam_on_items`).

    The hook is the study's ``aip.hook_item`` (default: the most interacted
    training item), so every EXPA trial on a dataset attacks towards the same item.
    """

    studies: ClassVar[frozenset[str]] = frozenset({"aip"})

    class Config(ComponentConfig):
        name: Literal["expa"] = "expa"
        eps: float = Field(32.0, gt=0, le=255)
        steps: int = Field(5000, ge=1)
        lr: float = Field(1e-2, gt=0)
        batch_size: int = Field(128, ge=1)

    config: Config

    def label(self) -> str:
        """E.g. ``expa_eps32``."""
        return f"expa_eps{format_eps(self.config.eps)}"


__all__ = ["EXPA"]
