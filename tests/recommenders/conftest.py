"""Shared by the recommender tests: one torch thread, and users drawn from taste groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # These models are tiny: intra-op threads buy nothing and, on a busy 2-core
    # machine, spin against each other (training then runs 5-30x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def group_users(
    rng: np.random.Generator, item_group: np.ndarray, cold: np.ndarray, n_users: int, n_train: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Users split into two halves liking item group 0 and 1.

    Each user gets ``n_train`` training items among the warm items of the group;
    the test item is a cold item of the group for even users and another warm one
    for odd users.

    Returns:
        ``(train_users, train_items, test_items)``.
    """
    users, items, test = [], [], np.empty(n_users, dtype=np.int64)
    for u in range(n_users):
        group = u // (n_users // 2)
        warm = np.flatnonzero((item_group == group) & ~cold)
        chosen = rng.choice(warm, size=n_train + 1, replace=False)
        users += [u] * n_train
        items += list(chosen[:n_train])
        test[u] = rng.choice(np.flatnonzero((item_group == group) & cold)) if u % 2 == 0 else chosen[n_train]
    return np.array(users), np.array(items), test
