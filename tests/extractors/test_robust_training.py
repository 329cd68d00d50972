"""Tests of the training modes: standard, PGD adversarial (Madry et al.) and free adversarial (Shafahi et al.)."""

from __future__ import annotations

import math
from typing import get_args

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from raygrid.attacks import PGD
from raygrid.data.dataset import Dataset
from raygrid.errors import UnknownComponentError
from raygrid.extractors.base import Extractor, images_to_tensor
from raygrid.extractors.smallcnn import SmallCNN
from raygrid.extractors.training import (
    TRAINING_STEPS,
    AdversarialStep,
    FreeAdversarialStep,
    TrainingMode,
    robust_accuracy,
    robust_eval_attack,
    split_train_val,
    standard_step,
    train_extractor,
    training_step,
)

MODES: tuple[str, ...] = get_args(TrainingMode)
METRICS = {"train_accuracy", "val_accuracy", "train_loss", "val_robust_accuracy", "val_robust_accuracy_eps8"}
ROBUST = {"width": 8, "epochs": 8, "batch_size": 32, "adv_eps": 16.0}
"""Tiny data at eps 16/255: the standard model's robust accuracy is ~0, the robust ones' clearly above."""



@pytest.fixture(scope="module")
def trained(tiny: Dataset) -> dict[str, tuple[SmallCNN, dict[str, float]]]:
    """One SmallCNN per mode, same data, seed and budget."""
    out = {}
    for mode in MODES:
        model = SmallCNN(SmallCNN.Config(training=mode, **ROBUST), tiny.category_names, seed=0)
        out[mode] = (model, model.fit(tiny.images, tiny.item_labels, seed=0))
    return out


class _Toy(Extractor):
    """A linear extractor on 4x4 images that records every input it sees, with its mode."""

    def __init__(self) -> None:
        super().__init__(("a", "b", "c"), feature_dim=6)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 6))
            self.head = nn.Linear(6, 3)
        self.seen: list[tuple[bool, torch.Tensor]] = []

    def encode(self, normalized: torch.Tensor) -> torch.Tensor:
        return self.body(normalized)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen.append((self.training, images.detach().clone()))
        return super().forward(images)


def _toy_batch(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with saturated pixels (0 and 1) so that the [0, 1] box matters."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 4, 4, generator=generator)
    images[:, 0] = (images[:, 0] > 0.5).float()
    return images, torch.randint(0, 3, (n,), generator=generator)


def _count_optimizer_steps(optimizer: torch.optim.Optimizer) -> list[int]:
    counter = [0]
    optimizer.register_step_post_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))
    return counter


def _assert_within(x_adv: torch.Tensor, clean: torch.Tensor, eps: float) -> None:
    assert float((x_adv - clean).abs().max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


# --------------------------------------------------------------------------- registry and config


def test_modes_are_registered_once_for_every_extractor() -> None:
    assert set(MODES) == set(TRAINING_STEPS) == {"standard", "adversarial", "free_adversarial"}
    assert training_step("standard") is standard_step
    assert isinstance(training_step("adversarial", eps=4, steps=2), AdversarialStep)
    free = training_step("free_adversarial", eps=4, replays=3)
    assert isinstance(free, FreeAdversarialStep) and free.replays == 3
    with pytest.raises(UnknownComponentError, match="standard, adversarial, free_adversarial"):
        training_step("trades")


def test_config_fields_and_validation() -> None:
    config = SmallCNN.Config()
    assert (config.training, config.adv_eps, config.adv_steps, config.adv_step_size, config.replays) == (
        "standard",
        4.0,
        3,
        None,
        4,
    )
    for mode in MODES:
        assert SmallCNN.Config(training=mode).training == mode
    for bad in [{"adv_eps": 0}, {"adv_eps": 256}, {"adv_steps": 0}, {"replays": 0}, {"adv_step_size": 0}]:
        with pytest.raises(ValidationError):
            SmallCNN.Config(**bad)


def test_default_adversarial_step_size_is_madry_rule() -> None:
    step = AdversarialStep(eps=4, steps=5)
    assert step.attack.step_size == pytest.approx(2.5 * 4 / 5 / 255)
    assert step.attack.threat.eps == pytest.approx(4 / 255) and not step.attack.targeted
    assert AdversarialStep(eps=4, steps=5, step_size=1).attack.step_size == pytest.approx(1 / 255)


# --------------------------------------------------------------------------- the step functions


def test_free_step_perturbation_stays_in_eps_ball_and_box() -> None:
    eps, replays = 16 / 255, 3
    model = _Toy().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = _count_optimizer_steps(optimizer)
    step = FreeAdversarialStep(eps=16, replays=replays)
    for batch in range(3):
        images, labels = _toy_batch(8, seed=batch)
        before = images.clone()
        model.seen.clear()
        loss, logits = step(model, images, labels, optimizer)
        assert torch.equal(images, before)  # input untouched
        assert loss.shape == () and logits.shape == (8, 3) and not logits.requires_grad
        # One forward (and backward) per replay, all in training mode, each inside the ball and box.
        assert [training for training, _ in model.seen] == [True] * replays
        for _, x_in in model.seen:
            _assert_within(x_in, images, eps)
        assert step.delta is not None and float(step.delta.abs().max()) <= eps + 1e-6
        _assert_within(images + step.delta, images, eps)
    assert steps[0] == 3 * replays
    # After the first update the perturbation moved, by at most eps per replay and never past eps.
    assert float((model.seen[-1][1] - images).abs().max()) == pytest.approx(eps, abs=1e-6)


def test_free_step_handles_smaller_and_larger_batches() -> None:
    model = _Toy().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step = FreeAdversarialStep(eps=8, replays=2)
    step(model, *_toy_batch(8), optimizer)
    assert step.delta is not None
    kept = step.delta[5:].clone()
    images, labels = _toy_batch(5, seed=1)
    model.seen.clear()
    step(model, images, labels, optimizer)
    assert step.delta.shape == (8, 3, 4, 4)
    assert torch.equal(step.delta[5:], kept)  # rows beyond the small batch wait for the next one
    _assert_within(images + step.delta[:5], images, 8 / 255)
    # The small batch started from the stored perturbation's first rows, projected onto its box.
    first_input = model.seen[0][1]
    assert float((first_input - images).abs().max()) > 0
    step(model, *_toy_batch(12, seed=2), optimizer)
    assert step.delta.shape == (12, 3, 4, 4)


def test_adversarial_step_crafts_in_eval_mode_then_one_update_in_train_mode() -> None:
    eps = 8 / 255
    model = _Toy().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = _count_optimizer_steps(optimizer)
    images, labels = _toy_batch(6)
    before = images.clone()
    step = AdversarialStep(eps=8, steps=4, seed=0)
    loss, logits = step(model, images, labels, optimizer)
    assert torch.equal(images, before) and model.training
    assert [training for training, _ in model.seen] == [False] * 4 + [True]
    assert steps[0] == 1
    trained_on = model.seen[-1][1]
    _assert_within(trained_on, images, eps)
    assert float((trained_on - images).abs().max()) > eps / 2
    assert logits.shape == (6, 3) and torch.isfinite(loss)


def test_adversarial_step_is_seeded() -> None:
    images, labels = _toy_batch(6)
    inputs = []
    for _ in range(2):
        model = _Toy().train()
        AdversarialStep(eps=8, steps=2, seed=3)(model, images, labels, torch.optim.SGD(model.parameters(), lr=0.1))
        inputs.append(model.seen[-1][1])
    assert torch.equal(inputs[0], inputs[1])


# --------------------------------------------------------------------------- the training loop


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_trains_and_reports_metrics(trained: dict[str, tuple[SmallCNN, dict[str, float]]], mode: str) -> None:
    model, metrics = trained[mode]
    assert set(metrics) == METRICS
    assert np.isfinite(metrics["train_loss"])
    for name in METRICS - {"train_loss"}:
        assert 0.0 <= metrics[name] <= 1.0, name
    assert metrics["val_accuracy"] > 2 / 12  # chance is 1/12
    assert not model.training


def test_robust_modes_beat_standard_under_pgd(trained: dict[str, tuple[SmallCNN, dict[str, float]]]) -> None:
    robust = {mode: metrics["val_robust_accuracy"] for mode, (_, metrics) in trained.items()}
    assert robust["adversarial"] > robust["standard"]
    assert robust["free_adversarial"] > robust["standard"]


@pytest.mark.parametrize("mode", MODES)
def test_same_seed_same_weights(tiny: Dataset, mode: str) -> None:
    images, labels = tiny.images[:96], tiny.item_labels[:96]
    config = SmallCNN.Config(training=mode, width=4, epochs=2, batch_size=16, adv_steps=2, replays=2)
    runs = []
    for _ in range(2):
        model = SmallCNN(config, tiny.category_names, seed=0)
        runs.append((model.state_dict(), model.fit(images, labels, seed=5)))
    (first, first_metrics), (second, second_metrics) = runs
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name
    assert first_metrics == second_metrics


@pytest.mark.parametrize(("epochs", "replays", "batch_size"), [(5, 2, 16), (4, 4, 20), (3, 1, 20)])
def test_free_training_makes_the_documented_number_of_updates(
    tiny: Dataset, epochs: int, replays: int, batch_size: int
) -> None:
    """ceil(epochs / m) passes, m updates per minibatch (minibatches of one image are skipped)."""
    images, labels = tiny.images[:64], tiny.item_labels[:64]
    train_idx, _ = split_train_val(labels, 0.25, seed=0)
    sizes = [min(batch_size, train_idx.shape[0] - start) for start in range(0, train_idx.shape[0], batch_size)]
    batches = sum(size >= 2 for size in sizes)
    inner = FreeAdversarialStep(eps=4, replays=replays)
    counters: list[list[int]] = []

    class CountingStep:
        replays = inner.replays

        def __call__(self, model, x, y, optimizer):  # type: ignore[no-untyped-def]
            if not counters:
                counters.append(_count_optimizer_steps(optimizer))
            return inner(model, x, y, optimizer)

    passes: list[int] = []
    model = SmallCNN(SmallCNN.Config(width=4), tiny.category_names, seed=0)
    train_extractor(
        model,
        images,
        labels,
        epochs=epochs,
        batch_size=batch_size,
        lr=1e-3,
        weight_decay=0.0,
        val_fraction=0.25,
        seed=0,
        progress=lambda epoch, _: passes.append(epoch),
        step=CountingStep(),
        robust_attack=robust_eval_attack(4),
    )
    assert passes == list(range(math.ceil(epochs / replays)))
    assert counters[0][0] == math.ceil(epochs / replays) * batches * replays


def test_robust_accuracy_is_measured_in_eval_mode(tiny: Dataset) -> None:
    model = SmallCNN(SmallCNN.Config(width=4), tiny.category_names, seed=0).train()
    images, labels = tiny.images[:24], tiny.item_labels[:24]
    indices = np.arange(24)
    clean = robust_accuracy(model, images, labels, indices, PGD(PGD.Config(eps=1e-6, targeted=False)), 8, "cpu")
    assert model.training  # mode restored
    with torch.no_grad():
        expected = (model.eval().logits(images_to_tensor(images)).argmax(1).numpy() == labels).mean()
    assert clean == pytest.approx(expected)
    assert math.isnan(robust_accuracy(model, images, labels, indices[:0], robust_eval_attack(), 8, "cpu"))
    with pytest.raises(ValueError, match="untargeted"):
        robust_accuracy(model, images, labels, indices, PGD(PGD.Config(eps=4)), 8, "cpu")
