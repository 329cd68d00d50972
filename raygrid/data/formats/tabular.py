"""A generic layout for anyone's data: a CSV or Parquet table of interactions plus images.

The table has one interaction per row with a user and an item column, and
optionally a rating and a timestamp column (numbers, or date strings pandas can
parse). Images come either from a folder of ``<item>.<jpg|png|...>`` files or
from a column of image paths (relative paths are taken from the table's folder);
with a path column every row of an item must give the same path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from raygrid.data.formats.common import check_plain_ids, folder_sources, require_file, scan_image_folder
from raygrid.data.image_store import ImageSource
from raygrid.data.preprocess import RawData
from raygrid.errors import DataError

if TYPE_CHECKING:
    import pandas as pd


def read_table(path: Path) -> pd.DataFrame:
    """The table at ``path`` with every column as strings (``.parquet``/``.pq``: Parquet, else CSV)."""
    import pandas as pd  # imported when needed: importing raygrid stays quick

    require_file(path, "interaction table")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
            return frame.astype(object).where(frame.notna(), "").astype(str)
        return pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; give a table with a header row") from None
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as a table ({str(exc).splitlines()[0][:160]}); check the file") from None


def read_tabular(
    path: str | Path,
    *,
    user_column: str = "user",
    item_column: str = "item",
    rating_column: str | None = None,
    timestamp_column: str | None = None,
    image_column: str | None = None,
    images: str | Path | None = None,
    name: str | None = None,
) -> RawData:
    """Read an interaction table and its images (see the module docstring).

    Raises:
        DataError: A missing file, column or folder; an empty cell, a
            non-numeric rating, an unparsable timestamp (naming the row); an
            item given two different image paths (duplicate item id); an item id
            that cannot name a file (folder layout).
    """
    path = Path(path).expanduser()
    frame = read_table(path)
    if frame.empty:
        raise DataError(f"{path}: no interactions (only a header); check the file")
    wanted = [c for c in (user_column, item_column, rating_column, timestamp_column, image_column) if c]
    absent = [c for c in wanted if c not in frame.columns]
    if absent:
        raise DataError(f"{path}: no column {', '.join(map(repr, absent))}; the table has {list(frame.columns)}")

    def row_label(row: int) -> str:
        return f"{path} row {row + 1}"

    for column in (user_column, item_column):
        empty = frame[column].str.strip() == ""
        if empty.any():
            raise DataError(f"{row_label(int(np.flatnonzero(empty)[0]))}: empty {column!r}")
    users = frame[user_column].str.strip().to_numpy(dtype=object)
    items = frame[item_column].str.strip().to_numpy(dtype=object)
    ratings = _numbers(frame, rating_column, row_label) if rating_column else None
    timestamps = _times(frame, timestamp_column, row_label) if timestamp_column else None

    if image_column:
        item_ids, sources = _path_column_sources(frame, items, image_column, path, row_label)
        missing = "has no image path"
    else:
        check_plain_ids(items, row_label)
        image_dir = Path(images).expanduser() if images else path.parent / "images"
        found = scan_image_folder(image_dir)
        item_ids = sorted(found)
        sources = folder_sources(item_ids, found, image_dir)
        missing = f"has no image in {image_dir} (missing image)"
    return RawData(
        name=name or path.stem,
        users=users,
        items=items,
        item_ids=item_ids,
        sources=sources,
        row_label=row_label,
        missing_item=missing,
        timestamps=timestamps,
        ratings=ratings,
    )


def _numbers(frame: pd.DataFrame, column: str, row_label: Callable[[int], str]) -> np.ndarray:
    import pandas as pd  # imported when needed: importing raygrid stays quick

    values = pd.to_numeric(frame[column].str.strip(), errors="coerce")
    bad = values.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{row_label(row)}: {column!r} is {frame[column].iloc[row]!r}, expected a number")
    return values.to_numpy(dtype=np.float64)


def _times(frame: pd.DataFrame, column: str, row_label: Callable[[int], str]) -> np.ndarray:
    import pandas as pd  # imported when needed: importing raygrid stays quick

    text = frame[column].str.strip()
    numeric = pd.to_numeric(text, errors="coerce")
    if not numeric.isna().any():
        return numeric.to_numpy(dtype=np.float64)
    parsed = pd.to_datetime(text, errors="coerce", utc=True, format="mixed")
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{row_label(row)}: {column!r} is {frame[column].iloc[row]!r}, not a number or a date")
    # Seconds since the epoch, whatever resolution pandas parsed to.
    return ((parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)


def _path_column_sources(
    frame: pd.DataFrame, items: np.ndarray, column: str, path: Path, row_label: Callable[[int], str]
) -> tuple[list[str], list[ImageSource]]:
    paths = frame[column].str.strip().to_numpy(dtype=object)
    given = paths != ""
    chosen: dict[str, tuple[str, int]] = {}
    for row in np.flatnonzero(given):
        item, image = items[row], paths[row]
        previous = chosen.setdefault(item, (image, int(row)))
        if previous[0] != image:
            raise DataError(
                f"{row_label(int(row))}: item {item!r} has the image {image!r}, but {row_label(previous[1])} "
                f"gave it {previous[0]!r}: duplicate item id with two images; give one image per item"
            )
    item_ids = sorted(chosen)
    sources = []
    for item in item_ids:
        image = Path(chosen[item][0]).expanduser()
        full = image if image.is_absolute() else path.parent / image
        sources.append(ImageSource(label=f"{full} (item {item!r}, {row_label(chosen[item][1])})", path=str(full)))
    return item_ids, sources
