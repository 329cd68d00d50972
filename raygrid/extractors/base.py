"""The image feature extractor (IFE) interface.

An extractor maps product images to a feature vector (what the visual
recommender consumes) and to class logits (what a classifier-targeted attack
fools). Images enter as ``float`` tensors in ``[0, 1]`` of shape ``(N, 3, H, W)``
and the mean/std normalisation happens *inside* the module, so attacks and
defenses work, and their budgets are measured, in pixel space. (The VAR
authors' code attacked normalised tensors, which made "eps 4/255" about 1/255
in pixels.)
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""Per-channel mean of ImageNet images in ``[0, 1]``, torchvision's convention."""

IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""Per-channel standard deviation of ImageNet images in ``[0, 1]``."""


class Extractor(torch.nn.Module, abc.ABC):
    """Base class of image feature extractors with a classification head.

    Subclasses implement :meth:`encode` (normalised images -> features, e.g. the
    global-average-pool output of a CNN) and :meth:`classify` (features ->
    logits); this class does the normalisation and input checks.

    Args:
        class_names: Name of every output class, in logit order.
        feature_dim: Length of the feature vector.
        mean: Per-channel mean subtracted from the ``[0, 1]`` input.
        std: Per-channel standard deviation the centred input is divided by.

    Attributes:
        class_names: Name of every output class, in logit order.
        feature_dim: Length of the feature vector.
        mean: Buffer ``(1, 3, 1, 1)``.
        std: Buffer ``(1, 3, 1, 1)``.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        class_names: Sequence[str],
        feature_dim: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if len(class_names) < 2:
            raise ValueError(f"an extractor needs at least 2 classes, got {len(class_names)}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError("mean and std need 3 channels and std must be positive")
        self.class_names: tuple[str, ...] = tuple(class_names)
        self.feature_dim = int(feature_dim)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.class_names)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``(images - mean) / std`` for ``[0, 1]`` images ``(N, 3, H, W)``."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        return (images - self.mean) / self.std

    @abc.abstractmethod
    def encode(self, normalized: torch.Tensor) -> torch.Tensor:
        """Features ``(N, feature_dim)`` of already normalised images."""

    @abc.abstractmethod
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` from features ``(N, feature_dim)``."""

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and logits of ``[0, 1]`` images.

        Args:
            images: ``float`` ``(N, 3, H, W)`` in ``[0, 1]`` (not normalised).

        Returns:
            ``(features, logits)``: ``(N, feature_dim)`` and ``(N, num_classes)``.
        """
        features = self.encode(self.normalize(images))
        return features, self.classify(features)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Features ``(N, feature_dim)`` of ``[0, 1]`` images (the head is skipped)."""
        return self.encode(self.normalize(images))

    def fit(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        seed: int = 0,
        device: str = "cpu",
        progress: Callable[[int, dict[str, float]], None] | None = None,
    ) -> dict[str, float]:
        """Train in place on item images and their categories; returns training metrics.

        The extractor stage calls this for every extractor. An extractor whose
        ``config`` is a :class:`~raygrid.extractors.training.TrainingConfig`
        trains in its config's mode (``standard``, ``adversarial`` or
        ``free_adversarial``, see
        :func:`~raygrid.extractors.training.fit_with_config`) and returns the
        clean and robust held-out accuracies. Otherwise (no config,
        ``training: pretrained``, or ``training: none``: the seeded initial
        weights as they are) it trains nothing and returns ``{}``: such a
        network has no held-out accuracy to report, so no made-up numbers
        reach MLflow.

        Args:
            images: ``uint8`` ``(N, H, W, 3)`` item images.
            labels: ``(N,)`` category of each image, ``-1`` for unknown.
            seed: Seed of training.
            device: Torch device to train on.
            progress: Called after each pass over the data with ``(epoch, metrics)``.
        """
        from raygrid.extractors.training import TrainingConfig, fit_with_config  # training imports this module

        config = getattr(self, "config", None)
        if isinstance(config, TrainingConfig) and config.training not in ("pretrained", "none"):
            return fit_with_config(self, config, images, labels, seed=seed, device=device, progress=progress)
        log.info("%s has nothing to train", type(self).__name__)
        return {}

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, num_classes)`` of ``[0, 1]`` images."""
        return self.forward(images)[1]


def images_to_tensor(images_uint8: np.ndarray) -> torch.Tensor:
    """Convert ``uint8`` images ``(N, H, W, 3)`` to a new ``float32`` tensor ``(N, 3, H, W)`` in ``[0, 1]``.

    The input is never modified (it may be a read-only array from the object store).
    """
    if images_uint8.dtype != np.uint8 or images_uint8.ndim != 4 or images_uint8.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {images_uint8.dtype} {images_uint8.shape}")
    return _uint8_to_float(_as_uint8_tensor(images_uint8))


def tensor_to_images(images: torch.Tensor) -> np.ndarray:
    """Convert ``[0, 1]`` images ``(N, 3, H, W)`` to ``uint8`` ``(N, H, W, 3)``, rounding to the nearest level.

    Rounding (not truncating, as the VAR authors' code did) keeps a small
    perturbation from being erased by the 8-bit storage.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    levels = torch.round(images.detach().float().clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    return levels.permute(0, 2, 3, 1).cpu().numpy()


def _as_uint8_tensor(images_uint8: np.ndarray) -> torch.Tensor:
    """``uint8`` ``(N, 3, H, W)`` view of ``(N, H, W, 3)`` images, copying only read-only arrays."""
    array = images_uint8 if images_uint8.flags.writeable else images_uint8.copy()
    return torch.from_numpy(array).permute(0, 3, 1, 2)


def _uint8_to_float(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` ``(N, 3, H, W)`` -> contiguous ``float32`` in ``[0, 1]`` (a new tensor)."""
    return images.to(torch.float32).div_(255.0).contiguous()
