"""Fabricated VAR grid sessions in MLflow: runs with known metric values, written through GridTracker.

Fast and deterministic: no Ray, no training. ``FL`` grows with the attack and
shrinks on the adversarially trained extractor, ΔCHR@20 grows with FL, and SR is
high on the robust extractor too, so the report's rank correlations differ.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from raygrid.config.loader import GridSpec, build_grid
from raygrid.grid.runner import trial_tags
from raygrid.tracking.store import GridTracker, flatten, resolve_tracking
from tests.conftest import tiny_grid_document

ORIGIN, TARGET = "sandal", "running shoe"

#: Per attack label: (SR on the standard extractor, FL on it, t-test p of CHR@20).
ATTACKS = {"none": (0.0, 0.0, None), "fgsm_eps8": (0.5, 2.0, 0.2), "pgd_eps8": (0.9, 8.0, 0.01)}
#: Per extractor label: (SR on it: None = the standard's, FL factor).
EXTRACTORS = {"standard": (None, 1.0), "adversarial": ({"none": 0.0, "fgsm_eps8": 0.95, "pgd_eps8": 0.99}, 0.01)}
#: Per recommender label: CHR@20 of the clean trial.
RECOMMENDERS = {"fm": 0.10, "vbpr": 0.05}


def var_document(name: str = "fab", **overrides: Any) -> dict[str, Any]:
    """A 2 x 3 x 2 VAR grid: extractor.training x attack x recommender (12 trials)."""
    doc = tiny_grid_document(name=name, study="var")
    doc["categories"] = {"origin": ORIGIN, "target": TARGET}
    doc["metrics"] = {"cutoffs": [20, 50]}
    doc["grid"] = {
        "extractor.training": ["standard", "adversarial"],
        "attack": [{"name": "none"}, {"name": "fgsm", "eps": 8}, {"name": "pgd", "eps": 8}],
        "recommender": [{"label": "fm", "name": "fm", "epochs": 1}, {"label": "vbpr", "name": "vbpr", "epochs": 1}],
    }
    doc.update(overrides)
    return doc


def known_metrics(extractor: str, attack: str, recommender: str) -> dict[str, float]:
    """The metric values the fabricated trial ``extractor``-``attack``-``recommender`` logs."""
    sr_std, fl_std, p = ATTACKS[attack]
    sr_table, fl_factor = EXTRACTORS[extractor]
    sr = sr_std if sr_table is None else sr_table[attack]
    fl = fl_std * fl_factor
    chr20 = RECOMMENDERS[recommender] + 0.01 * fl
    metrics = {
        "success_rate": sr,
        "feature_loss": fl,
        "chr_20": chr20,
        "chr_50": chr20 / 2,
        "ncdcg_20": chr20 * 1.5,
        "ncdcg_50": chr20 * 1.2,
        "recall_20": 0.3 - 0.001 * fl,
        "ndcg_20": 0.1 - 0.0005 * fl,
        "efd_20": 0.05,
        "gini_20": 0.7,
        "gini_diversity_20": 0.3,
        "item_coverage_20": 100.0 + fl,
        "n_attacked": 10.0,
    }
    if p is not None:
        metrics.update(
            {"ttest_p_chr_20": p, "wilcoxon_p_chr_20": p, "delta_chr_20": 0.01 * fl, "ttest_p_recall_20": 0.5}
        )
    return metrics


def fabricate(
    tracking: str,
    document: Mapping[str, Any],
    *,
    metrics: Callable[[Any], dict[str, float] | None] | None = None,
    status: Callable[[Any], str] | None = None,
    base: Path | None = None,
) -> tuple[GridTracker, str, str, GridSpec]:
    """Write a finished grid session of ``document`` to ``tracking``, as the runner would.

    Args:
        metrics: Trial -> the metrics it logs (default: :func:`known_metrics` by its labels).
        status: Trial -> its final status (default ``FINISHED``).

    Returns:
        The tracker, experiment id, grid run id and the grid.
    """
    grid = build_grid(dict(document), source="fabricated")
    tracker = GridTracker(resolve_tracking(tracking, base))
    experiment_id = tracker.experiment_id(grid.name)
    assert experiment_id is not None
    grid_run_id = tracker.start_grid_run(
        experiment_id,
        grid_name=grid.name,
        grid_hash=grid.grid_hash,
        grid_yaml=yaml.safe_dump(grid.document, sort_keys=False),
        path=None,
    )
    for trial in grid.trials:
        run_id = tracker.create_trial_run(
            experiment_id, grid_run_id, name=trial.name, tags=trial_tags(trial, grid), params=flatten(trial.config_dict)
        )
        final = status(trial) if status else "FINISHED"
        if final == "SCHEDULED":
            continue
        tracker.set_status(run_id, "RUNNING")
        if final == "FINISHED":
            values = (
                metrics(trial)
                if metrics
                else known_metrics(
                    trial.labels.get("extractor.training", "standard"),
                    trial.labels["attack"],
                    trial.labels.get("recommender", "vbpr"),
                )
            )
            tracker.log_trial(run_id, values or {}, {}, tags={"raygrid.origin": ORIGIN, "raygrid.target": TARGET})
            tracker.set_status(run_id, "FINISHED")
        else:
            tracker.set_status(run_id, final, error="simulated failure")
    tracker.set_status(grid_run_id, "FINISHED")
    return tracker, experiment_id, grid_run_id, grid
