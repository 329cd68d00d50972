"""The L2 threat model, the Adam loop and Carlini-Wagner L2."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from raygrid.attacks import (
    CW,
    FGSM,
    PGD,
    L2Threat,
    LinfThreat,
    adam_attack,
    attack_images,
    carlini_wagner_l2,
    logit_margin,
    realised_distances,
    targeted_cross_entropy,
    threat_model,
)
from raygrid.attacks.cw import from_tanh_space, is_adversarial, to_tanh_space

N_CLASSES = 4


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def model() -> nn.Module:
    # Small enough to be quick, expressive enough that every class is reachable from every image.
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.Tanh(), nn.Linear(16, N_CLASSES)).eval()


@pytest.fixture
def images() -> Tensor:
    levels = torch.randint(0, 256, (5, 3, 8, 8), generator=seeded(1))
    return levels.float() / 255  # on the 8-bit grid, as stored images are


def predicted(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


# --- L2 threat ---------------------------------------------------------------------------


def test_l2_project_scales_onto_the_sphere_then_clamps():
    threat = L2Threat(0.5)
    clean = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    adv = torch.tensor([[0.5 + 0.3, 0.5 + 0.4], [0.6, 0.5]])  # change of norm 0.5 (on the sphere), 0.1
    torch.testing.assert_close(threat.project(adv, clean), adv)
    far = torch.tensor([[0.5 + 0.6, 0.5 + 0.8]])  # norm 1 -> scaled to 0.5: (0.3, 0.4), then 0.9 stays
    torch.testing.assert_close(threat.project(far, clean[:1]), torch.tensor([[0.8, 0.9]]))
    box = torch.tensor([[0.5, 0.5 + 2.0]])  # scaled to (0, 0.5): 1.0, within the box
    torch.testing.assert_close(threat.project(box, clean[:1]), torch.tensor([[0.5, 1.0]]))


def test_l2_step_moves_a_length_step_size_against_the_gradient():
    threat = L2Threat(1.0)
    x = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    grad = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    torch.testing.assert_close(threat.step(x, grad, 0.1), torch.tensor([[0.44, 0.42], [0.5, 0.5]]))


def test_l2_random_start_is_inside_the_ball_reproducible_and_spread():
    threat = L2Threat(0.3)
    x = torch.full((500, 3, 4, 4), 0.5)
    start = threat.random_start(x, seeded(4))
    norms = threat.distance(start, x)
    assert norms.max() <= 0.3 + 1e-6
    assert norms.min() > 0.2  # 48 dimensions: the volume sits near the surface
    assert torch.equal(start, threat.random_start(x, seeded(4)))
    means = (start - x).flatten(1).mean(dim=0)
    assert means.abs().max() < 0.01  # no preferred direction


def test_l2_unbounded_projects_to_the_box_only_and_has_no_random_start():
    threat = L2Threat(math.inf)
    clean = torch.zeros(1, 3)
    torch.testing.assert_close(threat.project(torch.tensor([[2.0, 0.5, -1.0]]), clean), torch.tensor([[1.0, 0.5, 0.0]]))
    with pytest.raises(ValueError, match="random start"):
        threat.random_start(clean)


def test_threat_model_by_name():
    assert isinstance(threat_model("linf", 0.1), LinfThreat)
    assert isinstance(threat_model("l2", 0.1), L2Threat)
    with pytest.raises(ValueError, match="linf"):
        threat_model("l1", 0.1)
    with pytest.raises(ValueError):
        L2Threat(-1.0)


@pytest.mark.parametrize("cls", [FGSM, PGD])
def test_l2_attacks_stay_in_their_ball_and_reach_further_than_linf_in_l2(cls, model, images):
    targets = torch.arange(5) % N_CLASSES
    attack = cls(cls.Config(eps=64, norm="l2"))  # L2 radius 64/255
    adv = attack(model, images, targets, generator=seeded())
    assert isinstance(attack.threat, L2Threat) and attack.label().split("_")[2] == "l2"
    assert (attack.threat.distance(adv, images) <= 64 / 255 + 1e-5).all()
    assert (targeted_cross_entropy(model, adv, targets) < targeted_cross_entropy(model, images, targets)).all()


# --- Adam loop ---------------------------------------------------------------------------


def test_adam_attack_lowers_the_loss_inside_the_ball(model, images):
    targets = torch.arange(5) % N_CLASSES
    for threat in (LinfThreat(8 / 255), L2Threat(0.5)):
        adv = adam_attack(model, images, targets, objective=targeted_cross_entropy, threat=threat, steps=20, lr=1e-2)
        assert (threat.distance(adv, images) <= threat.eps + 1e-5).all()
        assert adv.min() >= 0 and adv.max() <= 1 and not adv.requires_grad
        with torch.no_grad():
            assert (targeted_cross_entropy(model, adv, targets) < targeted_cross_entropy(model, images, targets)).all()


def test_adam_attack_batch_equals_one_by_one_and_zero_steps_is_identity(model, images):
    targets = torch.arange(5) % N_CLASSES
    kwargs = {"objective": targeted_cross_entropy, "threat": LinfThreat(8 / 255), "lr": 5e-3}
    batched = adam_attack(model, images, targets, steps=10, **kwargs)
    single = torch.cat(
        [adam_attack(model, images[i : i + 1], targets[i : i + 1], steps=10, **kwargs) for i in range(5)]
    )
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=0)
    assert torch.equal(adam_attack(model, images, targets, steps=0, **kwargs), images)
    with pytest.raises(ValueError, match="lr"):
        adam_attack(model, images, targets, steps=1, objective=targeted_cross_entropy, threat=LinfThreat(0.1), lr=0)


# --- C&W pieces --------------------------------------------------------------------------


def test_tanh_box_round_trips_the_8_bit_levels():
    levels = torch.arange(256, dtype=torch.float32) / 255
    back = from_tanh_space(to_tanh_space(levels))
    assert torch.equal(torch.floor(back * 255 + 0.5), torch.arange(256, dtype=torch.float32))
    assert from_tanh_space(torch.tensor([-1e4, 1e4])).tolist() == [0.0, 1.0]


def test_logit_margin_by_hand():
    logits = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0]])
    labels = torch.tensor([2, 0])
    # targeted: max other - target: (3 - 2) = 1, (1 - 5) = -4, floored at -kappa
    torch.testing.assert_close(logit_margin(logits, labels, targeted=True), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(logit_margin(logits, labels, targeted=True, confidence=2.0), torch.tensor([1.0, -2.0]))
    # untargeted: label - max other: (2 - 3) = -1, (5 - 1) = 4
    torch.testing.assert_close(logit_margin(logits, labels, targeted=False, confidence=10.0), torch.tensor([-1.0, 4.0]))


def test_is_adversarial_with_confidence():
    logits = torch.tensor([[1.0, 3.0, 2.5]])
    assert is_adversarial(logits, torch.tensor([1]), targeted=True, confidence=0.0).item()
    assert not is_adversarial(logits, torch.tensor([1]), targeted=True, confidence=1.0).item()
    assert is_adversarial(logits, torch.tensor([2]), targeted=False, confidence=0.0).item()
    assert not is_adversarial(logits, torch.tensor([2]), targeted=False, confidence=1.0).item()


def test_cw_defaults_follow_var():
    config = CW().config
    assert (config.binary_search_steps, config.initial_const, config.steps, config.lr, config.confidence) == (
        5,
        1e-2,
        1000,
        5e-3,
        0.0,
    )
    assert config.targeted and CW().label() == "cw"
    assert CW(CW.Config(steps=100, targeted=False)).label() == "cw_steps100_untargeted"
    for bad in ({"steps": 0}, {"binary_search_steps": 0}, {"initial_const": 0}, {"lr": -1}, {"confidence": -1}):
        with pytest.raises(ValueError):
            CW.Config(**bad)


# --- C&W behaviour -----------------------------------------------------------------------


def cw(model: nn.Module, images: Tensor, labels: Tensor, **overrides) -> Tensor:
    settings = {"binary_search_steps": 5, "steps": 100, "lr": 1e-2, **overrides}
    return carlini_wagner_l2(model, images, labels, **settings)


def test_cw_succeeds_on_the_stored_images_and_returns_the_8_bit_grid(model, images):
    targets = (predicted(model, images) + 1) % N_CLASSES
    adv = cw(model, images, targets)
    assert torch.equal(torch.floor(adv * 255 + 0.5) / 255, adv)  # already stored: rounding changes nothing
    assert (predicted(model, adv) == targets).float().mean() >= 0.8
    failed = predicted(model, adv) != targets
    assert torch.equal(adv[failed], images[failed])  # no success: the clean image comes back


def test_cw_leaves_an_image_already_in_its_target_class_unchanged(model, images):
    labels = predicted(model, images)
    assert torch.equal(cw(model, images, labels, steps=10), images)


def test_cw_more_search_steps_never_give_a_larger_perturbation(model, images):
    targets = (predicted(model, images) + 2) % N_CLASSES
    short = cw(model, images, targets, binary_search_steps=2)
    long = cw(model, images, targets, binary_search_steps=5)
    ok_short = predicted(model, short) == targets
    ok_long = predicted(model, long) == targets
    assert (ok_long | ~ok_short).all()  # the first two search steps are the same: success is kept
    l2 = lambda x: (x - images).flatten(1).norm(dim=1)
    assert (l2(long)[ok_short] <= l2(short)[ok_short] + 1e-6).all()


def test_cw_untargeted_leaves_the_true_class(model, images):
    true = predicted(model, images)
    adv = cw(model, images, true, targeted=False)
    assert (predicted(model, adv) != true).float().mean() >= 0.8


def test_cw_confidence_buys_a_margin(model, images):
    targets = (predicted(model, images) + 1) % N_CLASSES
    adv = cw(model, images, targets, confidence=0.1)
    ok = predicted(model, adv) == targets
    assert ok.any()
    with torch.no_grad():
        raw = logit_margin(model(adv[ok]), targets[ok], targeted=True, confidence=math.inf)
    assert (raw <= -0.1).all()


def test_cw_early_abort_changes_little(model, images):
    targets = (predicted(model, images) + 1) % N_CLASSES
    full = cw(model, images, targets, abort_early=False)
    quick = cw(model, images, targets, abort_early=True)
    assert torch.equal(predicted(model, full) == targets, predicted(model, quick) == targets)
    l2 = lambda x: (x - images).flatten(1).norm(dim=1).mean()
    assert l2(quick) <= 1.2 * l2(full) + 1e-6


def test_cw_judged_on_float_iterates_can_lose_success_when_stored(model, images):
    targets = (predicted(model, images) + 1) % N_CLASSES
    stored = cw(model, images, targets)
    floats = cw(model, images, targets, judge_stored=False)
    as_stored = torch.floor(floats * 255 + 0.5) / 255
    # every success of the default survives storage by construction; the float one need not
    assert (predicted(model, stored) == targets).sum() >= (predicted(model, as_stored) == targets).sum()


def test_cw_output_is_stored_without_loss(model, images):
    stored = (images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    targets = (predicted(model, images) + 1) % N_CLASSES
    attack = CW(CW.Config(binary_search_steps=5, steps=100, lr=1e-2))
    adv = attack_images(attack, model, stored, targets.numpy(), batch_size=2)
    as_tensor = torch.from_numpy(adv).permute(0, 3, 1, 2).float() / 255
    # rounding for storage changes nothing, so success and distance are those C&W judged
    assert (predicted(model, as_tensor) == targets).all()
    l2 = realised_distances(stored, adv)["l2"]
    torch.testing.assert_close(
        torch.from_numpy(l2).float(), (as_tensor - images).flatten(1).norm(dim=1), atol=1e-5, rtol=0
    )
    assert (l2 > 0).all()
