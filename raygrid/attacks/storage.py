"""Converting images between float tensors and stored 8-bit arrays, and what the storing did.

Adversarial images are stored losslessly as ``uint8`` ``(N, H, W, 3)`` arrays,
like the clean catalogue. What reaches the feature extractor is the *stored*
image, so the distances reported for an attack are measured on the stored
arrays (:func:`realised_distances`), not on the float tensors the attack
produced.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from torch import Tensor


def quantize(images: Tensor) -> np.ndarray:
    """Round float images in [0, 1] to 8-bit arrays, channels last.

    Each value becomes ``floor(255 * x + 0.5)`` (round half up, computed in
    float64), after clamping ``x`` to [0, 1].

    Args:
        images: ``(N, C, H, W)`` float tensor in [0, 1] (C = 3 for RGB), any device.

    Returns:
        ``uint8`` array ``(N, H, W, C)`` on the CPU.

    Notes:
        - The VAR authors *truncated* (``(255 * x).astype(uint8)``): every
          positive change smaller than one level was dropped and every negative
          one became a full level, so a small perturbation was mostly erased and
          what remained was biased downwards. Rounding keeps it: a change is
          stored when it moves a value past the half level.
        - ``quantize(dequantize(a))`` returns ``a`` exactly.
        - Values outside [0, 1] are clamped; NaN raises ``ValueError``.
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a float tensor (N, C, H, W), got {getattr(images, 'shape', type(images))}")
    x = images.detach().to(device="cpu", dtype=torch.float64)
    if torch.isnan(x).any():
        raise ValueError("images contain NaN; cannot store them")
    levels = torch.floor(x.clamp(0.0, 1.0) * 255.0 + 0.5)
    return levels.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def dequantize(images: np.ndarray, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """8-bit arrays ``(N, H, W, C)`` to float tensors ``(N, C, H, W)`` in [0, 1] (``u / 255``).

    Args:
        images: ``uint8`` array ``(N, H, W, C)``; may be read-only (it is not modified).
        device: Where the tensor goes, e.g. ``"cpu"`` or ``"cuda"``.
        dtype: Floating dtype of the result.

    Returns:
        A new tensor ``(N, C, H, W)``.
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be a uint8 array (N, H, W, C), got {_describe(images)}")
    # np.array(copy) so that a read-only array (Ray object store) gives a writable tensor.
    tensor = torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2)
    return (tensor.to(device=device, dtype=dtype) / 255.0).contiguous()


def realised_distances(clean: np.ndarray, adversarial: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image Linf and L2 distance between stored clean and adversarial images.

    Args:
        clean: ``uint8`` array ``(N, H, W, 3)``.
        adversarial: ``uint8`` array of the same shape.

    Returns:
        ``{"linf": (N,), "l2": (N,)}``, float64: ``linf`` is the largest absolute
        change of any pixel channel in 0-255 pixel units (an integer value);
        ``l2`` is the Euclidean norm of the change over all pixels and
        channels in [0, 1] units (difference / 255).
    """
    for name, array in (("clean", clean), ("adversarial", adversarial)):
        if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim < 2:
            raise ValueError(f"{name} must be a uint8 array (N, H, W, 3), got {_describe(array)}")
    if clean.shape != adversarial.shape:
        raise ValueError(f"clean {clean.shape} and adversarial {adversarial.shape} differ in shape")
    diff = (adversarial.astype(np.int16) - clean.astype(np.int16)).reshape(clean.shape[0], -1)
    if diff.shape[1] == 0:
        zeros = np.zeros(clean.shape[0], dtype=np.float64)
        return {"linf": zeros, "l2": zeros.copy()}
    linf = np.abs(diff).max(axis=1).astype(np.float64)
    l2 = np.sqrt(np.square(diff.astype(np.float64) / 255.0).sum(axis=1))
    return {"linf": linf, "l2": l2}


def image_archive(items: np.ndarray, images: np.ndarray, **metadata: Any) -> bytes:
    """The stored images of a set of items as one compressed ``.npz`` file, in memory.

    The archive holds ``items`` (``int64`` ``(N,)`` item ids), ``images``
    (``uint8`` ``(N, H, W, 3)``, exactly as stored: lossless) and each keyword
    of ``metadata`` as a 0-d array (e.g. ``origin="sandal"``). Read it back with
    ``np.load(io.BytesIO(data))``.

    Args:
        items: Item ids, one per image.
        images: ``uint8`` ``(N, H, W, 3)`` stored images, in the order of ``items``.
        **metadata: Scalars (strings, numbers) saved beside them.

    Returns:
        The bytes of the ``.npz`` file.
    """
    items = np.asarray(items)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be a uint8 array (N, H, W, 3), got {_describe(images)}")
    if items.shape != images.shape[:1] or not np.issubdtype(items.dtype, np.integer):
        raise ValueError(f"items must be {images.shape[0]} integer ids, got {items.dtype} {items.shape}")
    reserved = {"items", "images"} & set(metadata)
    if reserved:
        raise ValueError(f"metadata cannot be named {sorted(reserved)}")
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, items=items.astype(np.int64), images=images, **{k: np.asarray(v) for k, v in metadata.items()}
    )
    return buffer.getvalue()


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


__all__ = ["dequantize", "image_archive", "quantize", "realised_distances"]
