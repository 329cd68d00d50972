"""Supervised training of an extractor's classifier on item images and categories.

One loop serves every training mode: the mode is a *step* function that takes a
batch and updates the model (:func:`standard_step` here; adversarial and
free-adversarial training supply their own steps, which craft perturbations
before, or while, updating). Shuffling, augmentation, the validation split and
the metrics stay the same for all modes, so their accuracies compare.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from raygrid.extractors.base import Extractor, images_to_tensor

logger = logging.getLogger(__name__)

TrainingStep = Callable[[Extractor, torch.Tensor, torch.Tensor, torch.optim.Optimizer], tuple[torch.Tensor, torch.Tensor]]
"""``step(model, images, labels, optimizer) -> (loss, logits)``.

Updates ``model`` on one batch of ``[0, 1]`` images ``(B, 3, H, W)`` and labels
``(B,)`` and returns the batch's mean loss and the logits it was computed from
(both detached), for the running metrics.
"""


def standard_step(
    model: Extractor, images: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer
) -> tuple[torch.Tensor, torch.Tensor]:
    """One cross-entropy gradient step on clean images ("traditional" training)."""
    optimizer.zero_grad(set_to_none=True)
    logits = model.logits(images)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach()


def split_train_val(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified random split of the labelled items (label ``>= 0``).

    Each class keeps ``round(val_fraction * n_class)`` items for validation
    (at least one training item stays when the class has two or more).

    Returns:
        ``(train_indices, val_indices)``, ``int64``, sorted.
    """
    labelled = np.flatnonzero(labels >= 0)
    rng = np.random.default_rng(seed)
    order = labelled[np.lexsort((rng.random(labelled.shape[0]), labels[labelled]))]
    sorted_labels = labels[order]
    counts = np.bincount(sorted_labels)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(order.shape[0]) - starts[sorted_labels]
    n_val = np.round(val_fraction * counts).astype(np.int64)
    n_val = np.where(counts >= 2, np.minimum(n_val, counts - 1), 0)
    is_val = rank < n_val[sorted_labels]
    return np.sort(order[~is_val]), np.sort(order[is_val])


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts of up to 1/16 of the side (edge pixels repeated).

    Random numbers come from ``generator`` (on the CPU), so the augmentation is
    reproducible whatever the device of ``images``.
    """
    n, _, height, width = images.shape
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.where(flip.to(images.device)[:, None, None, None], images.flip(3), images)
    pad = max(1, min(height, width) // 16)
    padded = F.pad(out, (pad, pad, pad, pad), mode="replicate")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(images.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(images.device)
    rows = (dy[:, None] + torch.arange(height, device=images.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(width, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(3, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


@torch.no_grad()
def accuracy(
    model: Extractor, images: np.ndarray, labels: np.ndarray, indices: np.ndarray, batch_size: int, device: str
) -> float:
    """Share of ``indices`` whose predicted class equals the label (eval mode); NaN when empty."""
    if indices.shape[0] == 0:
        return math.nan
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, indices.shape[0], batch_size):
        batch = indices[start : start + batch_size]
        logits = model.logits(images_to_tensor(images[batch]).to(device))
        correct += int((logits.argmax(1).cpu() == torch.from_numpy(labels[batch])).sum())
    model.train(was_training)
    return correct / indices.shape[0]


def train_extractor(
    model: Extractor,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    val_fraction: float,
    seed: int,
    device: str = "cpu",
    progress: Callable[[int, dict[str, float]], None] | None = None,
    step: TrainingStep = standard_step,
) -> dict[str, float]:
    """Train ``model``'s classifier in place on item images and their categories.

    Adam on cross-entropy, with random flips and small shifts. A stratified
    ``val_fraction`` of the labelled items is held out; items labelled ``-1``
    are ignored. With the same ``seed``, initial weights and thread count, a
    CPU run is bit-for-bit reproducible (shuffling and augmentation draw from
    a generator seeded with ``seed``; the global torch RNG is not used).

    Args:
        model: The extractor to train; moved to ``device`` and left in eval mode.
        images: ``uint8`` ``(N, H, W, 3)`` item images.
        labels: ``int`` ``(N,)`` class of each image, ``-1`` for unknown.
        epochs: Passes over the training split.
        batch_size: Images per gradient step.
        lr: Adam learning rate.
        weight_decay: L2 penalty (Adam's ``weight_decay``).
        val_fraction: Share of each class held out for validation, in ``[0, 1)``.
        seed: Seed of the split, the shuffling and the augmentation.
        device: Torch device to train on, e.g. ``"cpu"`` or ``"cuda"``.
        progress: Called after every epoch with the 0-based epoch and that
            epoch's ``{"train_loss", "train_accuracy", "val_accuracy"}``
            (``train_accuracy`` here is the running accuracy on augmented batches).
        step: The training mode, see :data:`TrainingStep`.

    Returns:
        ``{"train_accuracy", "val_accuracy", "train_loss"}``: clean (eval-mode)
        accuracy on the training and validation splits after training (NaN
        for an empty split) and the mean loss of the last epoch.
    """
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{labels.shape[0]} labels for {images.shape[0]} images")
    if labels.max(initial=-1) >= model.num_classes:
        raise ValueError(f"labels go up to {labels.max()} but the model has {model.num_classes} classes")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")

    train_idx, val_idx = split_train_val(labels, val_fraction, seed)
    if train_idx.shape[0] < 2:
        raise ValueError(f"need at least 2 labelled training images, got {train_idx.shape[0]}")
    generator = torch.Generator().manual_seed(seed)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    logger.info(
        "training %s on %d images (%d held out) for %d epochs on %s",
        type(model).__name__, train_idx.shape[0], val_idx.shape[0], epochs, device,
    )

    train_loss, val_accuracy = math.nan, math.nan
    for epoch in range(epochs):
        model.train()
        order = train_idx[torch.randperm(train_idx.shape[0], generator=generator).numpy()]
        loss_sum, correct, seen = 0.0, 0, 0
        for start in range(0, order.shape[0], batch_size):
            batch = order[start : start + batch_size]
            if batch.shape[0] < 2:  # batch norm cannot train on a single image
                continue
            x = augment(images_to_tensor(images[batch]).to(device), generator)
            y = torch.from_numpy(labels[batch]).to(device)
            loss, logits = step(model, x, y, optimizer)
            loss_sum += float(loss) * batch.shape[0]
            correct += int((logits.argmax(1) == y).sum())
            seen += batch.shape[0]
        train_loss = loss_sum / max(seen, 1)
        val_accuracy = accuracy(model, images, labels, val_idx, batch_size, device)
        metrics = {"train_loss": train_loss, "train_accuracy": correct / max(seen, 1), "val_accuracy": val_accuracy}
        logger.info(
            "epoch %d/%d: loss %.4f, train accuracy %.3f, val accuracy %.3f",
            epoch + 1, epochs, metrics["train_loss"], metrics["train_accuracy"], metrics["val_accuracy"],
        )
        if progress is not None:
            progress(epoch, metrics)

    model.eval()
    return {
        "train_accuracy": accuracy(model, images, labels, train_idx, batch_size, device),
        "val_accuracy": val_accuracy if epochs else accuracy(model, images, labels, val_idx, batch_size, device),
        "train_loss": train_loss,
    }
