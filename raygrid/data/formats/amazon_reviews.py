"""McAuley's Amazon review dumps plus a folder of item images.

The review file (``.json`` or ``.json.gz``) holds one review per line, a JSON
object with at least ``reviewerID``, ``asin``, ``overall`` (the 1-5 rating) and
``unixReviewTime``. The oldest dumps wrote Python dict literals instead of
JSON; those lines are read with :func:`ast.literal_eval` (which evaluates
literals only, never code). Images are ``<images>/<asin>.<jpg|png|...>``;
the dump ships image URLs only, so the user downloads them beforehand.
"""

from __future__ import annotations

import ast
import gzip
import json
from pathlib import Path
from typing import IO

import numpy as np

from raygrid.data.formats.common import check_plain_ids, folder_sources, require_file, scan_image_folder
from raygrid.data.preprocess import RawData
from raygrid.errors import DataError

REQUIRED_KEYS: tuple[str, ...] = ("reviewerID", "asin", "overall", "unixReviewTime")


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _parse_line(line: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        try:
            return ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None


def read_amazon_reviews(path: str | Path, images: str | Path | None = None, name: str | None = None) -> RawData:
    """Read a review dump and its image folder (default: ``images/`` beside the file).

    Raises:
        DataError: A missing file or folder, a line that is not a review object
            or lacks a field (naming the line), an unsafe item id, duplicate
            images for one item.
    """
    path = Path(path).expanduser()
    require_file(path, "review file")
    image_dir = Path(images).expanduser() if images else path.parent / "images"
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    times: list[float] = []
    lines: list[int] = []
    try:
        with _open(path) as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                review = _parse_line(line)
                if not isinstance(review, dict):
                    raise DataError(f"{path} line {number}: not a JSON object (a review per line expected)")
                missing = [k for k in REQUIRED_KEYS if k not in review]
                if missing:
                    raise DataError(f"{path} line {number}: the review has no {', '.join(missing)}")
                try:
                    rating, stamp = float(review["overall"]), float(review["unixReviewTime"])
                except (TypeError, ValueError):
                    raise DataError(
                        f"{path} line {number}: overall and unixReviewTime must be numbers, "
                        f"got {review['overall']!r}, {review['unixReviewTime']!r}"
                    ) from None
                users.append(str(review["reviewerID"]))
                items.append(str(review["asin"]))
                ratings.append(rating)
                times.append(stamp)
                lines.append(number)
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read ({exc}); check the file (truncated download?)") from None
    if not users:
        raise DataError(f"{path}: no reviews (the file is empty); check the file")
    line_numbers = np.asarray(lines)

    def row_label(row: int) -> str:
        return f"{path} line {line_numbers[row]}"

    item_array = np.asarray(items, dtype=object)
    check_plain_ids(item_array, row_label)
    found = scan_image_folder(image_dir)
    item_ids = sorted(found)
    return RawData(
        name=name or path.name.split(".")[0],
        users=np.asarray(users, dtype=object),
        items=item_array,
        item_ids=item_ids,
        sources=folder_sources(item_ids, found, image_dir),
        row_label=row_label,
        missing_item=f"has no image in {image_dir} (missing image)",
        timestamps=np.asarray(times),
        ratings=np.asarray(ratings),
    )
