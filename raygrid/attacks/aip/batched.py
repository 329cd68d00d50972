"""The AIP attacks' loop, batched over items: Adam on the perturbation of many images at once.

Liu & Larson's Algorithm 1 optimises a perturbation with Adam, clips it to the
Linf ball and to [0, 1] after each step, and quantises the final image to 8 bits.
The published code ran it one image at a time; here a batch of cold items shares
each forward and backward pass. Adam's update is elementwise and the objectives
in :mod:`~raygrid.attacks.aip.preference` are per image, so an image's result
does not depend on its batch (``benchmarks/aip_batched_attacks.py`` measures the
speed-up against the one-image loop).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import nn

from raygrid.attacks.loops import adam_attack
from raygrid.attacks.storage import dequantize, quantize
from raygrid.attacks.threat import LinfThreat

logger = logging.getLogger(__name__)


def adam_on_items(
    model: nn.Module,
    images_uint8: np.ndarray,
    *,
    maximise: bool,
    eps_255: float,
    steps: int,
    lr: float,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, float]:
    """Optimise ``model(x)`` (one value per image) over the Linf ball around each image; store as 8 bits.

    Args:
        model: Images ``(N, 3, H, W)`` in [0, 1] -> ``(N,)``, e.g.
            :func:`~raygrid.attacks.aip.preference.summed_preference` (INSA, maximised) or
            :class:`~raygrid.attacks.aip.preference.FeatureDistance` (EXPA, minimised).
            Moved to ``device`` and put in eval mode for the attack.
        images_uint8: ``uint8`` ``(N, H, W, 3)`` cooperative images (not modified).
        maximise: Ascend (INSA) instead of descend (EXPA).
        eps_255: Linf budget in 0-255 pixel units.
        steps: Adam steps per image.
        lr: Adam learning rate in [0, 1] pixel units.
        batch_size: Images per forward/backward pass (memory only).
        device: Where the attack runs.

    Returns:
        ``(adversarial uint8 (N, H, W, 3), seconds)``: the images rounded to 8 bits
        (:func:`~raygrid.attacks.storage.quantize`), so each stored value is within
        ``eps_255`` levels of the original for an integer budget.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sign = -1.0 if maximise else 1.0

    def objective(m: nn.Module, x: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        return sign * m(x)

    threat = LinfThreat(eps_255 / 255)
    model = model.to(device)
    out = np.empty_like(images_uint8)
    start = time.perf_counter()
    for first in range(0, images_uint8.shape[0], batch_size):
        x = dequantize(np.ascontiguousarray(images_uint8[first : first + batch_size]), device=device)
        labels = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        adv = adam_attack(model, x, labels, objective=objective, threat=threat, steps=steps, lr=lr)
        out[first : first + x.shape[0]] = quantize(adv)
        logger.debug("attacked items %d-%d of %d", first, first + x.shape[0], images_uint8.shape[0])
    return out, time.perf_counter() - start


__all__ = ["adam_on_items"]
