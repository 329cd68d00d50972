"""The VAR study's dataset folder.

Layout (as published with the VAR paper's code)::

    <root>/original/images/<item_id>.jpg     one image per item, 0-based integer ids
    <root>/trainingset.tsv                   user<TAB>item, no header, 0-based ids
    <root>/testset.tsv                       user<TAB>item, one held-out item per user
    <root>/classes.csv                       optional: item -> category name
    <root>/features.npy                      optional: (n_items, D) features of an earlier run

The TSV files carry the split the authors made; it is kept. They carry no
timestamps: the order of the rows stands for time (training rows before test rows).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from raygrid.data.formats.common import folder_sources, read_classes_csv, require_file, scan_image_folder
from raygrid.data.preprocess import TEST, TRAIN, RawData
from raygrid.errors import DataError

logger = logging.getLogger(__name__)


def integer_id(text: str) -> str | None:
    """The canonical form of a non-negative integer id (``'007'`` -> ``'7'``), ``None`` if not one."""
    text = text.strip()
    return str(int(text)) if text.isascii() and text.isdigit() else None


def read_pairs_tsv(path: Path) -> tuple[list[str], list[str], list[int]]:
    """Users, items and line numbers of a ``user<TAB>item`` file with 0-based integer ids.

    Blank lines are skipped; extra columns are ignored.

    Raises:
        DataError: Unreadable or empty file, or a line without two integer ids (naming the line).
    """
    require_file(path, "interaction file")
    users: list[str] = []
    items: list[str] = []
    lines: list[int] = []
    try:
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                fields = line.rstrip("\r\n").split("\t")
                user = integer_id(fields[0]) if fields else None
                item = integer_id(fields[1]) if len(fields) > 1 else None
                if user is None or item is None:
                    raise DataError(
                        f"{path} line {number}: expected 'user<TAB>item' with non-negative integer ids, "
                        f"got {line.strip()[:80]!r}"
                    )
                users.append(user)
                items.append(item)
                lines.append(number)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc}); check the file") from None
    if not users:
        raise DataError(f"{path}: no interactions (the file is empty); check the file")
    return users, items, lines


def read_var_layout(root: str | Path, name: str | None = None) -> RawData:
    """Read a VAR dataset folder (see the module docstring).

    Raises:
        DataError: A missing file or folder, a malformed line, duplicate item ids
            among the images, an unreadable classes.csv or features.npy.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found; check data.path (and --data-root / RAYGRID_DATA_ROOT)")
    image_dir = root / "original" / "images"
    images = scan_image_folder(image_dir, integer_id)
    item_ids = sorted(images, key=int)

    files = [root / "trainingset.tsv", root / "testset.tsv"]
    users: list[str] = []
    items: list[str] = []
    file_of: list[np.ndarray] = []
    line_of: list[int] = []
    for index, path in enumerate(files):
        u, i, lines = read_pairs_tsv(path)
        users += u
        items += i
        line_of += lines
        file_of.append(np.full(len(u), index, dtype=np.int8))
    file_index = np.concatenate(file_of)
    line_numbers = np.asarray(line_of)

    def row_label(row: int) -> str:
        return f"{files[file_index[row]]} line {line_numbers[row]}"

    classes = None
    if (root / "classes.csv").is_file():
        classes = read_classes_csv(root / "classes.csv", integer_id)
    features = None
    if (root / "features.npy").is_file():
        features = _read_features(root / "features.npy", item_ids)
    return RawData(
        name=name or root.name,
        users=np.asarray(users, dtype=object),
        items=np.asarray(items, dtype=object),
        item_ids=item_ids,
        sources=folder_sources(item_ids, images, root),
        row_label=row_label,
        missing_item=f"has no image in {image_dir} (missing image)",
        parts=np.where(file_index == 0, TRAIN, TEST).astype(np.int8),
        item_classes=classes,
        item_features=features,
    )


def _read_features(path: Path, item_ids: list[str]) -> np.ndarray:
    """Rows of ``features.npy`` (indexed by integer item id) for ``item_ids``."""
    try:
        features = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc}); remove it or write it again") from None
    needed = max(int(i) for i in item_ids) + 1 if item_ids else 0
    if features.ndim != 2 or features.shape[0] < needed or not np.issubdtype(features.dtype, np.number):
        raise DataError(
            f"{path}: expected a numeric (n_items, D) array with at least {needed} rows (one per item id), "
            f"got {features.dtype} {features.shape}; remove it or write it again"
        )
    return np.asarray(features[[int(i) for i in item_ids]], dtype=np.float32)
