"""Bit-depth reduction as a defense (feature squeezing, Xu, Evans and Qi, NDSS 2018)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from raygrid.defenses.base import Defense, DefenseConfig
from raygrid.registry import DEFENSES


@DEFENSES.register("bit_depth")
class BitDepth(Defense):
    """Reduce every colour channel to ``bits`` bits: ``2 ** bits`` evenly spaced levels.

    Each value ``u`` in 0-255 becomes ``round(round(u / 255 * L) / L * 255)``
    with ``L = 2 ** bits - 1``, i.e. the nearest of ``2 ** bits`` levels spread
    over the full range 0-255 (so black and white stay black and white), stored
    again as 8 bits. A perturbation smaller than half a level's spacing
    disappears. The AIP paper evaluates 7 down to 2 bits.

    Arguments:
        config (BitDepth.Config): ``bits`` (int): 1 to 8 (default 4; 8 leaves
            images unchanged); ``apply_to`` ("all" or "attacked"): which item
            images it transforms (default "all").

    Shape:
        - images: ``uint8`` ``(N, H, W, 3)``; output: same shape, ``uint8``.

    Examples::
        >>> BitDepth(BitDepth.Config(bits=1))(np.array([[[[0, 127, 128]]]], dtype=np.uint8)).tolist()
        [[[[0, 0, 255]]]]

    Notes:
        - Rounding is half to even (numpy's ``rint``); no value falls exactly
          on a half level except at ``bits = 1``, where 127.5 is not a level.
    """

    class Config(DefenseConfig):
        name: Literal["bit_depth"] = "bit_depth"
        bits: int = Field(4, ge=1, le=8)

    config: Config

    def label(self) -> str:
        return f"bit_depth{self.config.bits}{self._label_suffix()}"

    def transform(self, images: np.ndarray) -> np.ndarray:
        levels = 2**self.config.bits - 1
        # One lookup table for the 256 possible values: exact and fast on any image size.
        table = np.rint(np.rint(np.arange(256, dtype=np.float64) / 255.0 * levels) / levels * 255.0)
        return table.astype(np.uint8)[images]


__all__ = ["BitDepth"]
