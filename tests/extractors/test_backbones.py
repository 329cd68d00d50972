"""Tests of the torchvision extractors (ResNet50, AlexNet) and of checkpoint loading.

Offline by design: networks are randomly initialised at small image sizes, and
every checkpoint is a state dict this file saves itself, in the formats of
torchvision, the MadryLab robustness library and the free adversarial training release.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Self

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from raygrid.errors import ConfigError, DataError
from raygrid.extractors.base import IMAGENET_MEAN, IMAGENET_STD
from raygrid.extractors.checkpoints import load_into, load_state_dict_file, normalize_state_dict
from raygrid.extractors.torchvision_backbones import (
    AlexNetExtractor,
    ResNet50Extractor,
    TorchvisionExtractor,
    imagenet_cache_path,
    imagenet_weights_file,
)
from raygrid.registry import EXTRACTORS

CLASSES = tuple(f"class {k}" for k in range(12))
IMAGENET = tuple(ResNet50Extractor.imagenet_weights().meta["categories"])
SIDE = {ResNet50Extractor: 32, AlexNetExtractor: 64}


def _images(cls: type[TorchvisionExtractor], n: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, SIDE[cls], SIDE[cls], generator=generator)


def _random(cls: type[TorchvisionExtractor], names: tuple[str, ...] = CLASSES, seed: int = 0) -> TorchvisionExtractor:
    return cls(cls.Config(weights="random"), names, seed=seed).eval()


def _from_file(path: Path, cls: type[TorchvisionExtractor] = ResNet50Extractor) -> TorchvisionExtractor:
    return cls(cls.Config(weights="file", weights_path=str(path)), CLASSES).eval()


@torch.no_grad()
def _assert_same_outputs(a: TorchvisionExtractor, b: TorchvisionExtractor, images: torch.Tensor) -> None:
    for got, want in zip(a(images), b(images)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)



@pytest.fixture(scope="module")
def models() -> dict[type[TorchvisionExtractor], TorchvisionExtractor]:
    """Each network with random weights (seed 0) and a head over the 12 catalogue classes."""
    return {cls: _random(cls) for cls in (ResNet50Extractor, AlexNetExtractor)}


@pytest.fixture(scope="module")
def resnet(models: dict[type[TorchvisionExtractor], TorchvisionExtractor]) -> TorchvisionExtractor:
    return models[ResNet50Extractor]


@pytest.fixture(scope="module")
def resnet_imagenet_head() -> TorchvisionExtractor:
    """ResNet50, random weights, a 1000-class head like the ImageNet and robust checkpoints."""
    return _random(ResNet50Extractor, IMAGENET, seed=1)


# --------------------------------------------------------------------------- checkpoint formats


def plain(state: dict[str, torch.Tensor]) -> Any:
    """torch.save(model.state_dict()) as torchvision's files hold it."""
    return state


def madrylab(state: dict[str, torch.Tensor]) -> Any:
    """The robustness library: model + normaliser + attacker's copy under 'module.', in a training checkpoint."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    model = {f"module.model.{k}": v for k, v in state.items()}
    model |= {f"module.attacker.model.{k}": v for k, v in state.items()}
    model |= {"module.normalizer.new_mean": mean, "module.normalizer.new_std": std}
    model |= {"module.attacker.normalize.new_mean": mean, "module.attacker.normalize.new_std": std}
    optimizer = {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]}
    # Training scripts often keep numpy scalars next to the weights; these load without unpickling code.
    return {"model": model, "optimizer": optimizer, "schedule": None, "epoch": 90, "best_prec1": np.float64(0.57)}


def madrylab_without_data_parallel(state: dict[str, torch.Tensor]) -> Any:
    """The robustness library saved without nn.DataParallel, under 'state_dict'."""
    model = {f"model.{k}": v for k, v in state.items()} | {f"attacker.model.{k}": v for k, v in state.items()}
    model |= {"normalizer.new_mean": torch.tensor(IMAGENET_MEAN).view(3, 1, 1)}
    return {"state_dict": model, "epoch": 3}


def free_adversarial(state: dict[str, torch.Tensor]) -> Any:
    """Shafahi et al.'s release: nn.DataParallel keys under 'state_dict' in a training checkpoint."""
    return {
        "epoch": 90,
        "arch": "resnet50",
        "state_dict": {f"module.{k}": v for k, v in state.items()},
        "best_prec1": torch.tensor(41.2),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
    }


# --------------------------------------------------------------------------- registry and config


def test_registered_and_configurable_from_a_trial_dict() -> None:
    from raygrid.config.schema import trial_model

    assert {"resnet50", "alexnet", "smallcnn"} <= set(EXTRACTORS.names())
    assert EXTRACTORS.get("resnet50") is ResNet50Extractor and EXTRACTORS.get("alexnet") is AlexNetExtractor
    config = trial_model().model_validate({"name": "t", "extractor": {"name": "resnet50", "weights": "random"}})
    assert isinstance(config.extractor, ResNet50Extractor.Config)
    assert (config.extractor.weights, config.extractor.training, config.extractor.weights_path) == (
        "random",
        "pretrained",
        None,
    )
    path_config = {"name": "alexnet", "weights": "file", "weights_path": "/x/alexnet.pth"}
    assert (
        trial_model().model_validate({"name": "t", "extractor": path_config}).extractor.weights_path == "/x/alexnet.pth"
    )
    assert ResNet50Extractor.Config().weights == "imagenet"


@pytest.mark.parametrize(
    "fields",
    [
        {"weights": "file"},  # no path
        {"weights": "random", "weights_path": "/x.pt"},  # a path that would be ignored
        {"weights": "imagenet_v2"},
        {"training": "robust"},
        {"training": "standard", "epochs": 0},
        {"layer": "fc6"},
    ],
)
def test_config_is_strict(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ResNet50Extractor.Config(**fields)


# --------------------------------------------------------------------------- the networks


@pytest.mark.parametrize("cls", [ResNet50Extractor, AlexNetExtractor])
def test_output_shapes_and_feature_layer(
    cls: type[TorchvisionExtractor], models: dict[type[TorchvisionExtractor], TorchvisionExtractor]
) -> None:
    model = models[cls]
    images = _images(cls)
    # The features are the named layer's output: ResNet50's global average pool, AlexNet's fc7 after ReLU.
    layer = model.net.avgpool if cls is ResNet50Extractor else model.net.classifier[5]
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _module, _inputs, output: seen.append(output))
    with torch.no_grad():
        features, logits = model(images)
    handle.remove()
    assert model.feature_dim == {ResNet50Extractor: 2048, AlexNetExtractor: 4096}[cls]
    assert features.shape == (2, model.feature_dim) and logits.shape == (2, len(CLASSES))
    assert model.class_names == CLASSES
    torch.testing.assert_close(features, seen[0].flatten(1), rtol=0, atol=0)
    if cls is AlexNetExtractor:
        assert float(features.min()) >= 0.0  # after the ReLU


@pytest.mark.parametrize("cls", [ResNet50Extractor, AlexNetExtractor])
def test_normalisation_inside_and_input_untouched(
    cls: type[TorchvisionExtractor], models: dict[type[TorchvisionExtractor], TorchvisionExtractor]
) -> None:
    model = models[cls]
    images = _images(cls)
    before = images.clone()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model.logits(images)
        # The bare torchvision network on normalised images gives the same logits.
        torch.testing.assert_close(logits, model.net((images - mean) / std))
    torch.testing.assert_close(images, before, rtol=0, atol=0)
    assert {"mean", "std"} <= set(model.state_dict())


def test_gradients_reach_the_pixels(resnet: TorchvisionExtractor) -> None:
    images = _images(ResNet50Extractor).requires_grad_(True)
    resnet.logits(images)[:, 3].sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    resnet.zero_grad(set_to_none=True)


def test_random_weights_are_seeded_and_leave_global_rng_alone(resnet: TorchvisionExtractor) -> None:
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    again, other = _random(ResNet50Extractor, seed=0), _random(ResNet50Extractor, seed=1)
    assert torch.equal(torch.rand(1), expected)
    for name, tensor in resnet.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    assert not torch.equal(resnet.net.fc.weight, other.net.fc.weight)


def test_alexnet_rejects_images_too_small(models: dict[type[TorchvisionExtractor], TorchvisionExtractor]) -> None:
    with pytest.raises(ConfigError, match="at least 63 px"):
        models[AlexNetExtractor](torch.rand(1, 3, 32, 32))


def test_fit_trains_nothing_and_reports_no_metrics(resnet: TorchvisionExtractor) -> None:
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    images = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    assert resnet.fit(images, np.zeros(4, dtype=np.int64), seed=0, device="cpu") == {}
    for name, tensor in resnet.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_rebuilt_from_a_stage_product(resnet: TorchvisionExtractor) -> None:
    from raygrid.studies.var import TrainedExtractor

    state = {k: v.detach().clone() for k, v in resnet.state_dict().items()}
    product = TrainedExtractor(resnet.config.model_dump(mode="json"), resnet.class_names, state)
    _assert_same_outputs(product.build(), resnet, _images(ResNet50Extractor))


def test_architecture_only_then_state_dict(resnet_imagenet_head: TorchvisionExtractor) -> None:
    """``load_weights=False`` reads no file and no network: for a state dict loaded right after."""
    config = ResNet50Extractor.Config()  # imagenet weights: offline, building with them would fail
    model = ResNet50Extractor(config, IMAGENET, load_weights=False)
    model.load_state_dict(resnet_imagenet_head.state_dict())
    assert model.class_names == IMAGENET
    _assert_same_outputs(model.eval(), resnet_imagenet_head, _images(ResNet50Extractor))


# --------------------------------------------------------------------------- weights: file


@pytest.mark.parametrize("fmt", [plain, madrylab, madrylab_without_data_parallel, free_adversarial])
def test_checkpoint_formats_load_to_identical_outputs(
    fmt: Callable[[dict[str, torch.Tensor]], Any], resnet: TorchvisionExtractor, tmp_path: Path
) -> None:
    path = tmp_path / f"{fmt.__name__}.pt"
    torch.save(fmt(resnet.net.state_dict()), path)
    loaded = _from_file(path)
    assert loaded.class_names == CLASSES  # the head has one output per catalogue class
    _assert_same_outputs(loaded, resnet, _images(ResNet50Extractor, n=3))


def test_imagenet_head_in_a_file_gives_imagenet_classes(
    resnet_imagenet_head: TorchvisionExtractor, tmp_path: Path
) -> None:
    path = tmp_path / "robust.pt"
    torch.save(madrylab(resnet_imagenet_head.net.state_dict()), path)
    loaded = _from_file(path)  # caller passes the 12 catalogue classes
    assert loaded.class_names == IMAGENET and len(IMAGENET) == 1000
    _assert_same_outputs(loaded, resnet_imagenet_head, _images(ResNet50Extractor))


def test_alexnet_from_a_plain_file(
    models: dict[type[TorchvisionExtractor], TorchvisionExtractor], tmp_path: Path
) -> None:
    original = models[AlexNetExtractor]
    path = tmp_path / "alexnet.pth"
    torch.save(original.net.state_dict(), path)
    _assert_same_outputs(_from_file(path, AlexNetExtractor), original, _images(AlexNetExtractor))


def test_head_fitting_neither_catalogue_nor_imagenet(tmp_path: Path) -> None:
    path = tmp_path / "five.pt"
    torch.save({"fc.weight": torch.zeros(5, 2048), "fc.bias": torch.zeros(5)}, path)
    with pytest.raises(DataError, match=r"head of 5 classes.*12 categories.*ImageNet 1000") as info:
        _from_file(path)
    assert str(path) in str(info.value)


def _corrupt_files(tmp_path: Path) -> dict[str, Path]:
    valid = tmp_path / "valid.pt"
    torch.save(nn.Linear(64, 64).state_dict(), valid)
    data = valid.read_bytes()
    files = {"truncated": data[: len(data) // 2], "garbage": b"not a checkpoint at all", "empty": b""}
    for name, content in files.items():
        (tmp_path / f"{name}.pt").write_bytes(content)
    return {name: tmp_path / f"{name}.pt" for name in files}


def test_missing_and_corrupt_files_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "rn50.pt"
    with pytest.raises(DataError, match="does not exist") as info:
        _from_file(missing)
    assert str(missing) in str(info.value)
    for name, path in _corrupt_files(tmp_path).items():
        with pytest.raises(DataError, match="not a readable torch checkpoint") as info:
            load_state_dict_file(path)
        message = str(info.value)
        assert str(path) in message and "\n" not in message, name
    with pytest.raises(DataError, match="not a file"):
        load_state_dict_file(tmp_path)


@pytest.mark.parametrize(
    "content", [nn.Linear(2, 2), {"state_dict": nn.Linear(2, 2).state_dict(), "args": argparse.Namespace(lr=0.1)}]
)
def test_pickled_objects_are_refused_with_the_fix(content: Any, tmp_path: Path) -> None:
    path = tmp_path / "objects.pt"
    torch.save(content, path)
    with pytest.raises(DataError, match=r"weights_only=True.*re-save only the weights") as info:
        load_state_dict_file(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert "torch.nn.modules.linear.Linear" in message or "argparse.Namespace" in message


def test_a_file_without_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "arch": "resnet50"}, path)
    with pytest.raises(DataError, match=r"holds a dict with keys epoch, arch, not a state dict"):
        load_state_dict_file(path)


def test_mismatch_lists_missing_and_unexpected_keys(resnet: TorchvisionExtractor, tmp_path: Path) -> None:
    state = {f"backbone.{k}": v for k, v in resnet.net.state_dict().items()}  # an unknown wrapper prefix
    path = tmp_path / "wrapped.pt"
    torch.save(state, path)
    with pytest.raises(DataError) as info:
        _from_file(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "missing keys (320): conv1.weight, bn1.weight" in message
    assert "unexpected keys (320): backbone.conv1.weight" in message
    assert "more)" in message and "MadryLab robustness" in message

    model = nn.Sequential(nn.Linear(3, 4))
    with pytest.raises(DataError, match=r"shape mismatches.*0\.weight \(5, 3\) vs \(4, 3\)"):
        load_into(model, {"0.weight": torch.zeros(5, 3), "0.bias": torch.zeros(4)}, what="the test weights")
    with pytest.raises(
        DataError, match=r"^the test weights do not fit the network: missing keys \(1\): 0\.bias; expected a"
    ):
        load_into(model, {"0.weight": torch.zeros(4, 3)}, what="the test weights")


def test_normalizer_warning_for_a_foreign_mean(caplog: pytest.LogCaptureFixture) -> None:
    cifar = {
        "module.model.w": torch.zeros(1),
        "module.normalizer.new_mean": torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1),
        "module.normalizer.new_std": torch.tensor([0.2023, 0.1994, 0.2010]).view(3, 1, 1),
    }
    with caplog.at_level(logging.WARNING, logger="raygrid.extractors.checkpoints"):
        state, fmt = normalize_state_dict(cifar)
    assert list(state) == ["w"] and "module.model." in fmt
    assert "own input normaliser" in caplog.text


def test_plain_keys_are_left_alone() -> None:
    # A torchvision state dict starts with no wrapper prefix, so nothing is stripped or dropped.
    state = {"conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(1)}
    assert normalize_state_dict(state) == (state, "plain")


# --------------------------------------------------------------------------- weights: imagenet


def _offline(monkeypatch: pytest.MonkeyPatch, torch_home: Path) -> list[str]:
    """Point torchvision's cache to ``torch_home`` and make every download fail; returns the URLs tried."""
    tried: list[str] = []

    def no_network(request: urllib.request.Request, *args: Any, **kwargs: Any) -> Any:
        tried.append(request.full_url)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return tried


@pytest.mark.parametrize("cls", [ResNet50Extractor, AlexNetExtractor])
def test_imagenet_offline_names_the_file_to_place(
    cls: type[TorchvisionExtractor], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tried = _offline(monkeypatch, tmp_path / "torch")
    url = cls.imagenet_weights().url
    expected = tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    assert imagenet_cache_path(cls.imagenet_weights()) == expected
    with pytest.raises(DataError) as info:
        cls(cls.Config(weights="imagenet"), CLASSES)
    message = str(info.value)
    assert f"download {url} and place it at {expected}" in message
    assert "weights: file" in message and "weights_path" in message and "\n" not in message
    assert tried == [url]
    assert not expected.exists() and not list(expected.parent.glob("*.partial"))


def test_imagenet_from_torchvision_cache(
    resnet_imagenet_head: TorchvisionExtractor, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tried = _offline(monkeypatch, tmp_path / "torch")
    cached = imagenet_cache_path(ResNet50Extractor.imagenet_weights())
    cached.parent.mkdir(parents=True)
    torch.save(resnet_imagenet_head.net.state_dict(), cached)
    model = ResNet50Extractor(ResNet50Extractor.Config(), CLASSES).eval()  # caller's classes are not used
    assert tried == [] and model.class_names == IMAGENET
    assert "IMAGENET1K_V1" in model.weights_source
    _assert_same_outputs(model, resnet_imagenet_head, _images(ResNet50Extractor))


class _Response(io.BytesIO):
    def __enter__(self) -> Self:
        return self


def test_download_checks_the_hash_and_writes_atomically(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    content = b"pretend weights"
    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout: _Response(content))
    digest = hashlib.sha256(content).hexdigest()

    good = SimpleNamespace(url=f"https://example.invalid/models/tiny-{digest[:8]}.pth")
    path = imagenet_weights_file(good)
    assert path == tmp_path / "torch" / "hub" / "checkpoints" / f"tiny-{digest[:8]}.pth"
    assert path.read_bytes() == content

    bad = SimpleNamespace(url="https://example.invalid/models/tiny-00000000.pth")
    with pytest.raises(DataError, match="corrupt"):
        imagenet_weights_file(bad)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no partial or corrupt file left


# --------------------------------------------------------------------------- fine-tuning


def test_fine_tuning_keeps_the_backbone_and_gives_a_new_head_over_the_catalogue(
    tmp_path: Path, resnet_imagenet_head: TorchvisionExtractor
) -> None:
    path = tmp_path / "rn50.pth"
    torch.save(resnet_imagenet_head.net.state_dict(), path)
    config = ResNet50Extractor.Config(weights="file", weights_path=str(path), training="adversarial")
    model = ResNet50Extractor(config, CLASSES, seed=3)
    assert model.class_names == CLASSES and model.net.fc.out_features == len(CLASSES)
    mine, theirs = model.net.state_dict(), resnet_imagenet_head.net.state_dict()
    for key, value in theirs.items():
        if key not in ResNet50Extractor.head_keys():
            torch.testing.assert_close(mine[key], value, rtol=0, atol=0)
    # The new head is seeded: the same seed gives the same head.
    again = ResNet50Extractor(config, CLASSES, seed=3)
    torch.testing.assert_close(again.net.fc.weight, model.net.fc.weight, rtol=0, atol=0)


def test_a_pretrained_backbone_trains_nothing_and_reports_nothing(resnet: TorchvisionExtractor, tiny: Any) -> None:
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    assert resnet.fit(tiny.images, tiny.item_labels) == {}
    for key, value in resnet.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_fine_tuning_trains_in_the_configured_mode_and_reports_clean_and_robust_accuracy(tiny: Any) -> None:
    config = ResNet50Extractor.Config(weights="random", training="free_adversarial", epochs=2, replays=2, lr=1e-3)
    model = ResNet50Extractor(config, tiny.category_names, seed=0)
    before = model.net.conv1.weight.detach().clone()
    metrics = model.fit(tiny.images[:96], tiny.item_labels[:96], seed=0)
    assert {"val_accuracy", "val_robust_accuracy", "val_robust_accuracy_eps8", "train_loss"} <= set(metrics)
    assert not torch.equal(model.net.conv1.weight, before)


def test_fine_tuning_without_item_categories_says_what_to_do(tiny: Any) -> None:
    model = ResNet50Extractor(ResNet50Extractor.Config(weights="random", training="standard"), CLASSES)
    with pytest.raises(ConfigError, match="needs item categories.*training: pretrained"):
        model.fit(tiny.images[:8], np.full(8, -1))
