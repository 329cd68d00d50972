"""JPEG compression as a defense (AIP study; Dziugaite et al. 2016, Das et al. 2017)."""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import Field

from raygrid.defenses.base import Defense, DefenseConfig
from raygrid.registry import DEFENSES


@DEFENSES.register("jpeg")
class JPEG(Defense):
    """Compress every image to JPEG at a quality and decode it again.

    JPEG discards the high-frequency detail where small adversarial
    perturbations live; the AIP paper evaluates qualities 90, 70, 50, 30 and 10.

    Arguments:
        config (JPEG.Config): ``quality`` (int): JPEG quality, 1 (smallest file,
            most loss) to 100 (default 75); ``apply_to`` ("all" or "attacked"):
            which item images it transforms (default "all").

    Shape:
        - images: ``uint8`` ``(N, H, W, 3)``; output: same shape, ``uint8``.

    Examples::
        >>> defended = JPEG(JPEG.Config(quality=50))(images)

    Notes:
        - Encoded and decoded with Pillow (libjpeg) at its defaults besides the
          quality: 4:2:0 chroma subsampling, standard quantisation tables. The
          result is deterministic for a given Pillow/libjpeg build.
        - Quality 100 is not lossless: chroma subsampling and rounding remain.
    """

    class Config(DefenseConfig):
        name: Literal["jpeg"] = "jpeg"
        quality: int = Field(75, ge=1, le=100)

    config: Config

    def label(self) -> str:
        return f"jpeg_q{self.config.quality}{self._label_suffix()}"

    def transform(self, images: np.ndarray) -> np.ndarray:
        out = np.empty_like(images)
        for i, image in enumerate(images):
            buffer = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(image), mode="RGB").save(
                buffer, format="JPEG", quality=self.config.quality
            )
            buffer.seek(0)
            with Image.open(buffer) as decoded:
                out[i] = np.asarray(decoded.convert("RGB"))
        return out


__all__ = ["JPEG"]
