"""torchvision's ResNet50 and AlexNet as image feature extractors.

* ``resnet50``: the VAR study's extractor. Features are the 2048-d global
  average pool output; logits come from the ``fc`` head.
* ``alexnet``: the AIP study's AlexRank extractor. Features are fc7, the 4096-d
  output of the second fully connected layer *after* its ReLU (what the next
  layer sees); logits come from the last layer (fc8).

Both take ``[0, 1]`` images and normalise with ImageNet's mean/std inside (see
:class:`~raygrid.extractors.base.Extractor`), so attacks work in pixel space.

Weights (``weights`` in the config):

* ``imagenet``: torchvision's ImageNet weights, ``IMAGENET1K_V1`` for both
  networks. For ResNet50 V1 (76.1 % top-1) rather than V2 (80.9 %) because V1
  is what ``pretrained=True`` gave, which the VAR authors used, and it is the
  recipe the robust ResNet50 checkpoints are compared against. The file is read
  from torchvision's cache (``$TORCH_HOME/hub/checkpoints/``) or downloaded
  there; offline without it, construction fails with a one-line
  :class:`~raygrid.errors.DataError` naming the file to place and where.
* ``file``: a local checkpoint at ``weights_path``: a plain torchvision state
  dict, a MadryLab ``robustness`` checkpoint or a free adversarial training
  checkpoint, detected automatically (:mod:`raygrid.extractors.checkpoints`);
  always read with ``weights_only=True``.
* ``random``: a seeded random initialisation, for tests and timing benchmarks.

Classes: with ``imagenet`` weights the head classifies into ImageNet's 1000
categories and the extractor's ``class_names`` are ImageNet's (from the
weights' metadata), whatever ``class_names`` the caller passes: the VAR study
attacks towards ImageNet categories (e.g. sandal -> running shoe). With
``random`` weights the head has one output per caller's class name. With
``file`` weights the head's size in the file decides: the caller's class names
if it has that many outputs, else ImageNet's if it has 1000.

Training (``training`` in the config): ``pretrained`` (the default) uses the
weights as they are; :meth:`fit` trains nothing and reports no metrics.
``standard``, ``adversarial`` and ``free_adversarial`` fine-tune the whole
network on the catalogue's item categories, starting from the weights (or from
scratch with ``random``), with the same loop, modes and metrics as every
trainable extractor (:func:`~raygrid.extractors.training.fit_with_config`):
the head is replaced by one with an output per category, and the extractor's
``class_names`` are the catalogue's. This needs a dataset with item categories.

torchvision is imported only when a network is built, so reading configs stays fast.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from raygrid.errors import ConfigError, DataError
from raygrid.extractors.base import Extractor
from raygrid.extractors.checkpoints import load_into, load_state_dict_file
from raygrid.extractors.training import TrainingConfig
from raygrid.registry import EXTRACTORS

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S: float = 20.0
"""Seconds a download may wait on the network (per connect or read), so offline machines fail fast."""

_HASH_IN_NAME = r"-([a-f0-9]+)\."
"""torchvision file names carry a prefix of the file's SHA-256 (``resnet50-0676ba61.pth``), as torch.hub checks."""


class BackboneConfig(TrainingConfig):
    """Config fields shared by the torchvision extractors (and the training fields of
    :class:`~raygrid.extractors.training.TrainingConfig`, used when ``training`` is not ``pretrained``).

    Attributes:
        weights: ``imagenet`` (torchvision's ImageNet weights, cached or
            downloaded), ``file`` (a local checkpoint at ``weights_path``) or
            ``random`` (seeded random initialisation, for tests and benchmarks).
        weights_path: Local checkpoint file, only with ``weights: file``: plain
            torchvision, MadryLab robustness or free adversarial training format
            (auto-detected). Use an absolute path that every machine running
            trials can read.
        training: ``pretrained``: the weights are used as they are (ImageNet's
            classes); ``standard``, ``adversarial`` or ``free_adversarial``:
            fine-tune on the catalogue's categories (see the module docstring).
            The fine-tuning defaults (5 epochs, batch 64, lr 1e-4) suit a
            pretrained start; raise ``epochs`` and ``lr`` from ``random``.
    """

    weights: Literal["imagenet", "random", "file"] = "imagenet"
    weights_path: str | None = None
    training: Literal["pretrained", "standard", "adversarial", "free_adversarial"] = "pretrained"
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-4, gt=0)

    @model_validator(mode="after")
    def _path_only_with_file(self) -> BackboneConfig:
        if self.weights == "file" and not self.weights_path:
            raise ValueError("weights: file needs weights_path, the path of a local checkpoint file")
        if self.weights != "file" and self.weights_path is not None:
            raise ValueError(
                f"weights_path is only read with weights: file (got weights: {self.weights}); "
                "remove weights_path or set weights: file"
            )
        return self


class TorchvisionExtractor(Extractor):
    """A torchvision classification network as an extractor; subclasses pick the network and its feature layer.

    Args:
        config: Weights and training mode.
        class_names: Category names of the caller's catalogue. Used for the head
            with ``random`` weights, when fine-tuning (``training`` not
            ``pretrained``), and with ``file`` weights whose head has that many
            outputs; otherwise ``imagenet`` weights classify into ImageNet's
            1000 categories and ``class_names`` of the extractor are ImageNet's.
        seed: Seed of the random initialisation, of the new head when
            fine-tuning (the global torch RNG is left untouched).
        load_weights: ``False`` builds the architecture only, with a head of
            ``len(class_names)`` outputs and random weights, reading no file and
            no network: for a state dict loaded right after (e.g. rebuilding a
            stage product). ``class_names`` must then be the extractor's own
            (ImageNet's for ``imagenet`` weights).

    Attributes:
        net: The torchvision network (its ``state_dict`` is a plain torchvision one).
        weights_source: Where the weights came from, for logs and run parameters.

    Raises:
        DataError: ``imagenet`` weights neither cached nor downloadable, or a
            ``weights_path`` that is missing, corrupt or does not fit the network.
    """

    FEATURE_DIM: ClassVar[int]
    HEAD_KEY: ClassVar[str]
    """State-dict key of the last layer's weight, whose rows count the classes."""

    config: BackboneConfig

    def __init__(
        self, config: BackboneConfig, class_names: Sequence[str], seed: int = 0, *, load_weights: bool = True
    ) -> None:
        if load_weights:
            names, state, source = self._resolve_weights(config, class_names)
        else:
            names, state, source = tuple(class_names), None, "architecture only (weights to be loaded)"
        super().__init__(names, feature_dim=self.FEATURE_DIM)
        self.config = config
        self.weights_source = source
        if state is None or self.fine_tunes(config):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.net = self.build_network(len(names))
            if state is not None:
                # Fine-tuning: the file's weights everywhere but the head, which gets one
                # (seeded random) output per category of the catalogue.
                head = {k: v for k, v in self.net.state_dict().items() if k in self.head_keys()}
                load_into(self.net, {**state, **head}, what=f"the weights from {source}")
        else:
            # Weights about to be overwritten need no random initialisation (seconds for AlexNet's
            # 61M parameters): allocate uninitialised memory, then the strict load fills every
            # parameter and buffer (these torchvision networks have no non-persistent buffers).
            with torch.device("meta"):
                network = self.build_network(len(names))
            self.net = network.to_empty(device="cpu")
            load_into(self.net, state, what=f"the weights from {source}")

    # ----------------------------------------------------------------- subclass hooks

    @staticmethod
    def build_network(num_classes: int) -> nn.Module:
        """The torchvision network, randomly initialised, with ``num_classes`` outputs."""
        raise NotImplementedError

    @staticmethod
    def imagenet_weights() -> Any:
        """The torchvision weights enum member used for ``weights: imagenet``."""
        raise NotImplementedError

    @classmethod
    def head_keys(cls) -> tuple[str, str]:
        """State-dict keys of the last layer (weight and bias)."""
        return cls.HEAD_KEY, cls.HEAD_KEY.removesuffix("weight") + "bias"

    @staticmethod
    def fine_tunes(config: BackboneConfig) -> bool:
        """Whether ``config`` trains the network on the catalogue (any ``training`` but ``pretrained``)."""
        return config.training != "pretrained"

    # ----------------------------------------------------------------- weights

    @classmethod
    def _resolve_weights(
        cls, config: BackboneConfig, class_names: Sequence[str]
    ) -> tuple[tuple[str, ...], dict[str, torch.Tensor] | None, str]:
        """``(class names, state dict or None, description)`` for the config's weights."""
        if config.weights == "random":
            return tuple(class_names), None, f"random initialisation ({len(class_names)} classes)"
        imagenet = cls.imagenet_weights()
        categories = tuple(imagenet.meta["categories"])
        if config.weights == "imagenet":
            path = imagenet_weights_file(imagenet)
            state = load_state_dict_file(path)
            if cls.fine_tunes(config):  # a new head for the catalogue's categories
                return tuple(class_names), _without(state, cls.head_keys()), f"torchvision {imagenet} ({path})"
            return categories, state, f"torchvision {imagenet} ({path})"
        path = Path(str(config.weights_path)).expanduser()
        state = load_state_dict_file(path)
        if cls.fine_tunes(config):
            return tuple(class_names), _without(state, cls.head_keys()), f"file {str(path)!r}"
        head = state.get(cls.HEAD_KEY)
        outputs = int(head.shape[0]) if isinstance(head, torch.Tensor) and head.ndim == 2 else len(categories)
        if outputs == len(class_names):
            names = tuple(class_names)
        elif outputs == len(categories):
            names = categories
        else:
            raise DataError(
                f"weights file {str(path)!r} has a head of {outputs} classes, but the catalogue has "
                f"{len(class_names)} categories and ImageNet {len(categories)}; give a checkpoint with either head"
            )
        return names, state, f"file {str(path)!r}"



def _without(state: dict[str, torch.Tensor], keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """``state`` without ``keys``."""
    return {k: v for k, v in state.items() if k not in keys}


def imagenet_weights_file(weights: Any, *, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """The local file of torchvision ``weights``: from the cache, else downloaded into it.

    The cache is torchvision's own, ``torch.hub.get_dir()/checkpoints/<file name
    of the weights' URL>`` (``$TORCH_HOME/hub/checkpoints/``, by default
    ``~/.cache/torch/hub/checkpoints/``), so a file torchvision downloaded is
    reused and vice versa. The download waits at most ``timeout_s`` per network
    operation and checks the SHA-256 prefix in the file name, as torch.hub does.

    Raises:
        DataError: Not cached and the download failed (offline); the message
            names the URL, the path to place the file at, and the ``file`` alternative.
    """
    url: str = weights.url
    path = imagenet_cache_path(weights)
    if path.is_file():
        return path
    try:
        _download(url, path, timeout_s=timeout_s)
    except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError and timeouts are OSErrors
        reason = " ".join(str(getattr(exc, "reason", None) or exc).split())[:160]
        raise DataError(
            f"the ImageNet weights {weights} are not in torchvision's cache and cannot be downloaded ({reason}); "
            f"download {url} and place it at {path} (set TORCH_HOME to use another cache), or set the "
            "extractor's weights: file and weights_path: <a local checkpoint>"
        ) from None
    return path


def imagenet_cache_path(weights: Any) -> Path:
    """Where torchvision keeps the file of ``weights``: ``torch.hub.get_dir()/checkpoints/<URL's file name>``."""
    filename = os.path.basename(urllib.parse.urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _download(url: str, path: Path, *, timeout_s: float) -> None:
    """Download ``url`` to ``path`` through a temporary file, checking the hash prefix in the name."""
    match = re.search(_HASH_IN_NAME, path.name)
    hash_prefix = match.group(1) if match else None
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    log.info("downloading %s to %s", url, path)
    request = urllib.request.Request(url, headers={"User-Agent": "raygrid"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response, open(partial, "wb") as out:
            sha256 = hashlib.sha256()
            while chunk := response.read(1 << 20):
                out.write(chunk)
                sha256.update(chunk)
        if hash_prefix and not sha256.hexdigest().startswith(hash_prefix):
            raise DataError(
                f"the download of {url} is corrupt (SHA-256 {sha256.hexdigest()[:12]}..., expected {hash_prefix}...); "
                f"try again, or download it yourself and place it at {path}"
            )
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the networks


@EXTRACTORS.register("resnet50")
class ResNet50Extractor(TorchvisionExtractor):
    """ResNet50 (He et al.): features are the 2048-d global average pool output, logits the ``fc`` head.

    See :class:`TorchvisionExtractor` for the arguments and the module docstring
    for the weights and class names. Works at any image side of at least 32 px;
    ImageNet weights expect about 224 px.

    Example:
        >>> model = ResNet50Extractor(ResNet50Extractor.Config(weights="random"), ["a", "b"]).eval()
        >>> features, logits = model(torch.rand(2, 3, 32, 32))
        >>> features.shape, logits.shape
        (torch.Size([2, 2048]), torch.Size([2, 2]))
    """

    class Config(BackboneConfig):
        """Config of :class:`ResNet50Extractor`; fields in :class:`BackboneConfig`."""

        name: Literal["resnet50"] = "resnet50"

    FEATURE_DIM: ClassVar[int] = 2048
    HEAD_KEY: ClassVar[str] = "fc.weight"

    @staticmethod
    def build_network(num_classes: int) -> nn.Module:
        """torchvision's ``resnet50`` with ``num_classes`` outputs, randomly initialised."""
        from torchvision.models import resnet50

        return resnet50(weights=None, num_classes=num_classes)

    @staticmethod
    def imagenet_weights() -> Any:
        """``ResNet50_Weights.IMAGENET1K_V1`` (what ``pretrained=True`` gave; see the module docstring)."""
        from torchvision.models import ResNet50_Weights

        return ResNet50_Weights.IMAGENET1K_V1

    def encode(self, normalized: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled ``layer4`` activations ``(N, 2048)``."""
        net = self.net
        x = net.maxpool(net.relu(net.bn1(net.conv1(normalized))))
        x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
        return torch.flatten(net.avgpool(x), 1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` of the ``fc`` head."""
        return self.net.fc(features)


@EXTRACTORS.register("alexnet")
class AlexNetExtractor(TorchvisionExtractor):
    """AlexNet (Krizhevsky et al., torchvision's variant): features are fc7 after its ReLU (4096-d), logits fc8.

    fc7 is ``classifier[4]``; the features are taken after ``classifier[5]``
    (its ReLU), which is what AlexRank compares. Dropout (before fc6 and fc7) is
    active only in train mode. Images need at least 63 px per side (the three
    max-pools); ImageNet weights expect about 224 px.

    See :class:`TorchvisionExtractor` for the arguments.
    """

    class Config(BackboneConfig):
        """Config of :class:`AlexNetExtractor`; fields in :class:`BackboneConfig`."""

        name: Literal["alexnet"] = "alexnet"

    FEATURE_DIM: ClassVar[int] = 4096
    HEAD_KEY: ClassVar[str] = "classifier.6.weight"
    MIN_SIDE: ClassVar[int] = 63

    @staticmethod
    def build_network(num_classes: int) -> nn.Module:
        """torchvision's ``alexnet`` with ``num_classes`` outputs, randomly initialised."""
        from torchvision.models import alexnet

        return alexnet(weights=None, num_classes=num_classes)

    @staticmethod
    def imagenet_weights() -> Any:
        """``AlexNet_Weights.IMAGENET1K_V1``, torchvision's only AlexNet weights."""
        from torchvision.models import AlexNet_Weights

        return AlexNet_Weights.IMAGENET1K_V1

    def encode(self, normalized: torch.Tensor) -> torch.Tensor:
        """fc7 activations after ReLU ``(N, 4096)``."""
        side = min(normalized.shape[-2:])
        if side < self.MIN_SIDE:
            raise ConfigError(
                f"alexnet needs images of at least {self.MIN_SIDE} px per side, got "
                f"{normalized.shape[-2]}x{normalized.shape[-1]}; use larger item images or another extractor"
            )
        net = self.net
        x = torch.flatten(net.avgpool(net.features(normalized)), 1)
        return net.classifier[:6](x)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` of fc8."""
        return self.net.classifier[6](features)
