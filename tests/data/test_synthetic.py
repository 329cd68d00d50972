"""Tests of the embedded synthetic dataset."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from raygrid.data import synthetic
from raygrid.data.dataset import Dataset
from raygrid.data.synthetic import (
    CATEGORY_NAMES,
    COLOUR_NAMES,
    SIZES,
    SyntheticData,
    draw_catalogue,
    generate,
    sample_interactions,
)
from raygrid.registry import DATASETS


@pytest.fixture(scope="module")
def tiny() -> Dataset:
    return generate("tiny", seed=0)


@pytest.fixture(scope="module")
def small() -> Dataset:
    return generate("small", seed=0)


def _interaction_items(data: Dataset) -> np.ndarray:
    return np.concatenate([data.train_items, data.test_items[data.test_items >= 0]])


def _category_shares(data: Dataset) -> np.ndarray:
    counts = np.bincount(data.item_labels[_interaction_items(data)], minlength=len(data.category_names))
    return counts / counts.sum()


def test_shapes_and_dtypes(tiny: Dataset) -> None:
    spec = SIZES["tiny"]
    assert (tiny.n_users, tiny.n_items) == (spec.n_users, spec.n_items)
    assert tiny.images.dtype == np.uint8 and tiny.images.shape == (spec.n_items, 32, 32, 3)
    for array in (tiny.item_labels, tiny.train_users, tiny.train_items, tiny.test_items):
        assert array.dtype == np.int64
    assert tiny.test_items.shape == (spec.n_users,)
    assert tiny.n_train + int((tiny.test_items >= 0).sum()) == spec.n_interactions
    assert tiny.train_users.min() >= 0 and tiny.train_users.max() < tiny.n_users
    assert tiny.train_items.min() >= 0 and tiny.train_items.max() < tiny.n_items


def test_same_seed_same_data_and_other_seed_other_data(tiny: Dataset) -> None:
    again = generate("tiny", seed=0)
    for field in ("images", "item_labels", "train_users", "train_items", "test_items"):
        np.testing.assert_array_equal(getattr(tiny, field), getattr(again, field))
    other = generate("tiny", seed=1)
    assert not np.array_equal(tiny.images, other.images)
    assert not np.array_equal(tiny.item_labels, other.item_labels)
    assert not np.array_equal(tiny.train_items, other.train_items)


def test_image_size_changes_resolution_only(tiny: Dataset) -> None:
    larger = generate("tiny", seed=0, image_size=48)
    assert larger.images.shape == (tiny.n_items, 48, 48, 3)
    np.testing.assert_array_equal(larger.item_labels, tiny.item_labels)
    np.testing.assert_array_equal(larger.train_items, tiny.train_items)
    np.testing.assert_array_equal(larger.test_items, tiny.test_items)


def test_at_least_twelve_categories_all_drawn(tiny: Dataset) -> None:
    assert tiny.category_names == CATEGORY_NAMES
    assert len(set(CATEGORY_NAMES)) == len(CATEGORY_NAMES) >= 12
    assert set(np.unique(tiny.item_labels).tolist()) == set(range(len(CATEGORY_NAMES)))


def test_images_vary_and_have_light_backgrounds(tiny: Dataset) -> None:
    flat = tiny.images.reshape(tiny.n_items, -1)
    assert np.unique(flat, axis=0).shape[0] == tiny.n_items
    corners = tiny.images[:, [0, 0, -1, -1], [0, -1, 0, -1]].astype(np.float64)
    assert corners.mean() > 200  # light background
    # The object covers a good part of the image and is darker or more saturated than the background.
    assert (np.abs(tiny.images.astype(np.int16) - corners.mean(axis=1, keepdims=True)[:, :, None].astype(np.int16))
            .max(axis=-1) > 40).mean() > 0.15


@pytest.mark.parametrize("fixture", ["tiny", "small"])
def test_origin_is_rare_and_target_popular(fixture: str, request: pytest.FixtureRequest) -> None:
    data: Dataset = request.getfixturevalue(fixture)
    assert data.category_names[data.origin_category] == "sandal"
    assert data.category_names[data.target_category] == "running shoe"
    shares = _category_shares(data)
    assert shares.argmax() == data.target_category
    assert shares.argmin() == data.origin_category
    assert shares[data.target_category] >= 3 * shares[data.origin_category]
    # Rare in the interactions, but not in the catalogue.
    assert (data.item_labels == data.origin_category).mean() >= 0.05


@pytest.mark.parametrize("fixture", ["tiny", "small"])
def test_every_user_has_a_test_item_not_in_train(fixture: str, request: pytest.FixtureRequest) -> None:
    data: Dataset = request.getfixturevalue(fixture)
    assert (data.test_items >= 0).all()
    per_user = np.bincount(data.train_users, minlength=data.n_users) + 1
    assert per_user.min() >= 2
    assert per_user.sum() == SIZES[fixture].n_interactions
    train_keys = data.train_users * data.n_items + data.train_items
    assert np.unique(train_keys).shape[0] == train_keys.shape[0]
    test_keys = np.arange(data.n_users) * data.n_items + data.test_items
    assert not np.isin(test_keys, train_keys).any()


def test_category_tastes_predict_the_test_item(small: Dataset) -> None:
    """A user's favourite training category is their test category far more often than chance."""
    counts = np.zeros((small.n_users, len(small.category_names)))
    np.add.at(counts, (small.train_users, small.item_labels[small.train_items]), 1)
    hit = (counts.argmax(axis=1) == small.item_labels[small.test_items]).mean()
    chance = (_category_shares(small) ** 2).sum()
    assert hit > 2 * chance


def test_colour_affinity_shapes_choices() -> None:
    rng = np.random.default_rng(0)
    catalogue = draw_catalogue(600, rng)
    users, items, _ = sample_interactions(catalogue, SIZES["small"], rng)
    colours = catalogue.colours[items]
    counts = np.zeros((SIZES["small"].n_users, len(COLOUR_NAMES)))
    np.add.at(counts, (users, colours), 1)
    user_share = counts.max(axis=1) / counts.sum(axis=1)
    global_share = np.bincount(colours, minlength=len(COLOUR_NAMES)).max() / colours.shape[0]
    assert np.median(user_share[counts.sum(axis=1) >= 8]) > 1.5 * global_share


def test_timestamps_increase_per_user() -> None:
    rng = np.random.default_rng(3)
    catalogue = draw_catalogue(240, rng)
    users, items, times = sample_interactions(catalogue, SIZES["tiny"], rng)
    assert (np.diff(users) >= 0).all()
    same_user = users[1:] == users[:-1]
    assert (np.diff(times)[same_user] > 0).all()
    pairs = users * catalogue.n_items + items
    assert np.unique(pairs).shape[0] == pairs.shape[0]


def test_item_popularity_is_skewed_within_a_category(small: Dataset) -> None:
    popularity = np.bincount(_interaction_items(small), minlength=small.n_items)
    members = np.flatnonzero(small.item_labels == small.target_category)
    counts = np.sort(popularity[members])[::-1]
    top_decile = counts[: max(1, counts.shape[0] // 10)].sum() / counts.sum()
    # Uniform popularity would give 0.10; the power law (exponent 0.5) about 0.25.
    assert top_decile > 0.2


def test_popular_items_share_a_look(small: Dataset) -> None:
    """Within a category, the more interacted items are the brighter ones (the AIP study's hook relies on it)."""
    from scipy.stats import spearmanr

    popularity = np.bincount(_interaction_items(small), minlength=small.n_items)
    # Brightness as drawn is the HSV value of the item's colour: max(R, G, B) of its dominant colour.
    catalogue_rng = np.random.default_rng(np.random.SeedSequence(0).spawn(3)[0])
    brightness = draw_catalogue(small.n_items, catalogue_rng).rgb.max(axis=1)
    rhos = []
    for category in range(len(small.category_names)):
        members = np.flatnonzero(small.item_labels == category)
        rhos.append(spearmanr(popularity[members], brightness[members]).statistic)
    # The style weight is 0.8 on the rank score; the sampled counts blur it.
    assert min(rhos) > 0.2 and float(np.mean(rhos)) > 0.4


def test_the_style_weight_moves_popularity_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Items keep their looks whatever the style weight: only which of them are popular changes."""
    styled = draw_catalogue(240, np.random.default_rng(3))
    monkeypatch.setattr(synthetic, "_STYLE_WEIGHT", 0.0)
    plain = draw_catalogue(240, np.random.default_rng(3))
    for field in ("labels", "colours", "rgb", "background", "textures", "texture_params", "poses"):
        np.testing.assert_array_equal(getattr(styled, field), getattr(plain, field))
    assert not np.allclose(styled.popularity, plain.popularity)
    np.testing.assert_allclose(np.bincount(plain.labels, weights=plain.popularity), 1.0)


def test_images_do_not_depend_on_threads_or_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same catalogue and seed draw the same pixels on a laptop and on a 16-core GPU machine."""
    catalogue = synthetic.draw_catalogue(40, np.random.default_rng(3))
    reference = synthetic.render_images(catalogue, 24, np.random.default_rng(4), threads=1)
    monkeypatch.setattr(synthetic, "_RENDER_CHUNK", 7)  # chunks that split the catalogue unevenly
    assert np.array_equal(synthetic.render_images(catalogue, 24, np.random.default_rng(4), threads=3), reference)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # a Ray task's CPU count
    assert synthetic.render_threads() == 2
    assert np.array_equal(synthetic.render_images(catalogue, 24, np.random.default_rng(4)), reference)


def test_registered_source_loads_the_generated_dataset(tiny: Dataset) -> None:
    config = SyntheticData.Config(size="tiny", seed=0)
    loaded = DATASETS.build(config).load()
    assert DATASETS.get("synthetic") is SyntheticData
    assert loaded.name == "synthetic-tiny"
    np.testing.assert_array_equal(loaded.images, tiny.images)
    np.testing.assert_array_equal(loaded.train_items, tiny.train_items)


def test_config_is_strict() -> None:
    assert SyntheticData.Config().size == "small"
    with pytest.raises(ValidationError):
        SyntheticData.Config(size="huge")
    with pytest.raises(ValidationError):
        SyntheticData.Config(image_size=8)
    with pytest.raises(ValidationError):
        SyntheticData.Config(sizes="tiny")


def test_unknown_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="tiny"):
        generate("huge")
