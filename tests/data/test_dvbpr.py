"""The DVBPR pickled .npy of the AIP study: Python 2 pickles, the shipped split, cold items, bad files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from fabricate import item_image, write_dvbpr, write_python2_npy

from raygrid.data.dataset import Dataset
from raygrid.data.image_store import decode_image
from raygrid.data.sources import DVBPRData
from raygrid.errors import DataError


def load(path: Path, **settings: object) -> Dataset:
    return DVBPRData(DVBPRData.Config(**{"path": str(path), "image_size": 16, "decode_workers": 1, **settings})).load()


@pytest.fixture
def men(tmp_path: Path) -> Path:
    return write_dvbpr(tmp_path / "AmazonMenWithImgPartitioned.npy")


def test_fixture_is_a_python2_pickle(men: Path) -> None:
    with pytest.raises(UnicodeError):  # Python 2 str: unreadable without encoding='bytes'
        np.load(men, allow_pickle=True)


def test_reads_the_shipped_split(men: Path) -> None:
    ds = load(men, validation=True)
    content = np.load(men, encoding="bytes", allow_pickle=True)
    train, validation, test = content[0], content[1], content[2]
    assert ds.n_users == 30 and ds.n_items == 24  # the 6 never-interacted items are not kept
    assert ds.item_ids == tuple(str(i) for i in range(24))
    assert ds.test_items.tolist() == [test[u][0][b"productid"] for u in range(30)]
    assert ds.validation_items.tolist() == [validation[u][0][b"productid"] for u in range(30)]
    assert ds.n_train == sum(len(v) for v in train.values())
    np.testing.assert_array_equal(ds.images[6], decode_image(item_image(6), 16))  # grayscale JPEG -> RGB
    assert ds.images.shape == (24, 16, 16, 3)


def test_cold_items_are_never_interacted_items(men: Path) -> None:
    ds = load(men, cold_items=4, seed=3)
    assert len(ds.cold_items) == 4 and ds.n_items == 28
    cold_ids = {ds.item_ids[i] for i in ds.cold_items}
    assert cold_ids <= {"24", "25", "26", "27", "28", "29"}
    used = set(ds.train_items.tolist()) | set(ds.test_items.tolist())
    assert not used & set(ds.cold_items.tolist())
    assert load(men, cold_items=4, seed=3).cold_items.tolist() == ds.cold_items.tolist()  # seeded
    assert ds.stats["cold_items"] == 4


def test_cold_item_file_is_checked(men: Path, tmp_path: Path) -> None:
    good = tmp_path / "cold.txt"
    good.write_text("25\n27\n")
    ds = load(men, cold_items_file=str(good))
    assert [ds.item_ids[i] for i in ds.cold_items] == ["25", "27"]
    bad = tmp_path / "bad_cold.txt"
    bad.write_text("25\n3\n")
    with pytest.raises(DataError, match=r"bad_cold.txt line 2: cold item '3' appears in training \(.*user_train\[\d+\]"):
        load(men, cold_items_file=str(bad))


def test_too_few_cold_items(men: Path) -> None:
    with pytest.raises(DataError, match="1000 cold items asked for, but only 6"):
        load(men, cold_items=1000)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "x.npy").write_bytes(b"")
    with pytest.raises(DataError, match=r"x.npy: the file is empty"):
        load(tmp_path / "x.npy")


def test_truncated_file(men: Path) -> None:
    men.write_bytes(men.read_bytes()[: men.stat().st_size // 2])
    with pytest.raises(DataError, match=r"not a readable .npy file \(truncated or corrupt"):
        load(men)


@pytest.mark.parametrize(
    "content,phrase",
    [
        ({b"user_train": {}}, "expected the list"),
        ([{}, {}, {}, {0: {b"imgs": b"x"}}, "30", 1], "usernum is '30'"),
        ([{0: [{b"item": 1}]}, {}, {}, {0: {b"imgs": b"x"}}, 1, 1], r"user_train\[0\]\[0\] has no b'productid'"),
        ([{}, {}, {}, {0: [1, 2]}, 1, 1], r"Item\[0\] is a list"),
        ([{}, {}, {}, {0: {b"imgs": 5}}, 1, 1], r"Item\[0\]\[b'imgs'\] is a int"),
    ],
)
def test_not_the_expected_structure(tmp_path: Path, content: object, phrase: str) -> None:
    path = tmp_path / "odd.npy"
    if isinstance(content, list):
        array = np.empty(len(content), dtype=object)
        array[:] = content
        content = array
    write_python2_npy(path, content)
    with pytest.raises(DataError, match=phrase):
        load(path)


def test_interaction_naming_an_unknown_item(tmp_path: Path) -> None:
    content = np.empty(6, dtype=object)
    content[:] = [{0: [{b"productid": 0}, {b"productid": 9}]}, {0: []}, {0: []}, {0: {b"imgs": item_image(0)}}, 1, 1]
    write_python2_npy(tmp_path / "u.npy", content)
    with pytest.raises(DataError, match=r"user_train\[0\]\[1\]: item '9' is not in the file's Item dict"):
        load(tmp_path / "u.npy")


def test_a_bad_image_in_the_pickle(tmp_path: Path) -> None:
    path = write_dvbpr(tmp_path / "d.npy")
    content = np.load(path, encoding="bytes", allow_pickle=True)
    content[3][4][b"imgs"] = item_image(4)[:150]
    write_python2_npy(path, content)
    with pytest.raises(DataError, match=r"^d.npy: Item\[4\]\[b'imgs'\]: truncated"):
        load(path)
    assert "4" not in load(path, skip_bad_images=True).item_ids


def test_pickled_dataset_is_small(men: Path) -> None:
    ds = load(men, image_size=64)
    assert len(pickle.dumps(ds)) < ds.images.nbytes / 10
