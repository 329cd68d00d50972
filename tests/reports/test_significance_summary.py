"""Paired tests of attacked trials against their no-attack twins, as the runner logs them."""

import numpy as np

from raygrid.config.loader import build_grid
from raygrid.pipeline.outcome import TrialOutcome
from raygrid.reports.summary import attack_baselines, twin_significance
from tests.conftest import tiny_grid_document


def outcome(recall: np.ndarray) -> TrialOutcome:
    per_user = {"recall_20": recall, "hr_20": recall, "chr_20": np.full(recall.size, 0.1), "chr_count_20": np.ones(recall.size)}
    return TrialOutcome(metrics={}, per_user=per_user, artifacts={})


def test_attacked_trials_are_tested_against_their_twin_and_twins_get_nothing():
    grid = build_grid(tiny_grid_document())
    baselines = attack_baselines(grid)
    rng = np.random.default_rng(0)
    clean = (rng.random(50) < 0.3).astype(float)
    attacked = clean.copy()
    attacked[:20] = 0.0  # the attack costs some users their hit
    outcomes = {"none": outcome(clean), "fgsm_eps8": outcome(attacked), "pgd_eps8_steps3": outcome(clean)}
    results = twin_significance(outcomes, baselines)
    assert set(results) == {"fgsm_eps8", "pgd_eps8_steps3"}
    fgsm = results["fgsm_eps8"]
    # HR and the CHR count repeat Recall and CHR per user: not tested twice
    assert set(fgsm) == {f"{t}_{m}" for t in ("ttest_p", "wilcoxon_p", "delta") for m in ("recall_20", "chr_20")}
    assert fgsm["delta_recall_20"] < 0 and fgsm["ttest_p_recall_20"] < 0.05
    assert results["pgd_eps8_steps3"]["ttest_p_recall_20"] == 1.0  # identical per-user values
    assert twin_significance({"fgsm_eps8": outcome(attacked)}, baselines) == {}  # twin missing: skipped


def _render(table) -> str:
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_the_trials_table_names_the_node_on_a_cluster_and_hides_it_on_a_laptop():
    from raygrid.reports.summary import trials_table

    rows = [
        {"trial": "a", "status": "FINISHED", "chr_20": 0.1, "node": "1a2b3c4d (10.0.0.1)", "attempts": 1},
        {"trial": "b", "status": "FINISHED", "chr_20": 0.2, "node": "9f8e7d6c (10.0.0.2)", "attempts": 2},
    ]
    text = _render(trials_table(rows, ["chr_20"]))
    assert "node" in text and "1a2b3c4d (10.0.0.1)" in text and "9f8e7d6c (10.0.0.2)" in text
    assert "attempts" in text
    laptop = [dict(row, node="1a2b3c4d (10.0.0.1)", attempts=1) for row in rows]
    text = _render(trials_table(laptop, ["chr_20"]))
    assert "node" not in text and "attempts" not in text and "10.0.0.1" not in text


def test_the_trials_table_shows_the_metrics_the_grid_logged():
    from raygrid.grid.runner import KEY_METRICS
    from raygrid.reports.summary import trials_table

    aip = [{"trial": "vbpr-insa-none", "status": "FINISHED", "cold_hr_5_cooperative": 0.014, "cold_hr_5_adversarial": 0.394}]
    text = _render(trials_table(aip, KEY_METRICS))
    assert "HR@5 coop" in text and "0.3940" in text
    assert "SR" not in text and "chr_20" not in text
