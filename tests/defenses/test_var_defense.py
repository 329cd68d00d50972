"""Defenses in the VAR stage graph: what each trial's extractor sees, and what is shared."""

from __future__ import annotations

import io

import numpy as np
import pytest

from raygrid.config.loader import build_grid
from raygrid.defenses import build_defense
from raygrid.extractors.extract import extract
from raygrid.pipeline import LocalResolver, StageCache
from raygrid.studies.var import var_trial_graph
from tests.conftest import tiny_grid_document

DEFENSES = [
    {"name": "none"},
    {"name": "jpeg", "quality": 30},
    {"name": "bit_depth", "bits": 3, "apply_to": "attacked"},
]


@pytest.fixture(scope="module")
def grid():
    # Fixed categories: these tests look at the attack and the defenses, not at category selection.
    document = tiny_grid_document(categories={"origin": "sandal", "target": "running shoe"})
    document["grid"] = {"attack": [{"name": "none"}, {"name": "fgsm", "eps": 8}], "defense": DEFENSES}
    return build_grid(document)


def trial(grid, attack: str, defense: str):
    (found,) = [t for t in grid.trials if t.config.attack.name == attack and t.config.defense.name == defense]
    return found


def nodes(spec):
    return {(n.stage, "defense" in n.params): n for n in spec.walk()}


@pytest.fixture(scope="module")
def resolved(grid, tmp_path_factory):
    """The catalogue each trial's recommender trains on (features with the attack's patch), plus shared products."""
    resolver = LocalResolver(StageCache(tmp_path_factory.mktemp("cache")))
    values = {}
    for t in grid.trials:
        graph = var_trial_graph(t.config)
        patch = resolver.resolve(graph.inputs["features"])
        catalogue = resolver.resolve(graph.inputs["ranking"].inputs["features"])
        values[(t.config.attack.name, t.config.defense.name)] = patch.apply(catalogue)
    graph = var_trial_graph(trial(grid, "fgsm", "none").config)
    shared = {name: resolver.resolve(graph.inputs[name]) for name in ("dataset", "extractor", "attack")}
    shared["clean"] = resolver.resolve(graph.inputs["features"].inputs["features"])
    return values, shared, resolver


def test_defense_params_key_only_the_stages_after_the_attack(grid):
    by_defense = {d["name"]: nodes(var_trial_graph(trial(grid, "fgsm", d["name"]).config)) for d in DEFENSES}
    for stage in ("dataset", "extractor", "attack"):
        assert len({n[(stage, False)].key for n in by_defense.values()}) == 1
    assert len({n[("features", False)].key for n in by_defense.values()}) == 1  # what the attacker saw
    assert len({n[("attacked_features", d != "none")].key for d, n in by_defense.items()}) == 3
    # a defended catalogue only where the defense applies to every image
    assert ("features", True) in by_defense["jpeg"]
    assert ("features", True) not in by_defense["bit_depth"] and ("features", True) not in by_defense["none"]
    # the defended catalogue is shared by every attack of the same defense
    none_jpeg = nodes(var_trial_graph(trial(grid, "none", "jpeg").config))
    assert none_jpeg[("features", True)].key == by_defense["jpeg"][("features", True)].key


def test_attacked_features_store_only_the_attacked_rows(grid, resolved):
    _, shared, resolver = resolved
    for defense in ("none", "jpeg", "bit_depth"):
        patch = resolver.resolve(var_trial_graph(trial(grid, "fgsm", defense).config).inputs["features"])
        assert np.array_equal(patch.items, shared["attack"].items)
        assert patch.features.shape == (len(shared["attack"].items), shared["clean"].features.shape[1])
        assert len(patch.items) < shared["dataset"].n_items


def test_no_defense_keeps_the_undefended_graph(grid):
    graph = var_trial_graph(trial(grid, "fgsm", "none").config)
    assert dict(graph.inputs["features"].params) == {}


def test_defense_all_extracts_every_item_from_defended_images(resolved):
    values, shared, _ = resolved
    dataset, model = shared["dataset"], shared["extractor"].build()
    defense = build_defense(DEFENSES[1])
    expected, _ = extract(model, defense(dataset.images))
    attacked = shared["attack"]
    others = np.setdiff1d(np.arange(dataset.n_items), attacked.items[attacked.changed])
    got = values[("fgsm", "jpeg")]
    np.testing.assert_allclose(got.features[others], expected[others], rtol=1e-5, atol=1e-5)
    changed = attacked.items[attacked.changed]
    assert len(changed)
    adv_expected, _ = extract(model, defense(attacked.images[attacked.changed]))
    np.testing.assert_allclose(got.features[changed], adv_expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(got.features[others], shared["clean"].features[others])  # the defense did something


def test_defense_on_attacked_items_only_leaves_the_rest_undefended(resolved):
    values, shared, _ = resolved
    dataset, model = shared["dataset"], shared["extractor"].build()
    attacked = shared["attack"]
    got = values[("fgsm", "bit_depth")]
    others = np.setdiff1d(np.arange(dataset.n_items), attacked.items)
    assert np.array_equal(got.features[others], shared["clean"].features[others])
    defense = build_defense(DEFENSES[2])
    expected, _ = extract(model, defense(attacked.images))
    np.testing.assert_allclose(got.features[attacked.items], expected, rtol=1e-5, atol=1e-5)


def test_feature_loss_is_zero_without_an_attack_under_any_defense(resolved):
    values, _, _ = resolved
    for defense in DEFENSES:
        clean = values[("none", defense["name"])]
        assert clean.metrics["feature_loss"] == 0.0 and clean.metrics["feature_rmse"] == 0.0
        attacked = values[("fgsm", defense["name"])]
        assert attacked.metrics["feature_loss"] > 0 and attacked.metrics["feature_rmse"] > 0
        assert ("success_rate_defended" in attacked.metrics) == (defense["name"] != "none")
        assert 0 <= attacked.metrics.get("success_rate_defended", 0) <= 1


def test_each_product_is_computed_once(resolved):
    _, _, resolver = resolved
    computed = {row["stage"]: row["computed"] for row in resolver.ledger.rows()}
    # features: the undefended catalogue, plus the JPEG-defended one (shared by both attacks)
    assert computed == {"dataset": 1, "extractor": 1, "features": 2, "attack": 2, "attacked_features": 6}


def test_trial_outcome_carries_the_adversarial_image_archive(grid, tmp_path):
    resolver = LocalResolver(StageCache(tmp_path))
    outcome = resolver.resolve(var_trial_graph(trial(grid, "fgsm", "jpeg").config))
    attacked = resolver.resolve(var_trial_graph(trial(grid, "fgsm", "jpeg").config).inputs["attack"])
    archive = np.load(io.BytesIO(outcome.artifacts["attack/adversarial_images.npz"]))
    assert np.array_equal(archive["items"], attacked.items)
    assert np.array_equal(archive["images"], attacked.images)
    assert str(archive["origin"]) == "sandal" and str(archive["target"]) == "running shoe"
    for name in ("feature_loss", "feature_rmse", "success_rate", "success_rate_defended", "l2_realised_mean"):
        assert name in outcome.metrics
    clean = LocalResolver(StageCache(tmp_path)).resolve(var_trial_graph(trial(grid, "none", "none").config))
    assert "attack/adversarial_images.npz" not in clean.artifacts
