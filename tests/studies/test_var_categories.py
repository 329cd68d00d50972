"""Origin and target categories of the VAR study: automatic selection, fixed choices, which items are attacked."""

from __future__ import annotations

import numpy as np
import pytest

from raygrid.config.loader import build_grid
from raygrid.errors import ConfigError
from raygrid.pipeline import LocalResolver, StageCache
from raygrid.pipeline.spec import StageContext
from raygrid.studies.var import (
    CatalogueFeatures,
    Ranking,
    TrainedExtractor,
    select_categories_stage,
    var_trial_graph,
)
from tests.conftest import tiny_grid_document

NAMES = ("a", "b", "c", "d", "e")


def run(classes: np.ndarray, tops: list[np.ndarray], **categories) -> tuple:
    """The selection over one extractor's classes and several rankings (one per recommender)."""
    extractor = TrainedExtractor({"name": "smallcnn"}, NAMES, {})
    inputs = {"extractor_0": extractor, "features_0": CatalogueFeatures(np.zeros((len(classes), 2)), classes)}
    runs = {}
    for i, top in enumerate(tops):
        inputs[f"ranking_{i}"] = Ranking(top.astype(np.int32), {})
        runs[f"ranking_{i}"] = "features_0"
    cfg = {"origin": None, "target": None, "target_multiple": 4.0, "min_items": 2, "k": 4, **categories}
    choice = select_categories_stage({"categories": cfg, "runs": runs}, inputs, StageContext())
    return choice.origin, choice.target, choice


# Items 0-1: a, 2-3: b, 4-5: c, 6-7: d, 8: e (one item only).
CLASSES = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4])


def test_origin_is_the_least_recommended_category_and_target_the_one_nearest_four_times_it():
    # Two users x top-4 in each of two runs: 16 slots; a category's CHR@4 is its share of them.
    run_1 = np.array([[0, 2, 2, 8], [2, 4, 6, 8]])
    run_2 = np.array([[3, 3, 4, 5], [2, 7, 8, 5]])
    origin, target, choice = run(CLASSES, [run_1, run_2])
    shares = {row["category"]: row["chr_4"] for row in choice.rows}
    expected = {c: 0.0 for c in NAMES}
    for top in (run_1, run_2):
        for item in top.ravel():
            expected[NAMES[CLASSES[item]]] += 1 / 16
    assert expected == {"a": 1 / 16, "b": 6 / 16, "c": 4 / 16, "d": 2 / 16, "e": 3 / 16}
    assert shares == pytest.approx(expected)
    assert origin == "a"  # the lowest CHR@4 (1/16) among categories with >= 2 items; e has one item
    eligible = {c: v for c, v in expected.items() if c not in ("a", "e")}
    assert target == min(eligible, key=lambda c: abs(eligible[c] - 4 * expected["a"]))
    assert choice.metrics["selection_runs"] == 2
    assert choice.metrics["selection_ratio"] == pytest.approx(expected[target] / expected["a"])
    assert [row["role"] for row in choice.rows if row["role"]] == ["origin", "target"]
    assert choice.csv().decode().splitlines()[0] == "category,items,chr_4,role"


def test_a_fixed_origin_is_kept_and_only_the_target_is_chosen():
    top = np.array([[2, 4, 6, 0], [2, 4, 4, 6]])  # a 1, b 2, c 3, d 2
    origin, target, _ = run(CLASSES, [top], origin="a", target_multiple=3.0)
    assert (origin, target) == ("a", "c")


def test_no_eligible_category_is_a_clear_error():
    top = np.array([[2, 4, 6, 0]])
    with pytest.raises(ConfigError, match="lower categories.min_items or set categories.origin"):
        run(CLASSES, [top], min_items=5)
    with pytest.raises(ConfigError, match="categories.origin: unknown category 'zz'"):
        run(CLASSES, [top], origin="zz")


@pytest.fixture(scope="module")
def grid():
    doc = tiny_grid_document(
        grid={
            "attack": [{"name": "none"}, {"name": "fgsm", "eps": 8}],
            "recommender": [{"name": "vbpr", "factors": 8, "visual_factors": 8, "epochs": 3}, {"name": "bprmf", "epochs": 3}],
        }
    )
    return build_grid(doc)


def graphs(grid):
    peers = [t.config for t in grid.trials]
    return {t.name: var_trial_graph(t.config, None, peers) for t in grid.trials}


def test_selection_compares_every_clean_run_of_the_grid_and_shares_them_with_the_no_attack_trials(grid):
    by_name = graphs(grid)
    selections = {g.inputs["categories"].key for g in by_name.values()}
    assert len(selections) == 1  # one choice for the whole grid
    selection = next(iter(by_name.values())).inputs["categories"]
    clean_runs = {spec.key for name, spec in selection.inputs.items() if name.startswith("ranking_")}
    assert len(clean_runs) == 2  # one extractor x two recommenders
    no_attack = {g.inputs["ranking"].key for name, g in by_name.items() if name.startswith("none")}
    assert no_attack == clean_runs
    # The grid's order does not change the selection's key.
    reordered = build_grid({**grid.document, "grid": dict(reversed(list(grid.document["grid"].items())))})
    assert {g.inputs["categories"].key for g in graphs(reordered).values()} == selections


def test_fixed_categories_need_no_selection(grid):
    doc = {**grid.document, "categories": {"origin": "sandal", "target": "running shoe"}}
    assert all("categories" not in g.inputs for g in graphs(build_grid(doc)).values())
    doc = {**grid.document, "categories": {"selection": "dataset"}}
    assert all("categories" not in g.inputs for g in graphs(build_grid(doc)).values())


def test_classify_with_picks_the_attacked_items_by_another_extractor(tmp_path):
    doc = tiny_grid_document(
        categories={"origin": "sandal", "target": "running shoe", "classify_with": {"name": "smallcnn", "width": 8, "epochs": 2}},
        grid={"attack": [{"name": "fgsm", "eps": 8}]},
    )
    trial = build_grid(doc).trials[0]
    graph = var_trial_graph(trial.config)
    attack = graph.inputs["attack"]
    assert attack.inputs["classifier"].key != attack.inputs["extractor"].key
    resolver = LocalResolver(StageCache(tmp_path))
    adversarial = resolver.resolve(attack)
    classified = resolver.resolve(attack.inputs["classified"])
    origin = adversarial.origin
    np.testing.assert_array_equal(adversarial.items, np.flatnonzero(classified.classes == origin))

    bad = tiny_grid_document(categories={"origin": "sandal", "target": "running shoe", "classify_with": {"name": "nope"}})
    with pytest.raises(ConfigError, match="categories.classify_with: unknown extractor 'nope'"):
        var_trial_graph(build_grid(bad).trials[0].config)
