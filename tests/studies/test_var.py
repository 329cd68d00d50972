"""The VAR trial as a stage graph, resolved in-process on tiny data."""

from __future__ import annotations

import pytest

from raygrid.config.loader import build_grid
from raygrid.errors import ConfigError
from raygrid.pipeline import LocalResolver, StageCache
from raygrid.studies.var import resolve_categories, var_trial_graph
from tests.conftest import tiny_grid_document


@pytest.fixture(scope="module")
def grid():
    return build_grid(tiny_grid_document())


@pytest.fixture(scope="module")
def outcomes(grid, tmp_path_factory):
    resolver = LocalResolver(StageCache(tmp_path_factory.mktemp("cache")))
    values = {t.name: resolver.resolve(var_trial_graph(t.config)) for t in grid.trials}
    return values, resolver


def nodes(trial):
    return {n.stage: n for n in var_trial_graph(trial.config).walk()}


def test_trials_share_every_product_upstream_of_their_attack(grid):
    a, b = (nodes(t) for t in grid.trials[:2])
    for stage in ("dataset", "extractor", "features"):
        assert a[stage].key == b[stage].key
    for stage in ("attack", "attacked_features", "ranking", "recommender"):
        assert a[stage].key != b[stage].key


def test_resources_reach_the_stage_tasks_but_not_the_keys(grid):
    trial = grid.trials[0]
    graph = var_trial_graph(trial.config, grid.settings.resources)
    assert graph.inputs["ranking"].gpu == 0.25 and graph.inputs["attack"].gpu == 0.5
    assert graph.key == var_trial_graph(trial.config).key


def test_gpu_shares_go_only_to_stages_that_work_on_the_gpu(grid):
    """LightFM trains on the CPU and the evaluation is numpy: neither holds a quarter GPU idle."""
    resources = grid.settings.resources
    vbpr = var_trial_graph(grid.trials[0].config, resources)
    fm_grid = build_grid(tiny_grid_document(recommender={"name": "fm", "epochs": 2}))
    fm = var_trial_graph(fm_grid.trials[0].config, fm_grid.settings.resources)
    assert vbpr.inputs["ranking"].gpu == 0.25 and fm.inputs["ranking"].gpu == 0.0
    assert fm.inputs["ranking"].cpu == vbpr.inputs["ranking"].cpu == resources.trial.cpu
    assert vbpr.gpu == fm.gpu == 0.0 and vbpr.cpu == resources.trial.cpu  # the evaluation


def test_each_shared_product_is_computed_once(outcomes):
    _, resolver = outcomes
    computed = {row["stage"]: row["computed"] for row in resolver.ledger.rows()}
    # The no-attack trial's ranking is the clean run that category selection trains: one fit.
    assert computed == {
        "dataset": 1, "extractor": 1, "features": 1, "ranking": 3, "categories": 1,
        "attack": 3, "attacked_features": 3, "recommender": 3,
    }


def test_no_attack_leaves_features_untouched_and_attacks_move_them(outcomes):
    values, _ = outcomes
    clean, fgsm, pgd = values["none"], values["fgsm_eps8"], values["pgd_eps8_steps3"]
    assert clean.metrics["feature_loss"] == 0.0 and clean.metrics["linf_realised_mean"] == 0.0
    for attacked in (fgsm, pgd):
        assert attacked.metrics["n_attacked"] == clean.metrics["n_attacked"] > 0
        assert attacked.metrics["feature_loss"] > 0
        assert 0 < attacked.metrics["linf_realised_max"] <= 8  # eps 8 in 0-255 units, on the stored images
        assert 0.0 <= attacked.metrics["success_rate"] <= 1.0
        assert "attack/preview.png" in attacked.artifacts
    assert "attack/preview.png" not in clean.artifacts


def test_outcome_has_the_papers_metrics_per_user_and_averaged(outcomes):
    values, _ = outcomes
    outcome = values["pgd_eps8_steps3"]
    for k in (5, 20):
        for name in ("recall", "ndcg", "chr", "chr_count", "ncdcg", "ncdcg_global"):
            assert f"{name}_{k}" in outcome.metrics
            assert outcome.per_user[f"{name}_{k}"].shape == (80,)
    assert outcome.metrics["chr_count_20"] == pytest.approx(20 * outcome.metrics["chr_20"])
    selection = outcome.artifacts["categories/selection.csv"].decode().splitlines()
    chosen = {line.split(",")[-1]: line.split(",")[0] for line in selection[1:] if not line.endswith(",")}
    assert outcome.info == {
        "origin": chosen["origin"], "target": chosen["target"], "n_attacked": int(outcome.metrics["n_attacked"])
    }
    assert outcome.metrics["selection_runs"] == 1  # one extractor x one recommender on this grid


def test_unknown_categories_name_the_choices():
    class Data:
        name, origin_category, target_category = "d", None, None

    names = ("sandal", "running shoe")
    with pytest.raises(ConfigError, match="categories.origin: unknown category 'boot'; choose one of: sandal, running shoe"):
        resolve_categories({"origin": "boot", "target": "sandal"}, names, Data())
    with pytest.raises(ConfigError, match="suggests no origin category"):
        resolve_categories({"origin": None, "target": "sandal"}, names, Data())
    assert resolve_categories({"origin": "sandal", "target": "running shoe"}, names, Data()) == (0, 1)
