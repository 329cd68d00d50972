"""The identity defense: the undefended baseline of a grid."""

from __future__ import annotations

from typing import Literal

import numpy as np

from raygrid.config.base import ComponentConfig
from raygrid.defenses.base import Defense
from raygrid.registry import DEFENSES


@DEFENSES.register("none")
class NoDefense(Defense):
    """No defense: item images reach the extractor as stored (the default of every trial).

    Arguments:
        config (NoDefense.Config): only ``name="none"`` (no ``apply_to``: there is
            nothing to apply, so two spellings of "no defense" cannot make two
            cache keys).

    Examples::
        >>> NoDefense()(images).tobytes() == images.tobytes()
        True
    """

    class Config(ComponentConfig):
        name: Literal["none"] = "none"

    @property
    def is_identity(self) -> bool:
        return True

    def label(self) -> str:
        return "none"

    def transform(self, images: np.ndarray) -> np.ndarray:
        return np.array(images, copy=True)


__all__ = ["NoDefense"]
