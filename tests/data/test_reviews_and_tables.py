"""McAuley's Amazon review dumps and the generic CSV / Parquet layout."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fabricate import interactions, item_image, write_amazon

from raygrid.data.dataset import Dataset
from raygrid.data.sources import AmazonReviewsData, TabularData
from raygrid.errors import DataError


def amazon(path: Path, **settings: object) -> Dataset:
    config = AmazonReviewsData.Config(**{"path": str(path), "image_size": 16, "decode_workers": 1, **settings})
    return AmazonReviewsData(config).load()


def tabular(path: Path, **settings: object) -> Dataset:
    return TabularData(TabularData.Config(**{"path": str(path), "image_size": 16, "decode_workers": 1, **settings})).load()


def test_reviews_temporal_split_and_threshold(tmp_path: Path) -> None:
    reviews = write_amazon(tmp_path)
    everything = amazon(reviews)
    assert (everything.n_users, everything.n_items) == (30, 24)
    rows = interactions()
    last = {u: i for u, i, _ in rows}  # rows are chronological per user
    assert everything.test_items.tolist() == [everything.item_ids.index(f"B{last[u]:05d}") for u in range(30)]
    liked = amazon(reviews, rating_threshold=4)
    expected = sum(1 for u, i, _ in rows if 1 + (u + i) % 5 >= 4)
    assert liked.stats["implicit_interactions"] == expected < everything.stats["implicit_interactions"]


def test_gzipped_and_python_literal_lines(tmp_path: Path) -> None:
    reviews = write_amazon(tmp_path)
    lines = reviews.read_text().splitlines()
    lines[0] = repr(json.loads(lines[0]))  # the oldest dumps: Python dict literals
    with gzip.open(tmp_path / "reviews.json.gz", "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    assert amazon(tmp_path / "reviews.json.gz", images=str(tmp_path / "images")).n_users == 30


@pytest.mark.parametrize(
    "line,phrase",
    [
        ("{not json", "line 3: not a JSON object"),
        ('{"reviewerID": "A1", "asin": "B00001", "overall": 5}', "line 3: the review has no unixReviewTime"),
        ('{"reviewerID": "A1", "asin": "../../etc/x", "overall": 5, "unixReviewTime": 1}', "line 3: item id '../../etc/x' cannot name"),
        ('{"reviewerID": "A1", "asin": "a/b", "overall": 5, "unixReviewTime": 1}', "line 3: item id 'a/b' cannot name"),
        ('{"reviewerID": "A1", "asin": "B09999", "overall": 5, "unixReviewTime": 1}', "line 3: item 'B09999' has no image"),
    ],
)
def test_bad_review_lines(tmp_path: Path, line: str, phrase: str) -> None:
    reviews = write_amazon(tmp_path)
    lines = reviews.read_text().splitlines()
    lines.insert(2, line)
    reviews.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=phrase.replace("(", r"\(").replace(".", r"\.")):
        amazon(reviews)


def _table(tmp_path: Path) -> pd.DataFrame:
    rows = interactions()
    return pd.DataFrame(
        {
            "user_id": [f"u{u}" for u, _, _ in rows],
            "item_id": [f"i{i}" for _, i, _ in rows],
            "stars": [3.0] * len(rows),
            "when": pd.to_datetime([t for _, _, t in rows], unit="s").strftime("%Y-%m-%d %H:%M:%S"),
        }
    )


COLUMNS = {"user_column": "user_id", "item_column": "item_id", "rating_column": "stars", "timestamp_column": "when"}


def test_csv_with_an_image_folder(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    for i in range(24):
        (tmp_path / "images" / f"i{i}.{'png' if i % 2 else 'jpg'}").write_bytes(item_image(i))
    frame = _table(tmp_path)
    frame.to_csv(tmp_path / "interactions.csv", index=False)
    ds = tabular(tmp_path / "interactions.csv", **COLUMNS)
    assert (ds.n_users, ds.n_items, ds.n_train) == (30, 24, len(frame) - 30)
    # Dates parsed: each user's latest row is the test item.
    last = frame.groupby("user_id").tail(1).set_index("user_id")["item_id"]
    assert [ds.item_ids[i] for i in ds.test_items] == [last[u] for u in ds.user_ids]


def test_parquet_with_an_image_path_column(tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    for i in range(24):
        (tmp_path / "pics" / f"photo_{i}.jpg").write_bytes(item_image(i))
    frame = _table(tmp_path)
    frame["image"] = [f"pics/photo_{i[1:]}.jpg" for i in frame["item_id"]]
    frame.to_parquet(tmp_path / "interactions.parquet")
    ds = tabular(tmp_path / "interactions.parquet", image_column="image", **COLUMNS)
    assert ds.n_items == 24 and ds.images.shape == (24, 16, 16, 3)

    frame.loc[7, "image"] = "pics/photo_0.jpg"
    frame.to_parquet(tmp_path / "interactions.parquet")
    with pytest.raises(DataError, match=r"row \d+: item 'i\d+' has the image .* row 8 gave it 'pics/photo_0.jpg': duplicate item id"):
        tabular(tmp_path / "interactions.parquet", image_column="image", **COLUMNS)


def test_table_errors(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "i1.jpg").write_bytes(item_image(1))
    (tmp_path / "t.csv").write_text("")
    with pytest.raises(DataError, match="t.csv: the file is empty"):
        tabular(tmp_path / "t.csv")
    (tmp_path / "t.csv").write_text("user,item\nu1,i1\n")
    with pytest.raises(DataError, match="no column 'stars'"):
        tabular(tmp_path / "t.csv", rating_column="stars")
    (tmp_path / "t.csv").write_text("user,item,when\nu1,i1,yesterday-ish\n")
    with pytest.raises(DataError, match="t.csv row 1: 'when' is 'yesterday-ish', not a number or a date"):
        tabular(tmp_path / "t.csv", timestamp_column="when")
    (tmp_path / "t.csv").write_text("user,item\nu1,i1\nu2,../i1\n")
    with pytest.raises(DataError, match=r"t.csv row 2: item id '../i1' cannot name an image file"):
        tabular(tmp_path / "t.csv")
    shutil.copy(tmp_path / "images" / "i1.jpg", tmp_path / "images" / "i1.png")
    (tmp_path / "t.csv").write_text("user,item\nu1,i1\n")
    with pytest.raises(DataError, match="duplicate item id"):
        tabular(tmp_path / "t.csv")


def test_never_interacted_images_are_left_out(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    for i in range(4):
        (tmp_path / "images" / f"i{i}.jpg").write_bytes(item_image(i))
    (tmp_path / "t.csv").write_text("user,item\nu1,i1\nu1,i2\nu2,i2\n")
    ds = tabular(tmp_path / "t.csv")
    assert ds.item_ids == ("i1", "i2") and np.all(ds.item_labels == -1)
