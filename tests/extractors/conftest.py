"""Fixtures shared by the extractor tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from raygrid.data.dataset import Dataset
from raygrid.data.synthetic import generate


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: tiny convolutions run fastest and reproducibly so, and on a
    busy 2-core machine two threads spin against each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny() -> Dataset:
    """The ``tiny`` synthetic catalogue, seed 0."""
    return generate("tiny", seed=0)
