"""The VAR dataset folder: reading, the image cache, and every bad input."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
from fabricate import item_image, write_var_layout

from raygrid.data import image_store
from raygrid.data.dataset import Dataset
from raygrid.data.image_store import decode_image
from raygrid.data.sources import VARLayoutData
from raygrid.errors import DataError


def load(root: Path, **settings: object) -> Dataset:
    config = VARLayoutData.Config(**{"path": str(root), "image_size": 16, "decode_workers": 1, **settings})
    return VARLayoutData(config).load()


@pytest.fixture
def men(tmp_path: Path) -> Path:
    return write_var_layout(tmp_path / "amazon_men")


def test_reads_the_published_split(men: Path) -> None:
    ds = load(men)
    train = {tuple(map(int, line.split("\t"))) for line in (men / "trainingset.tsv").read_text().splitlines()}
    test = dict(line.split("\t") for line in (men / "testset.tsv").read_text().splitlines())
    assert (ds.n_users, ds.n_items) == (30, 24)
    assert set(zip(ds.train_users.tolist(), ds.train_items.tolist())) == train
    assert ds.item_ids == tuple(str(i) for i in range(24))  # numeric order: index == published id
    assert ds.test_items.tolist() == [int(test[str(u)]) for u in range(30)]
    assert ds.validation_items is None and ds.cold_items is None
    np.testing.assert_array_equal(ds.images[7], decode_image(item_image(7), 16))
    # No classes.csv: no labels, a pretrained extractor classifies.
    assert ds.category_names == () and np.all(ds.item_labels == -1)
    assert ds.stats["interactions"] == ds.n_train + 30 and ds.stats["users"] == 30


def test_second_load_hits_the_image_cache(men: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load(men)

    def refuse(data: bytes, size: int) -> np.ndarray:
        raise AssertionError("decoded an image on the second load")

    monkeypatch.setattr(image_store, "decode_image", refuse)
    second = load(men)
    np.testing.assert_array_equal(second.images, first.images)
    assert second.images.store_dir == first.images.store_dir


def test_dataset_pickles_cheaply(men: Path) -> None:
    ds = load(men, image_size=64)
    blob = pickle.dumps(ds, protocol=5)
    assert len(blob) < ds.images.nbytes / 10
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back.images, ds.images)
    np.testing.assert_array_equal(back.train_items, ds.train_items)


def test_classes_and_features_files(men: Path) -> None:
    rows = ["ImageID,ClassStr"] + [f"{i}.jpg,{'sandal' if i % 3 == 0 else 'running shoe'}" for i in range(24)]
    (men / "classes.csv").write_text("\n".join(rows) + "\n")
    np.save(men / "features.npy", np.arange(24 * 4, dtype=np.float64).reshape(24, 4))
    ds = load(men)
    assert ds.category_names == ("running shoe", "sandal")
    assert ds.item_labels[:4].tolist() == [1, 0, 0, 1]
    np.testing.assert_array_equal(ds.item_features[5], [20, 21, 22, 23])
    assert ds.stats["category_items/sandal"] == 8


def test_k_core_filters_and_reports(men: Path) -> None:
    ds = load(men, k_core=7)
    assert ds.n_items < 24 or ds.n_users < 30
    counts_u = np.bincount(ds.train_users, minlength=ds.n_users) + (ds.test_items >= 0)
    assert counts_u.min() >= 7
    assert ds.stats["k_core"] == 7


def _error(root: Path, **settings: object) -> str:
    with pytest.raises(DataError) as info:
        load(root, **settings)
    message = str(info.value)
    assert "\n" not in message
    return message


def _no_store_entry(root: Path) -> bool:
    store = root / ".raygrid-image-store"
    return not store.exists() or not any(p.name == "meta.json" for p in store.rglob("*"))


def test_missing_image(men: Path, caplog: pytest.LogCaptureFixture) -> None:
    (men / "original/images/5.jpg").unlink()
    message = _error(men)
    assert "trainingset.tsv line" in message and "item '5' has no image" in message and "missing image" in message
    assert _no_store_entry(men)
    with caplog.at_level(logging.WARNING):
        ds = load(men, skip_bad_images=True)
    assert "5" not in ds.item_ids and ds.n_items == 23
    assert "dropped" in caplog.text and ds.stats["unknown_item_interactions"] > 0


@pytest.mark.parametrize(
    "content,phrase",
    [(item_image(0)[:200], "truncated"), (b"<html>not found</html>", "not an image")],
)
def test_corrupt_or_non_image(men: Path, content: bytes, phrase: str) -> None:
    (men / "original/images/7.jpg").write_bytes(content)
    message = _error(men)
    assert message.startswith("original/images/7.jpg (item '7'): ") and phrase in message
    assert _no_store_entry(men)
    ds = load(men, skip_bad_images=True)
    assert "7" not in ds.item_ids and ds.stats["dropped_images"] == 1
    assert 7 not in set(ds.item_ids) and ds.n_items == 23


def test_duplicate_item_ids(men: Path) -> None:
    (men / "original/images/007.jpg").write_bytes(item_image(7))
    assert "duplicate item id" in _error(men) and "007.jpg" in _error(men)


def test_malformed_line(men: Path) -> None:
    with (men / "testset.tsv").open("a") as fh:
        fh.write("3\tabc\n")
    message = _error(men)
    assert "testset.tsv line 31" in message and "integer ids" in message


def test_empty_interaction_file(men: Path) -> None:
    (men / "testset.tsv").write_text("")
    assert "testset.tsv: no interactions" in _error(men)


def test_two_test_items_for_one_user(men: Path) -> None:
    with (men / "testset.tsv").open("a") as fh:
        fh.write("0\t23\n")
    message = _error(men)
    assert "testset.tsv line 31" in message and "second test item" in message


def test_empty_after_k_core(men: Path) -> None:
    message = _error(men, k_core=50)
    assert "empty after 50-core filtering" in message and "lower data.k_core" in message
    assert _no_store_entry(men)


def test_missing_folder(tmp_path: Path) -> None:
    assert "dataset folder not found" in _error(tmp_path / "nowhere")
