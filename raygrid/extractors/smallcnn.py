"""A small convolutional network for the synthetic catalogue's images.

It stands in for ResNet50 where ImageNet weights cannot be downloaded: trained
from scratch on the item categories in seconds to minutes on a CPU, it plays
the same two roles, feature extractor (the global-average-pool output, the
"pooled layer" the VAR study feeds to the recommenders) and category
classifier (what a targeted attack fools).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from raygrid.extractors.base import Extractor
from raygrid.extractors.training import TrainingConfig, TrainingMode
from raygrid.registry import EXTRACTORS


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


@EXTRACTORS.register("smallcnn")
class SmallCNN(Extractor):
    """Four conv-BN-ReLU blocks (three followed by 2x2 max pooling), global average pooling, linear head.

    Channels grow ``width -> 2 width -> 4 width -> 4 width``; the features are
    the ``4 * width`` global-average-pooled activations of the last block.
    Inputs are ``[0, 1]`` images of any side of at least 8 px; ImageNet mean/std
    normalisation happens inside (see :class:`~raygrid.extractors.base.Extractor`).

    Args:
        config: Architecture and training hyper-parameters.
        class_names: Category names, in logit order.
        seed: Seed of the weight initialisation (the global torch RNG is left untouched).

    Example:
        >>> model = SmallCNN(SmallCNN.Config(width=8), ["a", "b"])
        >>> features, logits = model(torch.rand(4, 3, 32, 32))
        >>> features.shape, logits.shape
        (torch.Size([4, 32]), torch.Size([4, 2]))
    """

    class Config(TrainingConfig):
        """Config of :class:`SmallCNN`: the training fields of
        :class:`~raygrid.extractors.training.TrainingConfig` plus the architecture.

        Attributes:
            training: ``standard``, ``adversarial`` or ``free_adversarial``
                (see :data:`~raygrid.extractors.training.TRAINING_STEPS`).
            width: Channels of the first block; features have ``4 * width`` dimensions.
        """

        name: Literal["smallcnn"] = "smallcnn"
        training: TrainingMode = "standard"
        width: int = Field(32, ge=4, le=512)

    def __init__(self, config: Config, class_names: Sequence[str], seed: int = 0) -> None:
        width = config.width
        super().__init__(class_names, feature_dim=4 * width)
        self.config = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.body = nn.Sequential(
                _conv_block(3, width),
                nn.MaxPool2d(2),
                _conv_block(width, 2 * width),
                nn.MaxPool2d(2),
                _conv_block(2 * width, 4 * width),
                nn.MaxPool2d(2),
                _conv_block(4 * width, 4 * width),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
            self.head = nn.Linear(4 * width, len(self.class_names))

    def encode(self, normalized: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled features ``(N, 4 * width)`` of normalised images."""
        return self.body(normalized)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)``."""
        return self.head(features)
