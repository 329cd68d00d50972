"""A picture of what an attack did to a few images, for MLflow artifacts and reports."""

from __future__ import annotations

import numpy as np
from PIL import Image

#: White gap in pixels between the cells of a comparison grid and around it.
GAP = 2


def comparison_grid(
    clean: np.ndarray,
    adversarial: np.ndarray,
    *,
    max_items: int = 8,
    upscale: int = 4,
) -> Image.Image:
    """Three rows (original, adversarial, amplified difference) for the first ``max_items`` images.

    Arguments:
        clean: ``uint8`` ``(N, H, W, 3)`` stored clean images.
        adversarial: ``uint8`` ``(N, H, W, 3)`` stored adversarial images, same order.
        max_items: Number of columns: the first ``min(N, max_items)`` images.
        upscale: Integer factor of nearest-neighbour enlargement of every cell,
            so single-pixel changes on small images stay visible.

    Returns:
        An RGB :class:`PIL.Image.Image` of width ``k * W * upscale + (k + 1) * GAP``
        and height ``3 * H * upscale + 4 * GAP`` (``k`` columns, white gaps).

    Notes:
        - Third row: the per-channel absolute difference multiplied by
          ``255 / d_max``, where ``d_max`` is the largest difference among the
          images shown, so the strongest change is full intensity and the
          columns stay comparable with each other. A row of identical images
          stays black. The amplification factor is in ``image.info["amplification"]``
          (not kept when the image is saved).
    """
    for name, array in (("clean", clean), ("adversarial", adversarial)):
        if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
            raise ValueError(f"{name} must be a uint8 array (N, H, W, 3), got {getattr(array, 'shape', type(array))}")
    if clean.shape != adversarial.shape:
        raise ValueError(f"clean {clean.shape} and adversarial {adversarial.shape} differ in shape")
    if clean.shape[0] == 0:
        raise ValueError("no images to show")
    if max_items < 1 or upscale < 1:
        raise ValueError(f"max_items and upscale must be >= 1, got {max_items} and {upscale}")

    k = min(clean.shape[0], max_items)
    top, middle = clean[:k], adversarial[:k]
    diff = np.abs(middle.astype(np.int16) - top.astype(np.int16))
    d_max = int(diff.max())
    amplification = 255.0 / d_max if d_max else 0.0
    bottom = np.clip(np.rint(diff * amplification), 0, 255).astype(np.uint8)

    _, h, w, _ = top.shape
    cell_h, cell_w = h * upscale, w * upscale
    canvas = np.full((3 * cell_h + 4 * GAP, k * cell_w + (k + 1) * GAP, 3), 255, dtype=np.uint8)
    for row, images in enumerate((top, middle, bottom)):
        y = GAP + row * (cell_h + GAP)
        for col in range(k):
            x = GAP + col * (cell_w + GAP)
            cell = images[col].repeat(upscale, axis=0).repeat(upscale, axis=1)
            canvas[y : y + cell_h, x : x + cell_w] = cell
    image = Image.fromarray(canvas)
    image.info["amplification"] = amplification
    return image


__all__ = ["comparison_grid"]
