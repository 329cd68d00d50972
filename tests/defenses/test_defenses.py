"""Image-space defenses: contract tests over the registry and hand-checked transforms."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import raygrid.defenses  # noqa: F401  (registers the defenses)
from raygrid.defenses import JPEG, BitDepth, Chain, Defense, NoDefense, build_defense
from raygrid.registry import DEFENSES

ALL = DEFENSES.names()
EXAMPLE_CONFIGS = {"chain": {"steps": [{"name": "bit_depth", "bits": 5}, {"name": "jpeg", "quality": 70}]}}


def build(name: str, **overrides) -> Defense:
    return build_defense({"name": name, **EXAMPLE_CONFIGS.get(name, {}), **overrides})


@pytest.fixture
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    smooth = np.linspace(0, 255, 16).reshape(1, 1, 16, 1) * np.ones((3, 16, 16, 3))
    noisy = smooth + rng.normal(0, 20, size=smooth.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def test_registry_holds_the_papers_defenses():
    assert {"none", "jpeg", "bit_depth", "chain"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_contract_shape_dtype_input_untouched_deterministic(name, images):
    defense = build(name)
    images.setflags(write=False)
    before = images.copy()
    out = defense(images)
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert not np.shares_memory(out, images)
    assert np.array_equal(images, before)
    assert np.array_equal(out, defense(images))
    assert isinstance(defense.label(), str) and defense.label()
    assert defense.is_identity == (name == "none")


@pytest.mark.parametrize("name", ALL)
def test_batch_equals_one_by_one(name, images):
    defense = build(name)
    one_by_one = np.concatenate([defense(images[i : i + 1]) for i in range(len(images))])
    assert np.array_equal(defense(images), one_by_one)


@pytest.mark.parametrize("name", ALL)
def test_rejects_non_uint8_rgb(name, images):
    with pytest.raises(ValueError, match="uint8"):
        build(name)(images.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        build(name)(images[..., :1])


def test_none_is_the_identity_without_apply_to(images):
    assert np.array_equal(NoDefense()(images), images)
    with pytest.raises(ValueError):
        NoDefense.Config(apply_to="all")


def test_bit_depth_levels_by_hand():
    values = np.array([0, 1, 36, 37, 127, 128, 218, 219, 254, 255], dtype=np.uint8).reshape(1, 1, -1, 1).repeat(3, -1)
    out = BitDepth(BitDepth.Config(bits=1))(values)[0, 0, :, 0].tolist()
    assert out == [0, 0, 0, 0, 0, 255, 255, 255, 255, 255]
    out = BitDepth(BitDepth.Config(bits=3))(values)[0, 0, :, 0].tolist()
    # 8 levels k * 255 / 7 = 0, 36.4, 72.9, ..., rounded: 0, 36, 73, 109, 146, 182, 219, 255
    assert out == [0, 0, 36, 36, 109, 146, 219, 219, 255, 255]
    assert np.array_equal(BitDepth(BitDepth.Config(bits=8))(values), values)


@pytest.mark.parametrize("bits", range(2, 8))
def test_bit_depth_keeps_2_to_the_bits_levels_and_erases_small_perturbations(bits, images):
    defense = BitDepth(BitDepth.Config(bits=bits))
    out = defense(images)
    assert len(np.unique(out)) <= 2**bits
    level = 255 / (2**bits - 1)
    assert np.abs(out.astype(int) - images.astype(int)).max() <= level / 2 + 0.5
    on_levels = defense(out)
    nudged = np.clip(on_levels.astype(int) + np.where(on_levels < 128, 1, -1), 0, 255).astype(np.uint8)
    assert np.array_equal(defense(nudged), on_levels)  # a one-level perturbation disappears


def test_jpeg_matches_pillow_and_loses_more_at_lower_quality(images):
    errors = []
    for quality in (90, 70, 50, 30, 10):
        out = JPEG(JPEG.Config(quality=quality))(images)
        buffer = io.BytesIO()
        Image.fromarray(images[0]).save(buffer, format="JPEG", quality=quality)
        assert np.array_equal(out[0], np.asarray(Image.open(buffer).convert("RGB")))
        errors.append(np.abs(out.astype(int) - images.astype(int)).mean())
    assert errors == sorted(errors) and errors[0] < errors[-1]


def test_chain_applies_its_steps_in_order(images):
    chain = Chain(Chain.Config(steps=[{"name": "bit_depth", "bits": 3}, {"name": "jpeg", "quality": 50}]))
    expected = JPEG(JPEG.Config(quality=50))(BitDepth(BitDepth.Config(bits=3))(images))
    assert np.array_equal(chain(images), expected)
    assert chain.label() == "chain_bit_depth3+jpeg_q50"
    assert chain.config.steps[1] == {"name": "jpeg", "quality": 50}  # complete, without apply_to


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([], "at least 1"),
        ([{"bits": 3}], "name"),
        ([{"name": "chain", "steps": [{"name": "jpeg"}]}], "cannot contain"),
        ([{"name": "jpeg", "apply_to": "attacked"}], "apply_to on the chain"),
        ([{"name": "jpeg", "quality": 0}], "greater than or equal to 1"),
        ([{"name": "blur"}], "unknown defense 'blur'"),
    ],
)
def test_chain_rejects_bad_steps(steps, message):
    with pytest.raises(ValueError, match=message):
        Chain.Config(steps=steps)


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "jpeg", "quality": 0},
        {"name": "jpeg", "quality": 101},
        {"name": "bit_depth", "bits": 0},
        {"name": "bit_depth", "bits": 9},
        {"name": "jpeg", "apply_to": "some"},
        {"name": "jpeg", "qualty": 50},
    ],
)
def test_configs_reject_out_of_range_values(bad):
    with pytest.raises(ValueError):
        DEFENSES.get(bad["name"]).Config(**bad)


def test_apply_to_defaults_to_every_image():
    assert JPEG().apply_to == "all" and NoDefense().apply_to == "all"
    assert BitDepth(BitDepth.Config(apply_to="attacked")).apply_to == "attacked"
    assert BitDepth(BitDepth.Config(bits=2, apply_to="attacked")).label() == "bit_depth2_attacked"


@pytest.mark.parametrize("spill_bytes", [None, 0])
def test_a_catalogue_defended_in_batches_equals_the_whole_defended_at_once(spill_bytes):
    from raygrid.defenses.base import build_defense, defend_catalogue

    images = np.random.default_rng(3).integers(0, 256, (37, 24, 24, 3), dtype=np.uint8)
    for config in ({"name": "jpeg", "quality": 50}, {"name": "bit_depth", "bits": 3}):
        defense = build_defense(config)
        out = defend_catalogue(defense, images, batch=8, spill_bytes=spill_bytes)
        np.testing.assert_array_equal(out, defense(images))
        # Over the limit the result lives in a temporary file's pages, not in private memory.
        assert isinstance(out, np.memmap) == (spill_bytes == 0)
