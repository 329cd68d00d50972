"""Attack a stored catalogue: uint8 images in, uint8 adversarial images out, batched on a device."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from raygrid.attacks.base import Attack
from raygrid.attacks.storage import dequantize, quantize

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _on_device(model: Any, device: torch.device) -> Iterator[None]:
    """Move an :class:`nn.Module` held on one other device to ``device``, and back afterwards."""
    if not isinstance(model, nn.Module):
        yield
        return
    devices = {t.device for t in (*model.parameters(), *model.buffers())}
    if len(devices) != 1 or next(iter(devices)) == device:
        # Already there, stateless, or spread over devices on purpose: leave it alone.
        yield
        return
    (original,) = devices
    model.to(device)
    try:
        yield
    finally:
        model.to(original)


def attack_images(
    attack: Attack,
    model: Callable[[Tensor], Any],
    images_uint8: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> np.ndarray:
    """Attack a set of stored images batch by batch and return the stored (rounded) result.

    Arguments:
        attack: A built attack, e.g. ``ATTACKS.build(config)``.
        model: Callable mapping ``(N, 3, H, W)`` float in [0, 1] to logits ``(N, C)``
            (wrap an extractor in :class:`raygrid.attacks.base.OutputSelector`). An
            :class:`nn.Module` whose parameters and buffers sit on one other device
            is moved to ``device`` for the call and moved back afterwards.
        images_uint8: ``uint8`` ``(N, H, W, 3)`` RGB images; may be read-only; not modified.
        labels: Integer ``(N,)``: target class ids for a targeted attack, true
            class ids otherwise.
        batch_size: Images per forward/backward pass (memory only, see Notes).
        device: Where the attack runs: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        seed: Seed of the random start (one CPU generator for the whole call).

    Returns:
        A new ``uint8`` array ``(N, H, W, 3)``: the adversarial images rounded by
        :func:`raygrid.attacks.storage.quantize`. For an integer eps (0-255
        units) and a Linf attack every stored value differs from the clean one
        by at most eps levels.

    Examples::
        >>> attack = ATTACKS.build(PGD.Config(eps=8))
        >>> adv = attack_images(attack, OutputSelector(extractor, 1), data.images[origin_items],
        ...                     np.full(len(origin_items), target_category), device="cuda")

    Notes:
        - The identity attack returns a copy of ``images_uint8`` without
          touching the model.
        - Deterministic for a seed on a given device: the random starts come
          from one seeded CPU generator consumed in item order (so CPU and GPU
          runs start from the same points); with ``random_start=False`` an item's
          result does not depend on the rest of its batch. GPU kernels may
          still differ from CPU ones in the last float bits, which can flip the
          sign of a near-zero gradient.
    """
    if not isinstance(images_uint8, np.ndarray) or images_uint8.dtype != np.uint8 or images_uint8.ndim != 4:
        raise ValueError(
            f"images_uint8 must be a uint8 array (N, H, W, 3), got {getattr(images_uint8, 'dtype', type(images_uint8))}"
            f" {getattr(images_uint8, 'shape', '')}"
        )
    labels = np.asarray(labels)
    if labels.shape != images_uint8.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be integers of shape ({images_uint8.shape[0]},), got {labels.dtype} {labels.shape}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if attack.is_identity:
        return np.array(images_uint8, copy=True)

    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        # "cuda" means the current CUDA device; name it, so a model already there is not moved.
        device = torch.device("cuda", torch.cuda.current_device())
    n_items = images_uint8.shape[0]
    generator = torch.Generator(device="cpu").manual_seed(seed)
    labels_tensor = torch.from_numpy(labels.astype(np.int64))
    adversarial = np.empty_like(images_uint8)
    logger.info("attacking %d images with %s on %s (batch size %d)", n_items, attack.label(), device, batch_size)
    with _on_device(model, device):
        for start in range(0, n_items, batch_size):
            stop = min(start + batch_size, n_items)
            x = dequantize(images_uint8[start:stop], device=device)
            y = labels_tensor[start:stop].to(device)
            adversarial[start:stop] = quantize(attack(model, x, y, generator=generator))
            logger.debug("attacked images %d-%d of %d", start, stop, n_items)
    return adversarial


__all__ = ["attack_images"]
