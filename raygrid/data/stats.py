"""Dataset statistics in the layout of the VAR paper's Table 1.

Table 1 of the VAR paper gives, per dataset, the k-core setting, the number of
users ``|U|``, items ``|I|`` and feedbacks ``|S|``, and the density
``|S| / (|U| |I|)``. :func:`dataset_stats` computes those (and, when item
categories are known, items and interactions per category) as a flat mapping of
floats, ready for MLflow metrics; :func:`table1_rows` lays several datasets
out as the paper does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from raygrid.data.dataset import Dataset

TABLE1_COLUMNS: tuple[str, ...] = ("Dataset", "k-cores", "|U|", "|I|", "|S|", "density")
"""Column headers of Table 1."""


def metric_safe(name: str) -> str:
    """``name`` with only the characters MLflow accepts in a metric name."""
    return re.sub(r"[^A-Za-z0-9_.\- /]+", "_", name).strip() or "_"


def dataset_stats(dataset: Dataset) -> dict[str, float]:
    """Counts of ``dataset``, merged over the preprocessing counts it carries.

    Keys: ``users``, ``items``, ``interactions`` (training + validation + test
    feedbacks, the paper's ``|S|``), ``train_interactions``, ``density``,
    ``cold_items``; ``k_core`` when preprocessing recorded it; and with
    known categories ``category_items/<name>`` and ``category_interactions/<name>``.
    """
    held_test = int(np.count_nonzero(dataset.test_items >= 0))
    held_val = 0 if dataset.validation_items is None else int(np.count_nonzero(dataset.validation_items >= 0))
    interactions = dataset.n_train + held_test + held_val
    stats: dict[str, float] = dict(dataset.stats)
    stats.update(
        {
            "users": float(dataset.n_users),
            "items": float(dataset.n_items),
            "interactions": float(interactions),
            "train_interactions": float(dataset.n_train),
            "density": interactions / (dataset.n_users * dataset.n_items) if dataset.n_users and dataset.n_items else 0.0,
            "cold_items": float(0 if dataset.cold_items is None else len(dataset.cold_items)),
        }
    )
    labels = dataset.item_labels
    if dataset.category_names and np.any(labels >= 0):
        held_items = np.concatenate(
            [dataset.train_items, dataset.test_items[dataset.test_items >= 0]]
            + ([] if dataset.validation_items is None else [dataset.validation_items[dataset.validation_items >= 0]])
        )
        per_item = np.bincount(held_items, minlength=dataset.n_items)
        known = labels >= 0
        n_cat = len(dataset.category_names)
        items_per = np.bincount(labels[known], minlength=n_cat)
        inter_per = np.bincount(labels[known], weights=per_item[known], minlength=n_cat)
        for c, name in enumerate(dataset.category_names):
            stats[f"category_items/{metric_safe(name)}"] = float(items_per[c])
            stats[f"category_interactions/{metric_safe(name)}"] = float(inter_per[c])
    return stats


def table1_rows(named_stats: Sequence[tuple[str, Mapping[str, float]]]) -> list[tuple[str, ...]]:
    """One row of Table 1 per ``(dataset name, stats)``, formatted as the paper prints it."""
    rows = []
    for name, stats in named_stats:
        k = int(stats.get("k_core", 0))
        rows.append(
            (
                name,
                str(k) if k else "-",
                f"{int(stats['users']):,}",
                f"{int(stats['items']):,}",
                f"{int(stats['interactions']):,}",
                f"{stats['density']:.6f}",
            )
        )
    return rows


def category_rows(stats: Mapping[str, float]) -> list[tuple[str, int, int]]:
    """``(category, items, interactions)`` per category, most interacted first; empty without categories."""
    rows = [
        (key.split("/", 1)[1], int(value), int(stats.get(f"category_interactions/{key.split('/', 1)[1]}", 0)))
        for key, value in stats.items()
        if key.startswith("category_items/")
    ]
    return sorted(rows, key=lambda r: (-r[2], r[0]))
