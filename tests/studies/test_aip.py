"""The AIP study: config errors, cold items, the two-stage protocol, and a tiny trial end to end."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from raygrid.config.loader import build_grid
from raygrid.data.synthetic import generate
from raygrid.errors import ConfigError
from raygrid.metrics.coldstart import injected_hit_ratio, two_stage_evaluation
from raygrid.pipeline import LocalResolver, StageCache
from raygrid.pipeline.spec import StageContext
from raygrid.studies import STUDIES
from raygrid.studies.aip import aip_trial_graph, cold_split_stage
from tests.conftest import tiny_grid_document


def aip_document(**overrides):
    doc = tiny_grid_document(
        "aip_tiny",
        study="aip",
        aip={"cold_items": 12, "candidates": 40, "first_stage": {"epochs": 5}},
        recommender={"name": "vbpr", "factors": 8, "visual_factors": 8, "epochs": 3},
        metrics={},
        extractor={"name": "smallcnn", "width": 8, "epochs": 2},
        grid={"attack": [{"name": "insa", "steps": 5}, {"name": "csema"}]},
    )
    doc.update(overrides)
    return doc


# --------------------------------------------------------------------------- config


def test_study_is_registered():
    assert STUDIES["aip"] is aip_trial_graph


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"study": "var", "grid": {"attack": [{"name": "insa"}]}}, "attack 'insa' belongs to the aip study"),
        ({"grid": {"attack": [{"name": "pgd"}]}}, "attack 'pgd' is a VAR attack"),
        ({"categories": {"origin": "sandal"}}, "categories .* belong to the VAR study"),
        ({"metrics": {"cutoffs": [5]}}, "aip.cutoffs"),
        ({"study": "var", "grid": {"attack": [{"name": "none"}]}}, "the aip section configures the AIP study only"),
        ({"aip": {"candidates": 0}}, "aip.candidates"),
    ],
)
def test_settings_of_the_other_study_are_refused_in_one_line(change, message):
    with pytest.raises(ConfigError, match=message) as info:
        build_grid(aip_document(**change))
    assert "\n" not in str(info.value)


def test_a_ranker_outside_the_paper_is_refused():
    grid = build_grid(aip_document(recommender={"name": "fm"}))
    with pytest.raises(ConfigError, match="recommender 'fm' is no AIP ranker; choose one of: alexrank, vbpr, amr, dvbpr"):
        aip_trial_graph(grid.trials[0].config)


def test_insa_exp_objective_is_refused_outside_dvbpr():
    grid = build_grid(aip_document(grid={"attack": [{"name": "insa", "transform": "exp"}]}))
    with pytest.raises(ConfigError, match="exp is the paper's DVBPR objective"):
        aip_trial_graph(grid.trials[0].config)


# --------------------------------------------------------------------------- cold items


@pytest.fixture(scope="module")
def tiny_data():
    return generate("tiny")


def test_cold_items_never_appear_in_training_and_the_hook_is_the_most_popular(tiny_data):
    split = cold_split_stage({"cold_items": 30, "hook_item": None, "seed": 0}, {"dataset": tiny_data}, StageContext())
    assert split.cold_items.size == 30 and np.unique(split.cold_items).size == 30
    assert not np.isin(split.train_items, split.cold_items).any()
    assert not np.isin(split.test_items, split.cold_items).any()
    kept = ~np.isin(tiny_data.train_items, split.cold_items)
    assert split.train_items.size == kept.sum()
    assert split.metrics["cold_dropped_interactions"] == (~kept).sum() > 0
    popularity = np.bincount(split.train_items, minlength=tiny_data.n_items)
    assert popularity[split.hook_item] == popularity.max() and split.hook_item not in split.cold_items
    assert split.info["hook_category"] in tiny_data.category_names


def test_cold_item_settings_are_checked(tiny_data):
    from dataclasses import replace

    ctx = StageContext()
    with pytest.raises(ConfigError, match="hold out at most 120"):
        cold_split_stage({"cold_items": 200, "hook_item": None, "seed": 0}, {"dataset": tiny_data}, ctx)
    own = replace(tiny_data, cold_items=np.array([3, 5]))
    with pytest.raises(ConfigError, match="remove aip.cold_items"):
        cold_split_stage({"cold_items": 10, "hook_item": None, "seed": 0}, {"dataset": own}, ctx)
    with pytest.raises(ConfigError, match="is a cold item"):
        cold_split_stage({"cold_items": None, "hook_item": 3, "seed": 0}, {"dataset": own}, ctx)
    with pytest.raises(ConfigError, match="outside"):
        cold_split_stage({"cold_items": 5, "hook_item": 999, "seed": 0}, {"dataset": tiny_data}, ctx)


# --------------------------------------------------------------------------- the protocol


class TableRecommender:
    """A fake ranker whose 'content' is the score table itself: score(users, table) = table[users]."""

    @contextlib.contextmanager
    def _scoring_session(self, content):
        yield

    def score(self, users, content):
        return torch.as_tensor(content[users], dtype=torch.float32)


def test_two_stage_ranking_by_hand():
    # 2 users, 6 items. Candidates: items 0-2; test items 3 (user 0) and 0... no: user 1's test is 4.
    # Cold items 5 (one cold item, m = 1). Each set has C + 2 = 5 items.
    coop = np.array([
        [5.0, 4.0, 3.0, 2.0, 0.0, 1.0],  # user 0: cold (1.0) ranks 5th (below test 2.0); test ranks 4th
        [1.0, 2.0, 3.0, 0.0, 9.0, 2.5],  # user 1: cold (2.5) ranks 3rd; test (9.0) 1st
    ])
    adv = coop.copy()
    adv[:, 5] = [4.0, 10.0]  # user 0: tie with item 1 -> cold ranks 3rd (ties against it); user 1: 1st
    candidates = np.array([[0, 1, 2], [0, 1, 2]])
    tests = np.array([3, 4])
    result = two_stage_evaluation(TableRecommender(), np.array([0, 1]), candidates, tests, np.array([5]), coop, adv,
                                  cutoffs=(1, 3, 4))
    assert result.cold_hr_coop[3].tolist() == [0.5] and result.cold_hr_coop[1].tolist() == [0.0]
    assert result.cold_hr_adv[1].tolist() == [0.5] and result.cold_hr_adv[3].tolist() == [1.0]
    assert result.mean_rank_coop.tolist() == [4.0] and result.mean_rank_adv.tolist() == [2.0]
    assert result.shift.tolist() == [pytest.approx(((4 - 1) + (10 - 2.5)) / 2)]
    # Test items: user 0 ranks 4th without a cold item, 5th with the adversarial one; user 1 1st, then 2nd.
    assert result.test_hr == {1: 0.5, 3: 0.5, 4: 1.0}
    assert result.availability_coop[4].tolist() == [1.0] and result.availability_adv[4].tolist() == [0.5]
    assert result.availability_adv[1].tolist() == [0.0]


def test_injected_hit_ratio_is_the_two_stage_protocol_for_one_content():
    table = np.array([
        [5.0, 4.0, 3.0, 2.0, 0.0, 4.0, 9.0],  # user 0: cold 5 ties item 1 -> 3rd; cold 6 -> 1st
        [1.0, 2.0, 3.0, 0.0, 9.0, 2.5, 0.5],  # user 1: cold 5 -> 3rd; cold 6 -> 5th (last)
    ])
    candidates, tests, cold = np.array([[0, 1, 2], [0, 1, 2]]), np.array([3, 4]), np.array([5, 6])
    hr = injected_hit_ratio(TableRecommender(), np.array([0, 1]), candidates, tests, cold, table, cutoffs=(1, 3))
    assert hr[1].tolist() == [0.0, 0.5] and hr[3].tolist() == [1.0, 0.5]
    full = two_stage_evaluation(TableRecommender(), np.array([0, 1]), candidates, tests, cold, table, lambda: table,
                                cutoffs=(1, 3))
    assert all(np.array_equal(hr[k], full.cold_hr_adv[k]) for k in (1, 3))


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    grid = build_grid(aip_document(
        grid={"attack": [{"name": "insa", "steps": 20, "lr": 0.01}, {"name": "csema"}],
              "defense": [{"name": "none"}, {"name": "jpeg", "quality": 90, "apply_to": "attacked"}]},
    ))
    resolver = LocalResolver(StageCache(tmp_path_factory.mktemp("aip_cache")))
    outcomes = {t.name: resolver.resolve(aip_trial_graph(t.config)) for t in grid.trials}
    return grid, outcomes, resolver


def test_tiny_trials_share_their_products_and_log_the_papers_numbers(run):
    _, outcomes, resolver = run
    computed = {row["stage"]: row["computed"] for row in resolver.ledger.rows()}
    assert computed == {"dataset": 1, "aip_cold": 1, "aip_candidates": 1, "extractor": 1, "features": 1,
                        "aip_ranker": 1, "aip_attack": 2, "aip_hook_ceiling": 1, "aip_evaluate": 4}
    for outcome in outcomes.values():
        m = outcome.metrics
        for k in (5, 10, 20):
            for name in (f"cold_hr_{k}_cooperative", f"cold_hr_{k}_adversarial", f"ttest_p_cold_hr_{k}",
                         f"test_hr_{k}", f"availability_hr_{k}_cooperative", f"availability_hr_{k}_adversarial"):
                assert 0.0 <= m[name] <= 1.0 or np.isnan(m[name]), name
        assert m["n_cold"] == 12 and m["candidates"] == 40
        assert "prediction_shift" in m and "ttest_p_prediction_shift" in m
        assert outcome.info["study"] == "aip" and outcome.info["ranker"] == "vbpr"
        assert "aip/per_item.csv" in outcome.artifacts
    insa = outcomes["insa_steps20_lr0.01-none"].metrics
    assert 0 < insa["linf_realised_max"] <= 32 and insa["prediction_shift"] > 0
    csema = outcomes["csema-none"]
    assert csema.info["csema_text"].startswith("match your ")
    # The hook attacks log their ceiling, one per platform whatever the attack's defense;
    # INSA, which uses no hook, does not.
    assert 0.0 <= csema.metrics["hook_hr_5"] <= 1.0 and "hook_hr_5" not in insa
    assert outcomes["csema-jpeg_quality90_apply_toattacked"].metrics["hook_hr_5"] == csema.metrics["hook_hr_5"]


def test_candidates_hold_no_seen_cold_or_test_item(run):
    grid, _, resolver = run
    graph = aip_trial_graph(grid.trials[0].config)
    nodes = {n.stage: n for n in graph.walk()}
    cands, split = resolver.handles[nodes["aip_candidates"].key], resolver.handles[nodes["aip_cold"].key]
    assert cands.items.shape == (cands.users.size, 40)
    assert not np.isin(cands.items, split.cold_items).any()
    assert not (cands.items == cands.test_items[:, None]).any()
    seen = set(zip(split.train_users.tolist(), split.train_items.tolist()))
    assert not any((u, i) in seen for u, row in zip(cands.users.tolist(), cands.items.tolist()) for i in row)
