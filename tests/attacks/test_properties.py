"""Property tests (hypothesis) of every registered attack on small random batches.

Each property is one a user relies on when storing and comparing adversarial
images: the result stays within the attack's budget in its norm and in [0, 1],
leaves its input alone, does not depend on how items are batched, is
reproducible for a seed, and does not make the attack's own loss worse.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import raygrid.attacks  # noqa: F401  (registers the attacks)
from raygrid.attacks import Attack, logit_margin, targeted_cross_entropy, untargeted_cross_entropy
from raygrid.registry import ATTACKS

N_CLASSES = 3
# The classifier attacks (the VAR study's); the AIP study's item attacks have their own tests.
ALL = [name for name in ATTACKS.names() if "aip" not in getattr(ATTACKS.get(name), "studies", ())]

# Quick settings per attack (defaults where absent); eps is drawn by hypothesis where the attack has one.
QUICK: dict[str, dict[str, Any]] = {"pgd": {"steps": 3}, "cw": {"steps": 15, "binary_search_steps": 2, "lr": 1e-2}}

PROPERTY_SETTINGS = settings(
    max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 8), nn.Tanh(), nn.Linear(8, N_CLASSES)).eval()


MODEL = tiny_model()


@st.composite
def cases(draw: st.DrawFn, name: str) -> tuple[Attack, Tensor, Tensor, int]:
    """Attack ``name`` with a drawn budget and mode, a batch of 8-bit images, labels and a seed."""
    cls = ATTACKS.get(name)
    fields = cls.Config.model_fields
    config: dict[str, Any] = dict(QUICK.get(name, {}))
    if "eps" in fields:
        config["eps"] = draw(st.sampled_from([1.0, 4.0, 8.0, 16.0]))
    if "norm" in fields:
        config["norm"] = draw(st.sampled_from(["linf", "l2"]))
    if "targeted" in fields:
        config["targeted"] = draw(st.booleans())
    n = draw(st.integers(1, 4))
    levels = draw(st.lists(st.integers(0, 255), min_size=n * 48, max_size=n * 48))
    images = torch.tensor(levels, dtype=torch.float32).reshape(n, 3, 4, 4) / 255
    labels = torch.tensor(draw(st.lists(st.integers(0, N_CLASSES - 1), min_size=n, max_size=n)))
    return ATTACKS.build(cls.Config(**config)), images, labels, draw(st.integers(0, 2**16))


def own_loss(attack: Attack, x: Tensor, labels: Tensor) -> Tensor:
    """The loss the attack lowers: C&W's logit margin, the cross-entropy for the others."""
    with torch.no_grad():
        if attack.config.name == "cw":
            return logit_margin(MODEL(x), labels, targeted=attack.targeted, confidence=float("inf"))
        objective = targeted_cross_entropy if attack.targeted else untargeted_cross_entropy
        return objective(MODEL, x, labels)


@pytest.mark.parametrize("name", ALL)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_within_budget_in_its_norm_and_in_unit_range(name, data):
    case = data.draw(cases(name))
    attack, images, labels, seed = case
    adv = attack(MODEL, images, labels, generator=torch.Generator().manual_seed(seed))
    assert adv.shape == images.shape and adv.min() >= 0 and adv.max() <= 1
    assert (attack.threat.distance(adv, images) <= attack.eps + 1e-5).all()


@pytest.mark.parametrize("name", ALL)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_input_untouched(name, data):
    case = data.draw(cases(name))
    attack, images, labels, seed = case
    before_images, before_labels = images.clone(), labels.clone()
    attack(MODEL, images, labels, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(images, before_images) and torch.equal(labels, before_labels)


@pytest.mark.parametrize("name", ALL)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_same_seed_same_output(name, data):
    case = data.draw(cases(name))
    attack, images, labels, seed = case
    first = attack(MODEL, images, labels, generator=torch.Generator().manual_seed(seed))
    second = attack(MODEL, images, labels, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", ALL)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_batch_equals_items_one_by_one(name, data):
    case = data.draw(cases(name))
    attack, images, labels, _ = case
    if getattr(attack.config, "random_start", False):
        # a random start draws the batch's noise at once; without it each item is independent
        attack = ATTACKS.build(attack.config.model_copy(update={"random_start": False}))
    batched = attack(MODEL, images, labels)
    single = torch.cat([attack(MODEL, images[i : i + 1], labels[i : i + 1]) for i in range(len(images))])
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ALL)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_own_loss_does_not_increase(name, data):
    case = data.draw(cases(name))
    attack, images, labels, seed = case
    adv = attack(MODEL, images, labels, generator=torch.Generator().manual_seed(seed))
    assert (own_loss(attack, adv, labels) <= own_loss(attack, images, labels) + 1e-5).all()
