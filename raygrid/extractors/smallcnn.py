"""A small convolutional network for the synthetic catalogue's images.

It stands in for ResNet50 where ImageNet weights cannot be downloaded: trained
from scratch on the item categories in seconds to minutes on a CPU, it plays
the same two roles, feature extractor (the global-average-pool output, the
"pooled layer" the VAR study feeds to the recommenders) and category
classifier (what a targeted attack fools).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from raygrid.config.base import ComponentConfig
from raygrid.extractors.base import Extractor
from raygrid.extractors.training import TrainingMode, robust_eval_attack, train_extractor, training_step
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

    class Config(ComponentConfig):
        """Config of :class:`SmallCNN`.

        Attributes:
            training: Training mode, see :data:`~raygrid.extractors.training.TRAINING_STEPS`:
                ``standard`` (clean cross-entropy, the "traditional" extractor),
                ``adversarial`` (PGD adversarial training, Madry et al. 2018) or
                ``free_adversarial`` (free adversarial training, Shafahi et al. 2019).
            width: Channels of the first block; features have ``4 * width`` dimensions.
            epochs: Passes over the training images; free adversarial training
                makes ``ceil(epochs / replays)`` passes of ``replays`` updates per
                minibatch, i.e. about the same number of updates.
            batch_size: Images per gradient step.
            lr: Adam learning rate.
            weight_decay: L2 penalty.
            val_fraction: Share of each category held out to measure accuracy.
            adv_eps: Linf budget ``eps`` in 0-255 pixel units (4 means 4/255, the
                budget of the VAR study's robust ResNet50s), used by both
                adversarial modes and by the PGD of ``val_robust_accuracy`` (also
                measured for ``standard``, so the modes compare).
            adv_steps: PGD iterations per minibatch in ``adversarial`` training.
                Kept small for CPU budgets; Madry et al. used 7 on CIFAR-10.
            adv_step_size: PGD step in 0-255 pixel units in ``adversarial``
                training; ``None`` uses ``2.5 * adv_eps / adv_steps``.
            replays: ``m``, replays of each minibatch in ``free_adversarial``
                training (the VAR study's free model used 4).

        The ``adv_*`` and ``replays`` fields are ignored by the modes that do not
        use them (all but ``adv_eps`` for ``standard``); they are still part of
        the config, hence of its hash.
        """

        name: Literal["smallcnn"] = "smallcnn"
        training: TrainingMode = "standard"
        width: int = Field(32, ge=4, le=512)
        epochs: int = Field(8, ge=1)
        batch_size: int = Field(128, ge=1)
        lr: float = Field(1e-3, gt=0)
        weight_decay: float = Field(5e-4, ge=0)
        val_fraction: float = Field(0.2, ge=0, lt=1)
        adv_eps: float = Field(4.0, gt=0, le=255)  # 0-255 pixel units
        adv_steps: int = Field(3, ge=1)
        adv_step_size: float | None = Field(None, gt=0, le=255)  # 0-255 units, default 2.5 * eps / steps
        replays: int = Field(4, ge=1)

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

    def fit(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        seed: int = 0,
        device: str = "cpu",
        progress: Callable[[int, dict[str, float]], None] | None = None,
    ) -> dict[str, float]:
        """Train in place with the config's hyper-parameters and training mode.

        Args:
            images: ``uint8`` ``(N, H, W, 3)`` item images.
            labels: ``(N,)`` category of each image, ``-1`` for unknown (ignored).
            seed: Seed of the validation split, shuffling, augmentation, the PGD
                random starts of adversarial training and of the robust accuracy.
            device: Torch device to train on.
            progress: Per-pass callback, see :func:`~raygrid.extractors.training.train_extractor`.

        Returns:
            ``{"train_accuracy", "val_accuracy", "train_loss", "val_robust_accuracy",
            "val_robust_accuracy_eps8"}`` (the last only when ``adv_eps`` is not 8);
            the last is the validation accuracy under untargeted PGD at
            ``adv_eps`` (10 steps of ``adv_eps / 6``, random start), see
            :func:`~raygrid.extractors.training.robust_eval_attack`.
        """
        config = self.config
        step = training_step(
            config.training,
            eps=config.adv_eps,
            steps=config.adv_steps,
            step_size=config.adv_step_size,
            replays=config.replays,
            seed=seed,
        )
        return train_extractor(
            self,
            images,
            labels,
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            weight_decay=config.weight_decay,
            val_fraction=config.val_fraction,
            seed=seed,
            device=device,
            progress=progress,
            step=step,
            robust_attack=robust_eval_attack(config.adv_eps),
            # The VAR study's strongest attacks use eps 8: report robustness there too.
            extra_robust_eps=() if config.adv_eps == 8 else (8.0,),
        )
