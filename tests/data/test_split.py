"""Tests of the temporal leave-one-out split."""

from __future__ import annotations

import numpy as np
import pytest

from raygrid.data.split import temporal_leave_one_out


def _split(rows: list[tuple[int, int, int]], n_users: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    users, items, times = (np.array(col, dtype=np.int64) for col in zip(*rows))
    return temporal_leave_one_out(users, items, times, n_users)


def _train_pairs(train_users: np.ndarray, train_items: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(train_users.tolist(), train_items.tolist()))


def test_latest_interaction_goes_to_test() -> None:
    rows = [(0, 5, 30), (0, 2, 10), (0, 7, 20), (1, 4, 1), (1, 8, 2)]
    train_users, train_items, test_items = _split(rows, n_users=2)
    assert test_items.tolist() == [5, 8]
    assert _train_pairs(train_users, train_items) == {(0, 2), (0, 7), (1, 4)}


def test_training_pairs_sorted_by_user_then_time() -> None:
    rows = [(1, 3, 5), (0, 9, 2), (1, 1, 1), (0, 4, 1), (0, 6, 3), (1, 0, 9)]
    train_users, train_items, _ = _split(rows, n_users=2)
    assert train_users.tolist() == [0, 0, 1, 1]
    assert train_items.tolist() == [4, 9, 1, 3]


def test_duplicates_keep_their_earliest_time() -> None:
    # Item 3 is seen at t=1 and again at t=9; counted at t=1, item 4 (t=5) is the latest.
    rows = [(0, 3, 9), (0, 4, 5), (0, 3, 1)]
    train_users, train_items, test_items = _split(rows, n_users=1)
    assert test_items.tolist() == [4]
    assert train_users.tolist() == [0]
    assert train_items.tolist() == [3]


def test_users_with_fewer_than_two_items_keep_them_in_train() -> None:
    # User 0: one item; user 1: the same item twice; user 2: nothing.
    rows = [(0, 1, 5), (1, 2, 3), (1, 2, 4)]
    train_users, train_items, test_items = _split(rows, n_users=3)
    assert test_items.tolist() == [-1, -1, -1]
    assert _train_pairs(train_users, train_items) == {(0, 1), (1, 2)}
    assert train_users.shape == (2,)


def test_ties_go_to_the_largest_item_whatever_the_row_order() -> None:
    rows = [(0, 6, 10), (0, 9, 10), (0, 2, 1)]
    for permutation in ([0, 1, 2], [1, 0, 2], [2, 1, 0], [1, 2, 0]):
        train_users, train_items, test_items = _split([rows[k] for k in permutation], n_users=1)
        assert test_items.tolist() == [9]
        assert train_items.tolist() == [2, 6]


def test_random_interactions_invariants() -> None:
    rng = np.random.default_rng(0)
    n_users, n = 300, 5_000
    users = rng.integers(0, n_users, n)
    items = rng.integers(0, 100, n)
    times = rng.integers(0, 50, n)  # many ties and repeated pairs
    train_users, train_items, test_items = temporal_leave_one_out(users, items, times, n_users)

    for array in (train_users, train_items, test_items):
        assert array.dtype == np.int64
    assert test_items.shape == (n_users,)
    distinct = {(int(u), int(i)) for u, i in zip(users, items)}
    train = _train_pairs(train_users, train_items)
    assert len(train) == train_users.shape[0]  # no duplicate pairs survive
    n_distinct = np.bincount([u for u, _ in distinct], minlength=n_users)
    assert ((test_items >= 0) == (n_distinct >= 2)).all()
    assert len(train) + int((test_items >= 0).sum()) == len(distinct)
    first_time: dict[tuple[int, int], int] = {}
    for u, i, t in zip(users.tolist(), items.tolist(), times.tolist()):
        first_time[(u, i)] = min(t, first_time.get((u, i), t))
    for user in np.flatnonzero(test_items >= 0):
        test = (int(user), int(test_items[user]))
        assert test not in train
        user_times = [first_time[(int(user), int(i))] for i in train_items[train_users == user]]
        assert first_time[test] >= max(user_times)


def test_rejects_inconsistent_input() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        temporal_leave_one_out(np.array([0, 1]), np.array([0]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="user ids"):
        temporal_leave_one_out(np.array([0, 2]), np.array([0, 1]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="item ids"):
        temporal_leave_one_out(np.array([0, 1]), np.array([0, -1]), np.array([0, 1]), 2)


def test_empty_input() -> None:
    empty = np.array([], dtype=np.int64)
    train_users, train_items, test_items = temporal_leave_one_out(empty, empty, empty, 3)
    assert train_users.shape == (0,) and train_items.shape == (0,)
    assert test_items.tolist() == [-1, -1, -1]
