"""PatchedRows: a catalogue with some rows swapped, read in pieces, equal to the patched copy it replaces."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raygrid.data.patched import PatchedRows


def catalogue(tmp_path, n=20):
    rng = np.random.default_rng(0)
    path = tmp_path / "images.npy"
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 4, 4, 3))
    images[:] = rng.integers(0, 256, images.shape, dtype=np.uint8)
    images.flush()
    return np.load(path, mmap_mode="r")


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.integers(0, 19), unique=True, max_size=8),
    start=st.integers(-25, 25),
    stop=st.integers(-25, 25),
    step=st.integers(1, 4),
    picks=st.lists(st.integers(-20, 19), max_size=10),
)
def test_every_read_equals_the_same_read_of_a_patched_copy(tmp_path_factory, rows, start, stop, step, picks):
    base = catalogue(tmp_path_factory.mktemp("c"))
    values = np.full((len(rows), 4, 4, 3), 7, dtype=np.uint8) + np.arange(len(rows), dtype=np.uint8)[:, None, None, None]
    view = PatchedRows(base, np.array(rows, dtype=np.int64), values)
    copy = np.array(base)
    copy[rows] = values
    np.testing.assert_array_equal(view[start:stop:step], copy[start:stop:step])
    np.testing.assert_array_equal(view[np.array(picks, dtype=np.int64)], copy[np.array(picks, dtype=np.int64)])
    for i in (0, 19, -1, *rows):
        np.testing.assert_array_equal(view[i], copy[i])
    np.testing.assert_array_equal(np.asarray(view), copy)
    assert view.shape == base.shape and view.dtype == base.dtype and len(view) == 20


def test_the_base_is_never_written_and_reads_are_fresh_arrays(tmp_path):
    base = catalogue(tmp_path)
    before = np.array(base)
    view = PatchedRows(base, np.array([3]), np.zeros((1, 4, 4, 3), dtype=np.uint8))
    chunk = view[0:5]
    chunk[:] = 1  # a reader may write its batch: the catalogue is unaffected
    np.testing.assert_array_equal(base, before)
    assert (view[3] == 0).all() and view.nbytes == before.nbytes


@pytest.mark.parametrize(
    "rows, values, message",
    [
        ([20], np.zeros((1, 4, 4, 3), np.uint8), r"rows must lie in \[0, 20\)"),
        ([1, 1], np.zeros((2, 4, 4, 3), np.uint8), "distinct"),
        ([1], np.zeros((1, 4, 4, 3), np.float32), "replacement rows must be uint8"),
        ([1, 2], np.zeros((1, 4, 4, 3), np.uint8), "replacement rows must be"),
    ],
)
def test_inconsistent_patches_are_refused(tmp_path, rows, values, message):
    with pytest.raises(ValueError, match=message):
        PatchedRows(catalogue(tmp_path), np.array(rows), values)
