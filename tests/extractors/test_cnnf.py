"""Tests of CNN-F, DVBPR's image network, as a module and as a registered extractor."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from raygrid.data.synthetic import generate
from raygrid.extractors.cnnf import CNNF, CNNFExtractor
from raygrid.registry import EXTRACTORS


def _images(n: int, side: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def test_at_224_px_the_maps_are_those_of_cnnf_and_the_output_is_the_embedding() -> None:
    net = CNNF(100, fc_dim=64).eval()
    seen: list[tuple[int, ...]] = []
    pools = [m for m in net.body if isinstance(m, torch.nn.MaxPool2d)]
    handles = [p.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape[-2:]))) for p in pools]
    with torch.no_grad():
        out = net(_images(2, 224))
    for handle in handles:
        handle.remove()
    assert seen == [(27, 27), (13, 13), (6, 6)]  # Caffe's ceil-mode pooling, as in CNN-F
    assert out.shape == (2, 100)
    assert net.fc7(_images(2, 224)).shape == (2, 64)


def test_dropout_is_off_at_evaluation_and_on_in_training() -> None:
    net = CNNF(10, fc_dim=32, dropout=0.5)
    images = _images(4, 64)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(images), net(images), rtol=0, atol=0)
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(images), net(images))


def test_initialisation_is_seeded_and_leaves_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a, b, c = CNNF(5, fc_dim=16, seed=1), CNNF(5, fc_dim=16, seed=1), CNNF(5, fc_dim=16, seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.head.weight, b.head.weight) and not torch.equal(a.head.weight, c.head.weight)


def test_too_small_images_and_bad_sizes_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="at least 39 px"):
        CNNF(5, fc_dim=16)(_images(1, 38))
    assert CNNF(5, fc_dim=16).eval()(_images(1, 39)).shape == (1, 5)  # the smallest side that works
    with pytest.raises(ValueError, match="out_dim"):
        CNNF(0)
    with pytest.raises(ValidationError):
        CNNFExtractor.Config(fc_dim=4)


def test_the_extractor_gives_fc7_features_and_trains_on_the_catalogue() -> None:
    assert EXTRACTORS.get("cnnf") is CNNFExtractor
    data = generate("tiny", seed=0, image_size=48)
    config = CNNFExtractor.Config(fc_dim=64, epochs=3, lr=1e-3, batch_size=8)
    model = CNNFExtractor(config, data.category_names, seed=0)
    features, logits = model.eval()(_images(3, 48))
    assert features.shape == (3, 64) and logits.shape == (3, len(data.category_names))
    losses: list[float] = []
    metrics = model.fit(data.images, data.item_labels, seed=0, progress=lambda _, m: losses.append(m["train_loss"]))
    assert {"val_accuracy", "val_robust_accuracy", "train_loss"} <= set(metrics)
    # Trained from scratch (no batch norm), CNN-F learns slowly, but it learns: the loss falls below chance's.
    assert len(losses) == 3 and losses[-1] < min(losses[0], math.log(len(data.category_names)))


def test_training_none_keeps_the_seeded_weights_and_reports_no_accuracy() -> None:
    data = generate("tiny", seed=0, image_size=48)
    config = CNNFExtractor.Config(fc_dim=64, training="none")
    model = CNNFExtractor(config, data.category_names, seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.fit(data.images, data.item_labels, seed=0) == {}  # no made-up accuracy reaches MLflow
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    same = CNNFExtractor(config, data.category_names, seed=3).eval()
    torch.testing.assert_close(model.eval().features(_images(2, 48)), same.features(_images(2, 48)), rtol=0, atol=0)
    with pytest.raises(ValidationError):
        CNNFExtractor.Config(training="untrained")


def test_the_extractor_upsamples_images_below_cnnf_minimum_and_keeps_gradients() -> None:
    model = CNNFExtractor(CNNFExtractor.Config(fc_dim=32, training="none"), ["a", "b"], seed=0).eval()
    small = _images(2, 32).requires_grad_(True)
    features = model.features(small)
    assert features.shape == (2, 32)
    features.sum().backward()
    assert small.grad is not None and small.grad.abs().sum() > 0  # attacks optimise the 32 px pixels
    upsampled = torch.nn.functional.interpolate(small.detach(), size=(39, 39), mode="bilinear", align_corners=False)
    torch.testing.assert_close(model.features(small.detach()), model.features(upsampled))
