"""The base class of registered image-space defenses, and their shared config.

A defense is a transform of stored item images (``uint8`` ``(N, H, W, 3)``)
applied before feature extraction, as a platform would apply it to every image
a merchant uploads. Defenses are built from configs through the registry::

    from raygrid.registry import DEFENSES
    defense = DEFENSES.build(DEFENSES.get("jpeg").Config(quality=50))
    defended = defense(images_uint8)
"""

from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from typing import Any, Literal

import numpy as np

from raygrid.config.base import ComponentConfig, Configured

#: Which item images a defense transforms: every catalogue image, or only the attacked items' ones.
ApplyTo = Literal["all", "attacked"]


class DefenseConfig(ComponentConfig):
    """Config of a defense that transforms images.

    Attributes:
        apply_to: ``"all"`` (default): every catalogue image goes through the
            defense before extraction, as on a real platform, where nobody knows
            which uploads are adversarial. ``"attacked"``: only the images of the
            attacked items do (the published VAR code's setting); every other
            item keeps its undefended features.
    """

    apply_to: ApplyTo = "all"


class Defense(Configured, ABC):
    """An image-space defense: ``uint8`` images in, transformed ``uint8`` images out.

    Subclasses set ``Config`` (whose ``name`` is ``Literal[<registered name>]``)
    and implement :meth:`transform` and :meth:`label`.

    Arguments:
        config: The defense's config; ``None`` uses the defaults of ``Config``.

    Shape:
        - images: ``uint8`` ``(N, H, W, 3)`` RGB, not modified (may be read-only).
        - output: a new ``uint8`` array of the same shape.
    """

    @property
    def apply_to(self) -> ApplyTo:
        """``"all"`` or ``"attacked"``: which item images the defense transforms (see :class:`DefenseConfig`)."""
        return getattr(self.config, "apply_to", "all")

    @property
    def is_identity(self) -> bool:
        """True only for the defense that leaves images as they are."""
        return False

    def _label_suffix(self) -> str:
        """``"_attacked"`` when the defense applies to the attacked items only, for labels."""
        return "_attacked" if self.apply_to == "attacked" else ""

    @abstractmethod
    def label(self) -> str:
        """Short readable label, e.g. ``"jpeg_q50"``, for names and plots (not a cache key)."""

    @abstractmethod
    def transform(self, images: np.ndarray) -> np.ndarray:
        """Transform checked ``uint8`` ``(N, H, W, 3)`` images into a new array of the same shape."""

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """The defended images: a new ``uint8`` ``(N, H, W, 3)`` array; ``images`` is left untouched."""
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            shape = getattr(images, "shape", None)
            raise ValueError(
                f"images must be a uint8 array (N, H, W, 3), got {getattr(images, 'dtype', type(images).__name__)} {shape}"
            )
        out = self.transform(images)
        if out.shape != images.shape or out.dtype != np.uint8:
            raise RuntimeError(f"{type(self).__name__} returned {out.dtype} {out.shape}, expected uint8 {images.shape}")
        return out

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items() if k != "name")
        return f"{type(self).__name__}({fields})"


#: Catalogues larger than this are defended into a temporary file, memory-mapped, not into memory.
SPILL_BYTES = 1 << 30


def defend_catalogue(defense: Defense, images: Any, *, batch: int = 1024, spill_bytes: int | None = None) -> np.ndarray:
    """Every image of a catalogue through ``defense``, ``batch`` images at a time.

    Defenses transform each image on its own, so the result equals
    ``defense(images)``. Read batch by batch, a memory-mapped catalogue is never
    copied into memory whole; a result larger than ``spill_bytes`` is written to an
    anonymous temporary file (``tempfile``'s directory, removed when the array is
    dropped) and returned memory-mapped, so that at the AIP study's scale
    (326k images at 224 px: 49 GB) the defended catalogue lives in the page cache,
    which the kernel can evict, not in a process's private memory.

    Args:
        defense: The defense to apply.
        images: ``uint8`` ``(N, H, W, 3)`` array or memory map; not modified.
        batch: Images transformed at once.
        spill_bytes: Size above which the result goes to a temporary file
            (``None``: :data:`SPILL_BYTES`).
    """
    spill_bytes = SPILL_BYTES if spill_bytes is None else spill_bytes
    shape = tuple(images.shape)
    nbytes = int(np.prod(shape))
    if nbytes > spill_bytes:
        with tempfile.TemporaryFile(prefix="raygrid-defended-") as handle:
            out = np.memmap(handle, dtype=np.uint8, mode="w+", shape=shape)  # the map outlives the handle
    else:
        out = np.empty(shape, dtype=np.uint8)
    for start in range(0, shape[0], batch):
        out[start : start + batch] = defense(np.ascontiguousarray(images[start : start + batch]))
    return out


def build_defense(config: dict[str, Any]) -> Defense:
    """The registered defense of a config dump (``{"name": "jpeg", "quality": 50, ...}``), validated."""
    from raygrid.registry import DEFENSES

    cls = DEFENSES.get(config["name"])
    return DEFENSES.build(cls.Config.model_validate(config))


__all__ = ["ApplyTo", "Defense", "DefenseConfig", "build_defense", "defend_catalogue"]
