"""c-SEMA: the composition semantic attack of the AIP study (Liu & Larson, section 4.3)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydantic import Field

from raygrid.config.base import ComponentConfig, Configured
from raygrid.registry import ATTACKS

#: Where the inset goes: a corner, or ``right`` (vertically centred on the right edge, the paper's Figure 3).
Position = Literal["right", "top_left", "top_right", "bottom_left", "bottom_right"]


def inset_box(height: int, width: int, inset_scale: float, position: Position, margin: int) -> tuple[int, int, int, int]:
    """``(top, left, inset height, inset width)`` of the inset in an image of ``height x width``.

    The inset's side is ``round(inset_scale * side)`` of the image (at least 1 px),
    ``margin`` pixels from the edges it touches.
    """
    h = max(1, round(inset_scale * height))
    w = max(1, round(inset_scale * width))
    margin = min(margin, height - h, width - w)
    margin = max(margin, 0)
    top = {"right": (height - h) // 2, "top_left": margin, "top_right": margin}.get(position, height - h - margin)
    left = margin if position in ("top_left", "bottom_left") else width - w - margin
    return top, left, h, w


def compose_inset(
    images: np.ndarray,
    hook: np.ndarray,
    *,
    inset_scale: float = 0.4,
    position: Position = "right",
    margin: int = 1,
    text: str = "",
    font_size: int | None = None,
    font_path: str | None = None,
) -> np.ndarray:
    """Paste the hook image, resized, as an inset on every image, with a line of text.

    Args:
        images: ``uint8`` ``(N, H, W, 3)`` cooperative images (not modified).
        hook: ``uint8`` ``(H', W', 3)`` the hook item's image.
        inset_scale: Inset side as a share of the image side, in (0, 1).
        position: Where the inset goes (see :data:`Position`).
        margin: Pixels between the inset and the image edges it touches.
        text: A line drawn in black at the edge away from the inset (empty: none);
            the inset is pasted after it, so the inset region holds the hook exactly.
        font_size: Text height in pixels; ``None``: an eighth of the image side (at least 6).
        font_path: A TrueType file; ``None``: Pillow's bundled font.

    Returns:
        A new ``uint8`` ``(N, H, W, 3)`` array.
    """
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if hook.dtype != np.uint8 or hook.ndim != 3 or hook.shape[-1] != 3:
        raise ValueError(f"hook must be one uint8 image (H, W, 3), got {hook.dtype} {hook.shape}")
    if not 0 < inset_scale < 1:
        raise ValueError(f"inset_scale must lie in (0, 1), got {inset_scale}")
    n, height, width, _ = images.shape
    top, left, h, w = inset_box(height, width, inset_scale, position, margin)
    inset = Image.fromarray(np.ascontiguousarray(hook)).resize((w, h), Image.Resampling.LANCZOS)
    size = font_size if font_size is not None else max(6, min(height, width) // 8)
    font = ImageFont.truetype(font_path, size) if font_path else ImageFont.load_default(size=size)
    text_y = margin if position.startswith("bottom") else height - size - margin
    out = np.empty_like(images)
    for i in range(n):
        canvas = Image.fromarray(np.ascontiguousarray(images[i]))
        if text:
            ImageDraw.Draw(canvas).text((margin, text_y), text, fill=(0, 0, 0), font=font)
        canvas.paste(inset, (left, top))
        out[i] = np.asarray(canvas)
    return out


@ATTACKS.register("csema")
class CSEMA(Configured):
    """Composition semantic attack: the hook item's image as an inset on the cooperative image, with a text line.

    No model knowledge: the merchant co-depicts a popular item (the hook, the
    study's ``aip.hook_item``) with theirs, "match your jeans" style. Not a
    perturbation, so it has no eps; the realised Linf distance is logged anyway.

    Arguments:
        config (CSEMA.Config): ``inset_scale`` (share of the side, default 0.4),
            ``position`` (default ``right``, the paper's Figure 3), ``margin`` (px),
            ``text`` (``None``: "match your <hook category>", or "match it" without
            categories; ``""``: no text), ``font_size`` (px; ``None``: side / 8),
            ``font_path`` (a TrueType file; ``None``: the font that ships with Pillow).
    """

    studies: ClassVar[frozenset[str]] = frozenset({"aip"})

    class Config(ComponentConfig):
        name: Literal["csema"] = "csema"
        inset_scale: float = Field(0.4, gt=0, lt=1)
        position: Position = "right"
        margin: int = Field(1, ge=0)
        text: str | None = None
        font_size: int | None = Field(None, ge=1)
        font_path: str | None = None

    config: Config

    def caption(self, hook_category: str | None) -> str:
        """The text line for a hook of ``hook_category``."""
        if self.config.text is not None:
            return self.config.text
        return f"match your {hook_category}" if hook_category else "match it"

    def __call__(self, images: np.ndarray, hook: np.ndarray, hook_category: str | None = None) -> np.ndarray:
        """The c-SEMA images of ``images`` with ``hook`` as the inset (see :func:`compose_inset`)."""
        c = self.config
        return compose_inset(
            images, hook, inset_scale=c.inset_scale, position=c.position, margin=c.margin,
            text=self.caption(hook_category), font_size=c.font_size, font_path=c.font_path,
        )

    def label(self) -> str:
        """``csema``."""
        return "csema"


__all__ = ["CSEMA", "Position", "compose_inset", "inset_box"]
