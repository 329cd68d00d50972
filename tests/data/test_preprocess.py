"""Preprocessing: k-core variants, the validation split, statistics."""

from __future__ import annotations

import numpy as np

from raygrid.data.preprocess import k_core_mask
from raygrid.data.split import temporal_leave_one_out, temporal_split
from raygrid.data.stats import category_rows, dataset_stats, table1_rows
from raygrid.data.synthetic import generate


def _chain() -> tuple[np.ndarray, np.ndarray]:
    """Users 0-2 interact with items 0-1 (a 2-core); user 3 with items 1 and 2; item 2 has one more user (4)."""
    pairs = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (3, 1), (3, 2), (4, 2)]
    users, items = (np.array(c) for c in zip(*pairs))
    return users, items


def test_iterative_k_core_is_stable() -> None:
    users, items = _chain()
    keep, passes = k_core_mask(users, items, 2)
    # User 4 (1 interaction) goes; then item 2 has 1 user and goes; then user 3 has 1 item and goes.
    assert set(zip(users[keep].tolist(), items[keep].tolist())) == {(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)}
    assert passes == 3
    u, i = users[keep], items[keep]
    assert np.bincount(u).max() >= 2 and np.bincount(u)[np.unique(u)].min() >= 2
    assert np.bincount(i)[np.unique(i)].min() >= 2


def test_single_pass_k_core_is_the_published_behaviour() -> None:
    users, items = _chain()
    keep, passes = k_core_mask(users, items, 2, mode="single_pass")
    # One pass: user 4 goes, then item 2 (left with one interaction) goes; user 3 keeps a single item.
    assert passes == 1
    assert (3, 1) in set(zip(users[keep].tolist(), items[keep].tolist()))
    assert np.bincount(users[keep])[3] == 1  # not a 2-core: why it is only a compatibility option


def test_validation_split_takes_the_second_latest() -> None:
    rows = [(0, 5, 30), (0, 2, 10), (0, 7, 20), (1, 4, 1), (1, 8, 2), (2, 9, 1), (3, 1, 1), (3, 2, 2), (3, 3, 3)]
    users, items, times = (np.array(c) for c in zip(*rows))
    split = temporal_split(users, items, times, 4, validation=True)
    assert split.test_items.tolist() == [5, 8, -1, 3]
    assert split.validation_items.tolist() == [7, -1, -1, 2]
    assert set(zip(split.train_users.tolist(), split.train_items.tolist())) == {(0, 2), (1, 4), (2, 9), (3, 1)}
    plain = temporal_split(users, items, times, 4)
    assert plain.validation_items is None
    np.testing.assert_array_equal(plain.test_items, temporal_leave_one_out(users, items, times, 4)[2])


def test_stats_in_table1_layout() -> None:
    ds = generate("tiny")
    stats = dataset_stats(ds)
    assert stats["users"] == 80 and stats["items"] == 240
    assert stats["interactions"] == ds.n_train + np.count_nonzero(ds.test_items >= 0)
    assert stats["density"] == stats["interactions"] / (80 * 240)
    assert sum(v for k, v in stats.items() if k.startswith("category_items/")) == 240
    assert sum(v for k, v in stats.items() if k.startswith("category_interactions/")) == stats["interactions"]
    row = table1_rows([("Amazon Men", {**stats, "k_core": 5.0})])[0]
    assert row[:2] == ("Amazon Men", "5") and row[2] == "80" and row[5] == f"{stats['density']:.6f}"
    names = [r[0] for r in category_rows(stats)]
    assert set(names) == set(ds.category_names) and names[0] == "running shoe"  # most interacted first
