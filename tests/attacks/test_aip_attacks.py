"""The AIP attacks: objective identities, batching, budgets, c-SEMA geometry, TAaMR's target."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from raygrid.attacks.aip import (
    CSEMA,
    INSA,
    FeatureDistance,
    TAaMR,
    adam_on_items,
    compose_inset,
    most_popular_class,
    summed_preference,
)
from raygrid.attacks.aip.csema import inset_box
from raygrid.attacks.aip.preference import ExtractorFeatures
from raygrid.recommenders.alexrank import AlexRank
from raygrid.recommenders.amr import AMR
from raygrid.recommenders.vbpr import VBPR


class FlatExtractor(nn.Module):
    """A linear 'extractor' of 8 x 8 images: features = flattened pixels @ W."""

    def __init__(self, dim: int = 6, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(3 * 8 * 8, dim, generator=g) * 0.2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1) @ self.weight


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    n_users, n_items = 12, 20
    images = rng.integers(0, 256, (n_items, 8, 8, 3), dtype=np.uint8)
    users = rng.integers(0, n_users, 80)
    items = rng.integers(0, n_items - 4, 80)  # items 16..19 are cold
    extractor = FlatExtractor()
    with torch.no_grad():
        features = extractor.features(torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255).numpy()
    return n_users, n_items, users, items, images, features, extractor


def summed_scores(rec, n_users: int, features: np.ndarray, item: int) -> float:
    with torch.no_grad():
        return float(rec.score(np.arange(n_users), features)[:, item].double().sum())


@pytest.mark.parametrize("cls", [VBPR, AMR, AlexRank])
def test_summed_user_objective_equals_the_per_user_sum(problem, cls):
    n_users, n_items, users, items, images, features, extractor = problem
    config = cls.Config(factors=4, visual_factors=3, epochs=3) if cls is not AlexRank else cls.Config()
    rec = cls(config, seed=0).fit(n_users, n_items, users, items, features, cold_items=np.arange(16, 20))
    objective = summed_preference(rec, extractor)
    cold = 17
    x_a = torch.as_tensor(images[[cold]]).permute(0, 3, 1, 2).float() / 255
    x_b = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    swapped = features.copy()
    with torch.no_grad():
        swapped[cold] = extractor.features(x_b)[0].numpy()
        value_a, value_b = objective(x_a).item(), objective(x_b).item()
    per_user_a, per_user_b = summed_scores(rec, n_users, features, cold), summed_scores(rec, n_users, swapped, cold)
    if cls is AlexRank:  # no per-item constant: the value itself is the sum over users
        assert value_a == pytest.approx(per_user_a, rel=2e-3)
        assert value_b == pytest.approx(per_user_b, rel=2e-3)
    else:  # equal up to a constant of the item that does not depend on the image
        assert value_b - value_a == pytest.approx(per_user_b - per_user_a, rel=1e-3, abs=1e-4)


def test_exp_objective_only_for_dvbpr(problem):
    n_users, n_items, users, items, _, features, extractor = problem
    rec = VBPR(VBPR.Config(factors=2, visual_factors=2, epochs=1)).fit(n_users, n_items, users, items, features)
    with pytest.raises(ValueError, match="DVBPR only"):
        summed_preference(rec, extractor, transform="exp")


def test_batched_attack_equals_one_image_at_a_time_and_keeps_the_budget(problem):
    n_users, n_items, users, items, images, features, extractor = problem
    rec = VBPR(VBPR.Config(factors=2, visual_factors=3, epochs=2)).fit(n_users, n_items, users, items, features)
    objective = summed_preference(rec, extractor)
    cold = images[16:20]
    batched, _ = adam_on_items(objective, cold, maximise=True, eps_255=8, steps=15, lr=1e-2, batch_size=4)
    single, _ = adam_on_items(objective, cold, maximise=True, eps_255=8, steps=15, lr=1e-2, batch_size=1)
    assert batched.dtype == np.uint8 and batched.shape == cold.shape
    np.testing.assert_array_equal(batched, single)
    change = np.abs(batched.astype(int) - cold.astype(int))
    assert change.max() <= 8 and change.max() > 0  # eps 8 in 0-255 units, on the stored 8-bit image
    assert cold.flags.writeable and not np.shares_memory(batched, cold)
    with torch.no_grad():
        before = objective(torch.as_tensor(cold).permute(0, 3, 1, 2).float() / 255)
        after = objective(torch.as_tensor(batched).permute(0, 3, 1, 2).float() / 255)
    assert (after > before).all()


def test_expa_moves_features_towards_the_hook(problem):
    *_, images, _, extractor = problem
    embed = ExtractorFeatures(extractor)
    hook = torch.as_tensor(images[[0]]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        target = embed(hook)[0]
    distance = FeatureDistance(embed, target)
    adv, _ = adam_on_items(distance, images[16:20], maximise=False, eps_255=32, steps=30, lr=1e-2)
    to_float = lambda a: torch.as_tensor(a).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        assert (distance(to_float(adv)) < distance(to_float(images[16:20]))).all()


def test_insa_steps_follow_the_papers_epochs_and_learning_rates():
    insa = INSA()
    assert insa.config.eps == 32 and insa.steps_for(34244) == 10 * 134
    assert insa.lr_for("dvbpr") == 1e-3 and insa.lr_for("vbpr") == 1e-4 and insa.lr_for("alexrank") == 1e-4
    assert INSA(INSA.Config(steps=7, lr=0.5)).steps_for(10) == 7


@pytest.mark.parametrize("position", ["right", "top_left", "top_right", "bottom_left", "bottom_right"])
def test_csema_inset_geometry(position):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2, 40, 50, 3), dtype=np.uint8)
    hook = rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)
    out = compose_inset(images, hook, inset_scale=0.4, position=position, margin=2, text="")
    top, left, h, w = inset_box(40, 50, 0.4, position, 2)
    assert (h, w) == (16, 20)
    assert top in (2, 12, 40 - 16 - 2) and left in (2, 50 - 20 - 2)
    from PIL import Image

    expected = np.asarray(Image.fromarray(hook).resize((w, h), Image.Resampling.LANCZOS))
    for i in range(2):
        np.testing.assert_array_equal(out[i, top : top + h, left : left + w], expected)
        outside = np.ones((40, 50), dtype=bool)
        outside[top : top + h, left : left + w] = False
        np.testing.assert_array_equal(out[i][outside], images[i][outside])


def test_csema_text_is_drawn_outside_the_inset_and_input_is_untouched():
    images = np.full((1, 64, 64, 3), 255, dtype=np.uint8)
    hook = np.zeros((16, 16, 3), dtype=np.uint8)
    attack = CSEMA(CSEMA.Config())
    out = attack(images, hook, "coat")
    assert attack.caption("coat") == "match your coat" and attack.caption(None) == "match it"
    assert (images == 255).all()
    top, left, h, w = inset_box(64, 64, 0.4, "right", 1)
    outside = np.ones((64, 64), dtype=bool)
    outside[top : top + h, left : left + w] = False
    assert (out[0][outside] < 255).any()  # the text line
    assert CSEMA(CSEMA.Config(text=""))(images, hook)[0][outside].min() == 255


def test_taamr_targets_the_most_popular_class_with_fgsm_or_pgd():
    classes = np.array([0, 1, 1, 2])
    assert most_popular_class(np.array([0, 0, 3, 3, 3, 1]), classes, 3) == 2
    pgd = TAaMR().classifier_attack()
    assert pgd.config.steps == 20 and pgd.config.eps == 32 and pgd.config.targeted
    assert TAaMR(TAaMR.Config(method="fgsm", eps=8)).classifier_attack().label() == "fgsm_eps8"
