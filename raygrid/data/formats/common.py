"""Helpers shared by the format readers: image folders, item ids, class files."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from raygrid.data.ids import check_file_stem, is_plain_file_stem
from raygrid.data.image_store import ImageSource
from raygrid.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp"})
"""File extensions (lower case) read as item images."""


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else a :class:`DataError` naming ``what`` it should hold."""
    if not path.is_file():
        raise DataError(f"{path}: {what} not found; check data.path (and --data-root / RAYGRID_DATA_ROOT)")
    return path


def scan_image_folder(folder: Path, normalise: Callable[[str], str | None] = lambda stem: stem) -> dict[str, Path]:
    """The image file of each item id in ``folder`` (``<item_id>.<image extension>``).

    Args:
        folder: The image folder (not searched recursively).
        normalise: Maps a file stem to its item id, or ``None`` to ignore the
            file (e.g. ``'007'`` to ``'7'`` for integer ids).

    Raises:
        DataError: The folder is missing, or two files give the same item id.
    """
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found; check data.path (and --data-root / RAYGRID_DATA_ROOT)")
    found: dict[str, Path] = {}
    ignored = 0
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.suffix.lower() not in IMAGE_EXTENSIONS or not entry.is_file():
            continue
        item = normalise(entry.stem)
        if item is None:
            ignored += 1
            continue
        if item in found:
            raise DataError(
                f"{found[item]} and {entry} both hold the image of item {item!r}: duplicate item id; keep one of them"
            )
        found[item] = entry
    if ignored:
        logger.warning("%s: ignored %d image files whose name is not an item id", folder, ignored)
    return found


def folder_sources(item_ids: Iterable[str], images: dict[str, Path], root: Path) -> list[ImageSource]:
    """Image sources of ``item_ids`` from a scanned folder; labels show the path relative to ``root``."""
    sources = []
    for item in item_ids:
        path = images[item]
        try:
            shown = path.relative_to(root)
        except ValueError:
            shown = path
        sources.append(ImageSource(label=f"{shown} (item {item!r})", path=str(path)))
    return sources


def check_plain_ids(items: np.ndarray, row_label: Callable[[int], str]) -> None:
    """Refuse item ids that could not safely name an image file, naming the first row holding one.

    Raises:
        DataError: An id with a path separator, ``..``, a leading dot or other unsafe characters.
    """
    unique, first = np.unique(items.astype(str), return_index=True)
    for item, row in zip(unique, first):
        if not is_plain_file_stem(item):
            check_file_stem(str(item), row_label(int(row)))


def read_classes_csv(path: Path, normalise: Callable[[str], str | None] = lambda s: s) -> dict[str, str]:
    """Item id -> category name from a CSV with a header.

    The item column is the first of ``item``, ``item_id``, ``ImageID``,
    ``image_id``, ``id`` present; the class column the first of ``class``,
    ``category``, ``ClassStr``, ``class_name``, ``label``. Item values may carry
    an image extension (``57.jpg``).

    Raises:
        DataError: Unreadable file, missing columns, an empty value or an item listed twice.
    """
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            item_col = next((c for c in ("item", "item_id", "ImageID", "image_id", "id") if c in header), None)
            class_col = next((c for c in ("class", "category", "ClassStr", "class_name", "label") if c in header), None)
            if item_col is None or class_col is None:
                raise DataError(
                    f"{path} line 1: needs an item column (item, item_id, ImageID) and a class column "
                    f"(class, category, ClassStr); found {header}"
                )
            classes: dict[str, str] = {}
            for line, row in enumerate(reader, start=2):
                raw_item, name = (row.get(item_col) or "").strip(), (row.get(class_col) or "").strip()
                stem = Path(raw_item).stem if Path(raw_item).suffix.lower() in IMAGE_EXTENSIONS else raw_item
                item = normalise(stem)
                if not raw_item or not name or item is None:
                    raise DataError(f"{path} line {line}: needs an item id and a class name, got {raw_item!r}, {name!r}")
                if item in classes:
                    raise DataError(f"{path} line {line}: item {item!r} is listed twice (duplicate item id)")
                classes[item] = name
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read the class file ({exc}); give a CSV with item and class columns") from None
    return classes
