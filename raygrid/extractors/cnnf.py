"""CNN-F, the image network of DVBPR, as a module and as a registered extractor.

CNN-F is the "fast" network of Chatfield et al., "Return of the Devil in the
Details: Delving Deep into Convolutional Nets" (BMVC 2014,
https://arxiv.org/abs/1405.3531): five convolutions and three fully connected
layers, an AlexNet-like design with a wider first stride. Kang et al.'s DVBPR
("Visually-Aware Fashion Recommendation and Design with Generative Image
Models", ICDM 2017) train it end to end from scratch, its last layer giving
the item's visual embedding; the AIP study attacks that network.

Layers (at 224 px, max pools in ceil mode as in Caffe, so the maps are
54 -> 27 -> 13 -> 6):

=====  =====================================================================
conv1  64 filters 11x11, stride 4; ReLU; local response normalisation; max pool 3/2
conv2  256 filters 5x5, padding 2; ReLU; local response normalisation; max pool 3/2
conv3  256 filters 3x3, padding 1; ReLU
conv4  256 filters 3x3, padding 1; ReLU
conv5  256 filters 3x3, padding 1; ReLU; max pool 3/2
fc6    ``fc_dim`` (4096); ReLU; dropout
fc7    ``fc_dim`` (4096); ReLU; dropout
fc8    ``out_dim`` (DVBPR: the embedding length K, 100 in the AIP study)
=====  =====================================================================

An adaptive average pool to 6x6 before fc6 lets the network take any image
side of at least 39 px (at 224 px it is the identity), so the demo's small
images work too. Dropout is active only in training mode: :meth:`CNNF.eval`
makes the network deterministic (the published AIP port left dropout on at
evaluation, so its scores were noisy). Inputs are ``[0, 1]`` images;
normalisation (ImageNet mean/std) happens inside, so attacks work in pixel space.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from raygrid.extractors.base import IMAGENET_MEAN, IMAGENET_STD, Extractor
from raygrid.extractors.training import TrainingConfig, TrainingMode
from raygrid.registry import EXTRACTORS

MIN_SIDE = 39
"""Smallest image side CNN-F takes: conv1 (11 px at stride 4) must leave 8 px so that
the three ceil-mode 3/2 max pools each keep at least one window (39 -> 8 -> 4 -> 2 -> 1)."""


def upsample_to_min_side(images: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` images whose shorter side is under :data:`MIN_SIDE` upsampled (bilinear,
    aspect kept) so that it is at least that; others returned unchanged. Differentiable."""
    side = min(images.shape[-2:])
    if side >= MIN_SIDE:
        return images
    size = (images.shape[-2] * MIN_SIDE + side - 1) // side, (images.shape[-1] * MIN_SIDE + side - 1) // side
    return nn.functional.interpolate(images, size=size, mode="bilinear", align_corners=False)


class CNNF(nn.Module):
    """CNN-F mapping ``[0, 1]`` images ``(N, 3, H, W)`` to ``(N, out_dim)`` (DVBPR's item embedding).

    Args:
        out_dim: Outputs of the last layer: DVBPR's embedding length ``K``, or
            the number of classes when used as a classifier.
        dropout: Dropout probability after fc6 and fc7 (training mode only).
        fc_dim: Width of fc6 and fc7 (4096 in CNN-F; smaller for CPU demos).
        seed: Seed of the weight initialisation (the global torch RNG is left untouched).

    Attributes:
        body: conv1 ... fc7 (with their ReLUs and dropouts) on normalised images.
        head: fc8.

    Example:
        >>> net = CNNF(10, fc_dim=64).eval()
        >>> net(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 10])
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, out_dim: int, *, dropout: float = 0.5, fc_dim: int = 4096, seed: int = 0) -> None:
        super().__init__()
        if out_dim < 1 or fc_dim < 1 or not 0 <= dropout < 1:
            raise ValueError(f"need out_dim >= 1, fc_dim >= 1 and dropout in [0, 1), got {out_dim}, {fc_dim}, {dropout}")
        self.out_dim = int(out_dim)
        self.fc_dim = int(fc_dim)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.body = nn.Sequential(
                nn.Conv2d(3, 64, kernel_size=11, stride=4),
                nn.ReLU(inplace=True),
                nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0),
                nn.MaxPool2d(3, stride=2, ceil_mode=True),
                nn.Conv2d(64, 256, kernel_size=5, padding=2),
                nn.ReLU(inplace=True),
                nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0),
                nn.MaxPool2d(3, stride=2, ceil_mode=True),
                nn.Conv2d(256, 256, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, ceil_mode=True),
                nn.AdaptiveAvgPool2d(6),
                nn.Flatten(),
                nn.Linear(256 * 6 * 6, fc_dim),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(fc_dim, fc_dim),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
            )
            self.head = nn.Linear(fc_dim, out_dim)
            # He initialisation: with PyTorch's default (uniform, gain 1/sqrt(3)) the signal of
            # this BN-free stack fades layer by layer and training from scratch stalls at chance.
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                    nn.init.zeros_(module.bias)
            nn.init.normal_(self.head.weight, std=0.01)  # small initial logits (or embeddings)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``(images - mean) / std`` of ``[0, 1]`` images, after checking their shape and size."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        if min(images.shape[-2:]) < MIN_SIDE:
            raise ValueError(f"CNN-F needs images of at least {MIN_SIDE} px per side, got {tuple(images.shape[-2:])}")
        return (images - self.mean) / self.std

    def fc7(self, images: torch.Tensor) -> torch.Tensor:
        """fc7 activations (after ReLU and dropout) ``(N, fc_dim)`` of ``[0, 1]`` images."""
        return self.body(self.normalize(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """fc8 outputs ``(N, out_dim)`` of ``[0, 1]`` images ``(N, 3, H, W)``."""
        return self.head(self.fc7(images))


@EXTRACTORS.register("cnnf")
class CNNFExtractor(Extractor):
    """CNN-F as a feature extractor and classifier trained in raygrid: features fc7, logits fc8.

    Trained from scratch on the catalogue's categories in any of the training
    modes (see :class:`~raygrid.extractors.training.TrainingConfig`); DVBPR
    trains the same :class:`CNNF` end to end on interactions instead.

    Args:
        config: Architecture and training hyper-parameters.
        class_names: Category names, in logit order.
        seed: Seed of the weight initialisation.
    """

    class Config(TrainingConfig):
        """Config of :class:`CNNFExtractor`.

        Attributes:
            training: ``standard``, ``adversarial`` or ``free_adversarial``: trained on
                the catalogue's categories; ``none``: the seeded He-initialised weights
                as they are. An untrained CNN-F's fc7 is a generic random-feature map of
                the images, not fitted to the catalogue's categories: the stand-in for
                an ImageNet AlexNet's fc7 (the AIP study's AlexRank features) where no
                pretrained weights can be had. Its classes (for TAaMR) are the
                catalogue's categories through an untrained head.
            fc_dim: Width of fc6 and fc7, hence the feature length (4096 in CNN-F).
            dropout: Dropout after fc6 and fc7 while training.
        """

        name: Literal["cnnf"] = "cnnf"
        training: TrainingMode | Literal["none"] = "standard"
        fc_dim: int = Field(4096, ge=8, le=16384)
        dropout: float = Field(0.5, ge=0, lt=1)

    def __init__(self, config: Config, class_names: Sequence[str], seed: int = 0) -> None:
        super().__init__(class_names, feature_dim=config.fc_dim)
        self.config = config
        self.net = CNNF(len(self.class_names), dropout=config.dropout, fc_dim=config.fc_dim, seed=seed)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise as :meth:`CNNF.normalize`, images smaller than :data:`MIN_SIDE` upsampled to it first.

        The upsampling (bilinear, as DVBPR does for the same network) is differentiable,
        so attacks still optimise the images at their own size.
        """
        return self.net.normalize(upsample_to_min_side(images))

    def encode(self, normalized: torch.Tensor) -> torch.Tensor:
        """fc7 activations ``(N, fc_dim)`` of normalised images."""
        return self.net.body(normalized)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` of fc8."""
        return self.net.head(features)
