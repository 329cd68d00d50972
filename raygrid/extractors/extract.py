"""Batch feature extraction: item images -> visual features and predicted categories.

The whole catalogue goes through the extractor in batches, under
``torch.inference_mode`` (no autograd bookkeeping), with activations in
channels-last layout (what oneDNN on CPUs and cuDNN's tensor-core kernels
prefer), and on CUDA in mixed precision (bfloat16 where the GPU has it, else
float16). A background thread slices, converts and (on CUDA) pins the next
batch while the device works on the current one, so a memory-mapped image
store is read while the network runs. Features always come back as ``float32``.

The VAR authors' code extracted one image at a time with autograd on;
``benchmarks/extraction_speed.py`` measures the difference.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from raygrid.extractors.base import Extractor, images_to_tensor

PIXELS_PER_BATCH = 1 << 22
"""Default batch size: about this many pixels per batch (83 images at 224 px, 256 at 64 px or less)."""

MAX_BATCH = 256
"""Largest default batch."""


def default_batch_size(height: int, width: int) -> int:
    """Images per batch for ``height x width`` images: ~4M pixels, between 8 and :data:`MAX_BATCH`."""
    return int(max(8, min(MAX_BATCH, PIXELS_PER_BATCH // max(1, height * width))))


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype for ``device``: bfloat16 or float16 on CUDA, ``None`` (float32) elsewhere.

    CPUs keep float32: without AVX-512 BF16 or AMX, bfloat16 convolutions are
    slower than float32 ones, and features must not depend on the machine.
    """
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def extract(
    model: Extractor,
    images_uint8: np.ndarray,
    *,
    batch_size: int | None = None,
    device: str = "cpu",
    mixed_precision: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features and predicted classes of every image, in eval mode without gradients.

    Args:
        model: The extractor; moved to ``device`` in channels-last layout (both
            kept afterwards), its train/eval mode restored afterwards.
        images_uint8: ``uint8`` ``(N, H, W, 3)`` images, e.g. a memory-mapped
            image store (left untouched).
        batch_size: Images per forward pass; ``None`` picks one from the image
            size (:func:`default_batch_size`).
        device: Torch device, e.g. ``"cpu"`` or ``"cuda"``.
        mixed_precision: Run the network under autocast. ``None`` (the default)
            means on CUDA only, in :func:`autocast_dtype`; ``True`` forces it
            (bfloat16 on a CPU); ``False`` keeps float32. Features are returned
            as ``float32`` either way.

    Returns:
        ``(features, classes)``: ``float32`` ``(N, feature_dim)`` and ``int64`` ``(N,)``
        (index into ``model.class_names``).
    """
    if images_uint8.dtype != np.uint8 or images_uint8.ndim != 4 or images_uint8.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {images_uint8.dtype} {images_uint8.shape}")
    n, height, width = images_uint8.shape[:3]
    batch_size = default_batch_size(height, width) if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    target = torch.device(device)
    amp_dtype = autocast_dtype(target) if mixed_precision in (None, True) else None
    if mixed_precision and amp_dtype is None:
        amp_dtype = torch.bfloat16  # asked for explicitly on a CPU
    features = np.empty((n, model.feature_dim), dtype=np.float32)
    classes = np.empty(n, dtype=np.int64)
    was_training = model.training
    model.to(target, memory_format=torch.channels_last)
    model.eval()
    autocast = (
        torch.autocast(device_type=target.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    )
    try:
        with torch.inference_mode(), autocast:
            for start, batch in _prefetched_batches(images_uint8, batch_size, target):
                batch_features, logits = model(batch)
                stop = start + batch.shape[0]
                features[start:stop] = batch_features.float().cpu().numpy()
                classes[start:stop] = logits.argmax(1).cpu().numpy()
    finally:
        model.train(was_training)
    return features, classes


def _prefetched_batches(
    images_uint8: np.ndarray, batch_size: int, device: torch.device
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, [0, 1] float batch on device, channels-last)``, the next batch prepared in a thread meanwhile.

    On CUDA the batch crosses the bus as pinned ``uint8`` (a quarter of the
    float bytes) and becomes float on the GPU; on a CPU the thread does the
    conversion (torch releases the GIL), overlapping the previous forward pass.
    """
    n = images_uint8.shape[0]
    on_cuda = device.type == "cuda"

    def prepare(start: int) -> torch.Tensor:
        chunk = np.ascontiguousarray(images_uint8[start : start + batch_size])
        if on_cuda:
            return torch.from_numpy(chunk).pin_memory()
        return images_to_tensor(chunk).contiguous(memory_format=torch.channels_last)

    def finish(prepared: torch.Tensor) -> torch.Tensor:
        if not on_cuda:
            return prepared
        pixels = prepared.to(device, non_blocking=True).permute(0, 3, 1, 2)
        return pixels.float().div_(255.0).contiguous(memory_format=torch.channels_last)

    starts = list(range(0, n, batch_size))
    if not starts:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="raygrid-extract") as pool:
        pending: Future[torch.Tensor] = pool.submit(prepare, starts[0])
        for index, start in enumerate(starts):
            prepared = pending.result()
            if index + 1 < len(starts):
                pending = pool.submit(prepare, starts[index + 1])
            yield start, finish(prepared)
