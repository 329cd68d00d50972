"""Tests of the extractor interface, SmallCNN, its training and batch extraction."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from raygrid.data.dataset import Dataset
from raygrid.extractors.base import IMAGENET_MEAN, IMAGENET_STD, images_to_tensor, tensor_to_images
from raygrid.extractors.extract import default_batch_size, extract
from raygrid.extractors.smallcnn import SmallCNN
from raygrid.extractors.training import split_train_val, train_extractor
from raygrid.registry import EXTRACTORS

CLASSES = tuple(f"class {k}" for k in range(12))
FAST = {"width": 16, "epochs": 10, "batch_size": 32}




@pytest.fixture(scope="module")
def trained(tiny: Dataset) -> tuple[SmallCNN, dict[str, float]]:
    model = SmallCNN(SmallCNN.Config(**FAST), tiny.category_names, seed=0)
    metrics = model.fit(tiny.images, tiny.item_labels, seed=0)
    return model, metrics


def _model(width: int = 8, seed: int = 0) -> SmallCNN:
    return SmallCNN(SmallCNN.Config(width=width), CLASSES, seed=seed).eval()


def test_registered_with_strict_config() -> None:
    assert EXTRACTORS.get("smallcnn") is SmallCNN
    model = EXTRACTORS.build(SmallCNN.Config(width=4), class_names=CLASSES)
    assert isinstance(model, SmallCNN)
    with pytest.raises(ValidationError):
        SmallCNN.Config(training="magic")
    with pytest.raises(ValidationError):
        SmallCNN.Config(width=2)
    with pytest.raises(ValidationError):
        SmallCNN.Config(val_fraction=1.0)
    with pytest.raises(ValidationError):
        SmallCNN.Config(depth=3)


@pytest.mark.parametrize("side", [16, 32, 45])
def test_output_shapes(side: int) -> None:
    model = _model(width=8)
    images = torch.rand(5, 3, side, side)
    features, logits = model(images)
    assert model.feature_dim == 32 and model.class_names == CLASSES
    assert features.shape == (5, 32) and logits.shape == (5, 12)
    torch.testing.assert_close(model.features(images), features)
    torch.testing.assert_close(model.logits(images), logits)


def test_input_is_not_modified() -> None:
    model = _model()
    images = torch.rand(4, 3, 32, 32)
    before = images.clone()
    model(images)
    model.train()(images)
    torch.testing.assert_close(images, before, rtol=0, atol=0)


def test_normalisation_happens_inside() -> None:
    model = _model()
    images = torch.rand(3, 3, 32, 32)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(model.normalize(images), (images - mean) / std)
    torch.testing.assert_close(model.features(images), model.encode((images - mean) / std))
    assert {"mean", "std"} <= set(model.state_dict())
    # An image equal to the mean is the zero input of the network.
    torch.testing.assert_close(model.normalize(mean.expand(1, 3, 8, 8)), torch.zeros(1, 3, 8, 8))


def test_gradients_reach_the_pixels() -> None:
    model = _model()
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    model.logits(images)[:, 3].sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_rejects_channels_last_input() -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        _model()(torch.rand(2, 32, 32, 3))


def test_initialisation_is_seeded_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    first, second, other = _model(seed=1), _model(seed=1), _model(seed=2)
    assert torch.equal(torch.rand(1), expected)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name])
    assert not torch.equal(first.head.weight, other.head.weight)


def test_images_to_tensor_and_back() -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    images.setflags(write=False)
    tensor = images_to_tensor(images)
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 3, 5, 7)
    assert 0.0 <= float(tensor.min()) and float(tensor.max()) <= 1.0
    assert float(tensor[1, 2, 3, 4]) == pytest.approx(images[1, 3, 4, 2] / 255)
    np.testing.assert_array_equal(tensor_to_images(tensor), images)
    # Rounding, not truncation: 0.7 of a level up rounds to the next level.
    np.testing.assert_array_equal(tensor_to_images(tensor + 0.7 / 255), np.minimum(images.astype(int) + 1, 255))
    with pytest.raises(ValueError):
        images_to_tensor(images.astype(np.float32))


def test_extract_shapes_batches_and_untouched_input(tiny: Dataset) -> None:
    model = _model(width=8)
    model.train()
    images = tiny.images[:20].copy()
    images.setflags(write=False)
    before = images.copy()
    features, classes = extract(model, images, batch_size=256)
    assert features.dtype == np.float32 and features.shape == (20, 32)
    assert classes.dtype == np.int64 and classes.shape == (20,)
    assert ((classes >= 0) & (classes < 12)).all()
    np.testing.assert_array_equal(images, before)
    assert model.training  # mode restored
    small_batches, same_classes = extract(model, images, batch_size=7)
    np.testing.assert_allclose(small_batches, features, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(same_classes, classes)
    with torch.no_grad():
        direct = model.eval().features(images_to_tensor(images)).numpy()
    np.testing.assert_allclose(direct, features, rtol=1e-4, atol=1e-5)


def test_extract_reads_a_memory_mapped_store_in_batches_of_any_size(tiny: Dataset, tmp_path: Any) -> None:
    model = _model(width=8)
    path = tmp_path / "images.u8"
    store = np.memmap(path, dtype=np.uint8, mode="w+", shape=tiny.images[:30].shape)
    store[:] = tiny.images[:30]
    store.flush()
    mapped = np.memmap(path, dtype=np.uint8, mode="r", shape=tiny.images[:30].shape)
    features, classes = extract(model, mapped, batch_size=8)  # 4 batches, the last one short
    in_memory, same_classes = extract(model, tiny.images[:30])
    np.testing.assert_allclose(features, in_memory, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(classes, same_classes)
    empty_features, empty_classes = extract(model, tiny.images[:0])
    assert empty_features.shape == (0, 32) and empty_classes.shape == (0,)


def test_default_batches_hold_about_four_million_pixels() -> None:
    assert default_batch_size(224, 224) == 83
    assert default_batch_size(64, 64) == 256  # capped
    assert default_batch_size(2048, 2048) == 8  # floored


def test_mixed_precision_features_stay_float32_and_close(tiny: Dataset) -> None:
    model = _model(width=8)
    exact, _ = extract(model, tiny.images[:16], mixed_precision=False)
    mixed, _ = extract(model, tiny.images[:16], mixed_precision=True)  # bfloat16 autocast on the CPU
    assert mixed.dtype == np.float32
    np.testing.assert_allclose(mixed, exact, rtol=0.1, atol=0.05)


def test_split_is_stratified_and_ignores_unlabelled() -> None:
    labels = np.repeat(np.arange(4), 10)
    labels[:3] = -1
    train, val = split_train_val(labels, 0.2, seed=0)
    assert np.intersect1d(train, val).shape[0] == 0
    assert set(train.tolist()) | set(val.tolist()) == set(range(3, 40))
    assert np.bincount(labels[val], minlength=4).tolist() == [1, 2, 2, 2]
    again_train, again_val = split_train_val(labels, 0.2, seed=0)
    np.testing.assert_array_equal(again_val, val)
    assert split_train_val(labels, 0.0, seed=0)[1].shape == (0,)


def test_training_on_tiny_beats_chance(tiny: Dataset, trained: tuple[SmallCNN, dict[str, float]]) -> None:
    model, metrics = trained
    assert set(metrics) == {"train_accuracy", "val_accuracy", "train_loss", "val_robust_accuracy", "val_robust_accuracy_eps8"}
    assert metrics["val_accuracy"] > 0.5  # chance is 1/12
    assert metrics["train_accuracy"] > 0.5
    assert np.isfinite(metrics["train_loss"])
    assert not model.training
    _, classes = extract(model, tiny.images)
    assert (classes == tiny.item_labels).mean() > 0.5


def test_same_seed_same_weights(tiny: Dataset) -> None:
    images, labels = tiny.images[:96], tiny.item_labels[:96]
    runs = []
    for _ in range(2):
        model = SmallCNN(SmallCNN.Config(width=8, epochs=2, batch_size=16), tiny.category_names, seed=0)
        seen: list[int] = []
        metrics = model.fit(images, labels, seed=5, progress=lambda epoch, _: seen.append(epoch))
        assert seen == [0, 1]
        runs.append((model.state_dict(), metrics))
    (first, first_metrics), (second, second_metrics) = runs
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name
    assert first_metrics == second_metrics

    other = SmallCNN(SmallCNN.Config(width=8, epochs=2, batch_size=16), tiny.category_names, seed=0)
    other.fit(images, labels, seed=6)
    assert not torch.equal(other.head.weight, first["head.weight"])


def test_unlabelled_items_are_ignored(tiny: Dataset) -> None:
    labels = tiny.item_labels[:64].copy()
    labels[::2] = -1
    model = SmallCNN(SmallCNN.Config(width=4), tiny.category_names)
    metrics = train_extractor(
        model, tiny.images[:64], labels, epochs=1, batch_size=16, lr=1e-3, weight_decay=0.0,
        val_fraction=0.25, seed=0,
    )
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    with pytest.raises(ValueError, match="classes"):
        train_extractor(
            model, tiny.images[:4], np.array([0, 1, 2, 12]), epochs=1, batch_size=2, lr=1e-3,
            weight_decay=0.0, val_fraction=0.0, seed=0,
        )
