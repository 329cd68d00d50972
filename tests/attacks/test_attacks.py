"""Attack contract tests, generated over the registry, plus unit tests of the pieces."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import raygrid.attacks
from raygrid.attacks import (
    FGSM,
    PGD,
    Attack,
    LinfThreat,
    NoAttack,
    OutputSelector,
    attack_images,
    comparison_grid,
    dequantize,
    iterative_gradient_attack,
    quantize,
    realised_distances,
    targeted_cross_entropy,
    untargeted_cross_entropy,
)
from raygrid.registry import ATTACKS

N_CLASSES = 5

# Quick settings for registered attacks whose defaults are slow; others use Config().
FAST_CONFIGS: dict[str, dict[str, Any]] = {"pgd": {"steps": 4}, "cw": {"steps": 10, "binary_search_steps": 2}}


class ToyCNN(nn.Module):
    """Tiny classifier with batch norm and dropout, so that eval mode matters."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(8, N_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@pytest.fixture
def model() -> ToyCNN:
    torch.manual_seed(0)
    net = ToyCNN()
    with torch.no_grad():  # a non-trivial running mean/var, as after training
        net.features[1].running_mean.uniform_(-0.1, 0.1)
        net.features[1].running_var.uniform_(0.5, 1.5)
    return net.train()


@pytest.fixture
def images() -> Tensor:
    return torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def targets() -> Tensor:
    return torch.tensor([0, 1, 2, 3, 4, 0])


def build(name: str, **overrides: Any) -> Attack:
    cls = ATTACKS.get(name)
    fields = cls.Config.model_fields
    settings = {k: v for k, v in {**FAST_CONFIGS.get(name, {}), **overrides}.items() if k in fields}
    return ATTACKS.build(cls.Config(**settings))


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# The classifier attacks (the VAR study's); the AIP study's item attacks have their own tests.
ALL = [name for name in ATTACKS.names() if "aip" not in getattr(ATTACKS.get(name), "studies", ())]


# --- contract tests over the registry -------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_result_in_unit_range_and_within_eps(name, model, images, targets):
    attack = build(name)
    adv = attack(model, images, targets, generator=seeded())
    assert adv.shape == images.shape and adv.dtype == images.dtype
    assert not adv.requires_grad
    assert adv.min() >= 0 and adv.max() <= 1
    assert (attack.threat.distance(adv, images) <= attack.threat.eps + 1e-6).all()


@pytest.mark.parametrize("name", ALL)
def test_stored_images_within_eps_levels(name, model):
    attack = build(name, eps=8)
    clean = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    clean[0] = 0  # saturated images: the clamp to [0, 1] must not break the budget
    clean[1] = 255
    adv = attack_images(attack, model, clean, np.arange(5) % N_CLASSES, batch_size=2)
    assert adv.dtype == np.uint8 and adv.shape == clean.shape
    if isinstance(attack.threat, LinfThreat):
        assert realised_distances(clean, adv)["linf"].max() <= round(attack.eps * 255)


@pytest.mark.parametrize("name", ALL)
def test_input_untouched(name, model, images, targets):
    before_images, before_targets = images.clone(), targets.clone()
    build(name)(model, images, targets, generator=seeded())
    assert torch.equal(images, before_images)
    assert torch.equal(targets, before_targets)


@pytest.mark.parametrize("name", ALL)
def test_no_parameter_grad_and_modes_restored(name, model, images, targets):
    model.features[1].eval()  # mixed modes must come back as they were
    modes = [m.training for m in model.modules()]
    build(name)(model, images, targets, generator=seeded())
    assert all(p.grad is None for p in model.parameters())
    assert [m.training for m in model.modules()] == modes


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_output(name, model, images, targets):
    attack = build(name)
    first = attack(model, images, targets, generator=seeded(3))
    second = attack(model, images, targets, generator=seeded(3))
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", ALL)
def test_batch_equals_one_by_one(name, model, images, targets):
    attack = build(name, random_start=False)
    batched = attack(model, images, targets)
    single = torch.cat([attack(model, images[i : i + 1], targets[i : i + 1]) for i in range(len(images))])
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ALL)
def test_registered_class_contract(name):
    attack = build(name)
    assert isinstance(attack, Attack)
    assert attack.config.name == name
    assert isinstance(attack.label(), str) and attack.label().startswith(name)
    assert 0 <= attack.eps <= 1 or (attack.threat.norm == "l2" and attack.eps == float("inf"))  # C&W is unbounded
    assert attack.is_identity == (name == "none")
    with pytest.raises(ValueError):
        type(attack).Config(unknown_option=1)


@pytest.mark.parametrize("name", ALL)
def test_rejects_images_outside_pixel_space(name, model, targets):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        build(name)(model, torch.full((6, 3, 8, 8), 2.0), targets)


# --- FGSM and PGD -----------------------------------------------------------------------


@pytest.mark.parametrize("attack", [FGSM(FGSM.Config(eps=8)), PGD(PGD.Config(eps=8))], ids=["fgsm", "pgd"])
def test_targeted_loss_goes_down(attack, model, images, targets):
    adv = attack(model, images, targets, generator=seeded())
    model.eval()
    with torch.no_grad():
        assert (targeted_cross_entropy(model, adv, targets) < targeted_cross_entropy(model, images, targets)).all()


@pytest.mark.parametrize(
    "attack",
    [FGSM(FGSM.Config(eps=8, targeted=False)), PGD(PGD.Config(eps=8, targeted=False))],
    ids=["fgsm", "pgd"],
)
def test_untargeted_loss_goes_up(attack, model, images):
    model.eval()
    with torch.no_grad():
        true = model(images).argmax(dim=1)
    adv = attack(model, images, true, generator=seeded())
    with torch.no_grad():
        assert (untargeted_cross_entropy(model, adv, true) < untargeted_cross_entropy(model, images, true)).all()


def test_fgsm_is_one_signed_step_of_eps(model, images, targets):
    model.eval()
    x = images.clone().requires_grad_(True)
    nn.functional.cross_entropy(model(x), targets, reduction="sum").backward()
    expected = (images - 4 / 255 * x.grad.sign()).clamp(0, 1)
    model.zero_grad(set_to_none=True)
    torch.testing.assert_close(FGSM(FGSM.Config(eps=4))(model, images, targets), expected, atol=1e-7, rtol=0)


def test_fgsm_ignores_the_generator(model, images, targets):
    attack = FGSM()
    assert torch.equal(attack(model, images, targets, generator=seeded(1)), attack(model, images, targets))


def test_pgd_defaults_follow_var():
    attack = PGD()
    assert attack.config.steps == 10 and attack.config.random_start and attack.config.targeted
    assert attack.eps == pytest.approx(8 / 255)
    assert attack.step_size == pytest.approx(8 / 6 / 255)
    assert PGD(PGD.Config(eps=4, step_size=2)).step_size == pytest.approx(2 / 255)


def test_pgd_random_start_depends_on_seed(model, images, targets):
    attack = PGD(PGD.Config(eps=8, steps=1))
    assert not torch.equal(
        attack(model, images, targets, generator=seeded(0)), attack(model, images, targets, generator=seeded(1))
    )


@pytest.mark.parametrize(
    "bad", [{"eps": 0}, {"eps": 256}, {"eps": -1}, {"steps": 0}, {"step_size": 0}, {"name": "fgsm"}, {"epsilon": 8}]
)
def test_pgd_config_rejects(bad):
    with pytest.raises(ValueError):
        PGD.Config(**bad)


def test_configs_are_frozen():
    config = FGSM.Config(eps=4)
    with pytest.raises(ValueError):
        config.eps = 8


def test_labels():
    assert PGD(PGD.Config(eps=8)).label() == "pgd_eps8"
    assert FGSM(FGSM.Config(eps=4)).label() == "fgsm_eps4"
    assert NoAttack().label() == "none"
    assert FGSM(FGSM.Config(eps=2.5, targeted=False)).label() == "fgsm_eps2.5_untargeted"
    assert PGD(PGD.Config(eps=4, steps=20, step_size=1, random_start=False)).label() == "pgd_eps4_steps20_step1_norand"


def test_attack_rejects_a_foreign_config():
    with pytest.raises(TypeError):
        PGD(FGSM.Config())


# --- none -------------------------------------------------------------------------------


def refuse(_: Tensor) -> Tensor:
    raise AssertionError("the identity attack must not run the model")


def test_none_is_identity(images, targets):
    attack = NoAttack()
    adv = attack(refuse, images, targets)
    assert attack.is_identity and attack.eps == 0 and not attack.targeted
    assert torch.equal(adv, images) and adv.data_ptr() != images.data_ptr()


def test_attack_images_identity_returns_a_copy_without_the_model():
    clean = np.random.default_rng(0).integers(0, 256, size=(3, 4, 4, 3), dtype=np.uint8)
    clean.setflags(write=False)
    out = attack_images(NoAttack(), refuse, clean, np.zeros(3, dtype=np.int64))
    assert np.array_equal(out, clean) and not np.shares_memory(out, clean) and out.flags.writeable


# --- threat model -----------------------------------------------------------------------


def test_linf_project_clips_to_ball_and_unit_range():
    threat = LinfThreat(0.1)
    clean = torch.tensor([[0.5, 0.05, 0.95, 0.5]])
    adv = torch.tensor([[0.9, -0.2, 1.3, 0.45]])
    torch.testing.assert_close(threat.project(adv, clean), torch.tensor([[0.6, 0.0, 1.0, 0.45]]))


def test_linf_step_descends_the_signed_gradient():
    threat = LinfThreat(0.1)
    x = torch.tensor([[0.5, 0.5, 0.5, 0.01]])
    grad = torch.tensor([[2.0, -0.001, 0.0, 3.0]])
    torch.testing.assert_close(threat.step(x, grad, 0.02), torch.tensor([[0.48, 0.52, 0.5, 0.0]]))


def test_linf_random_start_fills_the_ball_reproducibly():
    threat = LinfThreat(0.25)
    x = torch.full((2000, 3), 0.5)
    start = threat.random_start(x, seeded(5))
    delta = start - x
    assert delta.abs().max() <= 0.25 + 1e-7
    assert delta.min() < -0.24 and delta.max() > 0.24 and abs(delta.mean()) < 0.01
    assert torch.equal(start, threat.random_start(x, seeded(5)))
    edge = threat.random_start(torch.zeros(100, 3), seeded(0))
    assert edge.min() == 0 and edge.max() <= 0.25


def test_linf_distance():
    threat = LinfThreat(1.0)
    clean = torch.zeros(2, 3, 2, 2)
    adv = clean.clone()
    adv[0, 1, 0, 1] = 0.3
    adv[0, 2, 1, 1] = 0.1
    torch.testing.assert_close(threat.distance(adv, clean), torch.tensor([0.3, 0.0]))


@pytest.mark.parametrize("eps", [-0.1, 1.5, float("nan")])
def test_linf_rejects_eps_outside_unit_range(eps):
    with pytest.raises(ValueError):
        LinfThreat(eps)


# --- the loop ---------------------------------------------------------------------------


def test_loop_accepts_any_callable_and_zero_steps(images, targets):
    weight = torch.randn(3 * 8 * 8, N_CLASSES, generator=seeded(2))

    def linear(x: Tensor) -> Tensor:
        return x.flatten(1) @ weight

    threat = LinfThreat(4 / 255)
    adv = iterative_gradient_attack(
        linear,
        images,
        targets,
        objective=targeted_cross_entropy,
        threat=threat,
        steps=5,
        step_size=1 / 255,
        random_start=False,
    )
    assert (targeted_cross_entropy(linear, adv, targets) < targeted_cross_entropy(linear, images, targets)).all()
    same = iterative_gradient_attack(
        linear,
        images,
        targets,
        objective=targeted_cross_entropy,
        threat=threat,
        steps=0,
        step_size=1 / 255,
        random_start=False,
    )
    assert torch.equal(same, images)


def test_loop_runs_under_no_grad(model, images, targets):
    with torch.no_grad():
        adv = PGD(PGD.Config(steps=2))(model, images, targets, generator=seeded())
    assert not torch.equal(adv, images)


def test_loop_requires_a_per_sample_objective(model, images, targets):
    def batch_mean(m: Any, x: Tensor, y: Tensor) -> Tensor:
        return targeted_cross_entropy(m, x, y).mean()

    with pytest.raises(ValueError, match="per sample"):
        iterative_gradient_attack(
            model,
            images,
            targets,
            objective=batch_mean,
            threat=LinfThreat(0.1),
            steps=1,
            step_size=0.1,
            random_start=False,
        )
    assert model.training


def test_output_selector_lets_attacks_use_feature_and_logit_models(model, images, targets):
    class FeaturesAndLogits(nn.Module):
        def __init__(self, net: ToyCNN) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            features = self.net.features(x)
            return features, self.net.head(features)

    extractor = FeaturesAndLogits(model)
    with pytest.raises(TypeError, match="OutputSelector"):
        FGSM()(extractor, images, targets)
    via_selector = FGSM()(OutputSelector(extractor, index=1), images, targets)
    assert torch.equal(via_selector, FGSM()(model, images, targets))
    assert model.training


# --- storage ----------------------------------------------------------------------------


def as_image(values: list[float]) -> Tensor:
    """A (1, 3, 1, len) image whose three channels all hold ``values``."""
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, -1).expand(1, 3, 1, -1).contiguous()


def test_quantize_rounds_at_the_half_level():
    values = [0.0, 0.49 / 255, 0.5 / 255, 0.51 / 255, 0.5, 1.49 / 255, 1.51 / 255, 254.49 / 255, 254.51 / 255, 1.0]
    expected = [0, 0, 1, 1, 128, 1, 2, 254, 255, 255]
    stored = quantize(as_image(values))
    assert stored.dtype == np.uint8 and stored.shape == (1, 1, len(values), 3)
    assert stored[0, 0, :, 0].tolist() == expected
    # truncation, as the authors did, drops every change short of a full level
    truncated = (as_image(values) * 255).to(torch.uint8)[0, 0, 0].tolist()
    assert truncated == [0, 0, 0, 0, 127, 1, 1, 254, 254, 255]


def test_quantize_clamps_and_is_channels_last():
    image = torch.zeros(1, 3, 2, 2)
    image[0, 0] = -0.3
    image[0, 1] = 1.7
    image[0, 2, 1, 0] = 10 / 255
    stored = quantize(image)
    assert stored.shape == (1, 2, 2, 3)
    assert (stored[..., 0] == 0).all() and (stored[..., 1] == 255).all()
    assert stored[0, 1, 0, 2] == 10 and stored[0, 0, 0, 2] == 0
    with pytest.raises(ValueError):
        quantize(torch.full((1, 3, 1, 1), float("nan")))


def test_dequantize_then_quantize_is_exact():
    levels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    tensor = dequantize(levels)
    assert tensor.shape == (1, 3, 16, 16) and tensor.dtype == torch.float32
    assert tensor.min() == 0 and tensor.max() == 1
    assert np.array_equal(quantize(tensor), levels)


def test_realised_distances_by_hand():
    clean = np.zeros((2, 2, 2, 3), dtype=np.uint8)
    adv = clean.copy()
    adv[0, 0, 0, 0] = 3
    adv[0, 1, 1, 2] = 4
    clean[1, 0, 1, 1] = 200
    adv[1, 0, 1, 1] = 190
    distances = realised_distances(clean, adv)
    np.testing.assert_array_equal(distances["linf"], [4.0, 10.0])
    np.testing.assert_allclose(distances["l2"], [5 / 255, 10 / 255])  # sqrt(3^2 + 4^2) = 5
    with pytest.raises(ValueError):
        realised_distances(clean, adv[:1])


# --- running over a catalogue ------------------------------------------------------------


@pytest.fixture
def catalogue() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, size=(7, 8, 8, 3), dtype=np.uint8)


def test_attack_images_is_deterministic_for_a_seed(model, catalogue):
    attack = PGD(PGD.Config(eps=8, steps=3))
    labels = np.arange(7) % N_CLASSES
    first = attack_images(attack, model, catalogue, labels, batch_size=3, seed=1)
    assert np.array_equal(first, attack_images(attack, model, catalogue, labels, batch_size=3, seed=1))
    assert not np.array_equal(first, attack_images(attack, model, catalogue, labels, batch_size=3, seed=2))
    assert not np.array_equal(first, catalogue)


def test_attack_images_does_not_depend_on_batch_size(model, catalogue):
    attack = PGD(PGD.Config(eps=8, steps=3))
    labels = np.arange(7) % N_CLASSES
    by_three = attack_images(attack, model, catalogue, labels, batch_size=3)
    by_seven = attack_images(attack, model, catalogue, labels, batch_size=7)
    assert np.abs(by_three.astype(int) - by_seven.astype(int)).max() <= 1  # float noise can tip a rounding


def test_attack_images_matches_the_tensor_attack(model, catalogue):
    attack = FGSM(FGSM.Config(eps=4))
    labels = np.arange(7) % N_CLASSES
    expected = quantize(attack(model, dequantize(catalogue), torch.from_numpy(labels)))
    catalogue.setflags(write=False)
    assert np.array_equal(attack_images(attack, model, catalogue, labels, batch_size=2), expected)


def test_attack_images_checks_its_inputs(model, catalogue):
    with pytest.raises(ValueError):
        attack_images(FGSM(), model, catalogue.astype(np.float32), np.zeros(7, dtype=int))
    with pytest.raises(ValueError):
        attack_images(FGSM(), model, catalogue, np.zeros(6, dtype=int))
    with pytest.raises(ValueError):
        attack_images(FGSM(), model, catalogue, np.zeros(7))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_attack_images_on_cuda_matches_cpu_and_moves_the_model_back(model, catalogue):
    attack = PGD(PGD.Config(eps=8, steps=3))
    labels = np.arange(7) % N_CLASSES
    on_cpu = attack_images(attack, model, catalogue, labels, device="cpu")
    on_gpu = attack_images(attack, model, catalogue, labels, device="cuda")
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert realised_distances(catalogue, on_gpu)["linf"].max() <= 8
    # same random start; kernels differ in the last bits, which may flip a few near-zero gradient signs
    assert np.mean(on_cpu == on_gpu) > 0.95


# --- picture ----------------------------------------------------------------------------


def test_comparison_grid_layout_and_amplified_difference():
    clean = np.full((3, 4, 5, 3), 100, dtype=np.uint8)
    adv = clean.copy()
    adv[1, 0, 0, 0] = 102  # largest difference: full intensity after amplification
    adv[2, 3, 4, 2] = 99
    image = comparison_grid(clean, adv, max_items=2, upscale=3)
    gap = raygrid.attacks.visual.GAP
    assert image.mode == "RGB"
    assert image.size == (2 * 5 * 3 + 3 * gap, 3 * 4 * 3 + 4 * gap)
    pixels = np.asarray(image)
    diff_row = pixels[gap + 2 * (12 + gap) :][:12]
    second = diff_row[:, gap + 15 + gap :][:, :15]
    assert (second[:3, :3] == [255, 0, 0]).all()  # the changed pixel, upscaled 3x3
    assert second[3:, :, :].max() == 0 and second[:, 3:, :].max() == 0
    assert image.info["amplification"] == pytest.approx(255 / 2)


def test_comparison_grid_of_identical_images_has_a_black_difference_row():
    clean = np.random.default_rng(0).integers(0, 256, size=(2, 4, 4, 3), dtype=np.uint8)
    pixels = np.asarray(comparison_grid(clean, clean.copy(), upscale=1))
    gap = raygrid.attacks.visual.GAP
    assert pixels[gap + 2 * (4 + gap) :][:4, gap : gap + 4].max() == 0
    with pytest.raises(ValueError):
        comparison_grid(clean[:0], clean[:0])
