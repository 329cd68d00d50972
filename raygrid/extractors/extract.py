"""Batch feature extraction: item images -> visual features and predicted categories."""

from __future__ import annotations

import numpy as np
import torch

from raygrid.extractors.base import Extractor, images_to_tensor


@torch.no_grad()
def extract(
    model: Extractor, images_uint8: np.ndarray, *, batch_size: int = 256, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Features and predicted classes of every image, in eval mode without gradients.

    Args:
        model: The extractor; moved to ``device``, its train/eval mode restored afterwards.
        images_uint8: ``uint8`` ``(N, H, W, 3)`` images (left untouched).
        batch_size: Images per forward pass.
        device: Torch device, e.g. ``"cpu"`` or ``"cuda"``.

    Returns:
        ``(features, classes)``: ``float32`` ``(N, feature_dim)`` and ``int64`` ``(N,)``
        (index into ``model.class_names``).
    """
    if images_uint8.dtype != np.uint8 or images_uint8.ndim != 4 or images_uint8.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {images_uint8.dtype} {images_uint8.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = images_uint8.shape[0]
    features = np.empty((n, model.feature_dim), dtype=np.float32)
    classes = np.empty(n, dtype=np.int64)
    was_training = model.training
    model.to(device)
    model.eval()
    try:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            batch_features, logits = model(images_to_tensor(images_uint8[start:stop]).to(device))
            features[start:stop] = batch_features.float().cpu().numpy()
            classes[start:stop] = logits.argmax(1).cpu().numpy()
    finally:
        model.train(was_training)
    return features, classes
