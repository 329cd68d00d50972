"""The DVBPR dataset file used by the AIP study.

One pickled ``.npy`` per dataset (``AmazonMenWithImgPartitioned.npy``,
``TradesyImgPartitioned.npy``), written by Python 2 with ``np.save`` of the list
``[user_train, user_validation, user_test, Item, usernum, itemnum]``:

* ``user_train[u]``, ``user_validation[u]``, ``user_test[u]``: for each user
  ``u`` in ``0..usernum-1``, a list of interaction dicts with the key
  ``b'productid'`` (an item index; optionally a time under ``b'time'``,
  ``b'unixReviewTime'`` or ``b'timestamp'``);
* ``Item[i]``: for each item ``i`` in ``0..itemnum-1``, a dict whose ``b'imgs'``
  holds the encoded image (JPEG or PNG bytes; some grayscale, converted to RGB).

Keys are ``bytes`` because Python 2 ``str`` objects unpickle as ``bytes`` with
``encoding='bytes'``; ``str`` keys (a file re-written by Python 3) are accepted too.

**Security.** Unpickling runs code chosen by whoever wrote the file. raygrid
unpickles only the file the user names in ``data.path`` (never one it finds by
itself); load only files from a source you trust.

The split in the file is kept (one validation and one test item per user).
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from raygrid.data.formats.common import require_file
from raygrid.data.image_store import ImageSource
from raygrid.data.preprocess import TEST, TRAIN, VALIDATION, RawData
from raygrid.errors import DataError

logger = logging.getLogger(__name__)

_PARTS = (("user_train", TRAIN), ("user_validation", VALIDATION), ("user_test", TEST))
_TIME_KEYS = ("time", "unixReviewTime", "timestamp")


def _get(record: Mapping[Any, Any], key: str) -> Any:
    """``record[b'key']``, else ``record['key']``; ``KeyError`` if neither."""
    if key.encode() in record:
        return record[key.encode()]
    return record[key]


def _has(record: Mapping[Any, Any], key: str) -> bool:
    return key.encode() in record or key in record


def _entries(container: Any, what: str, path: Path) -> list[tuple[int, Any]]:
    """``(index, value)`` pairs of a dict keyed by int or of a list."""
    if isinstance(container, Mapping):
        pairs = []
        for key, value in container.items():
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
                raise DataError(f"{path}: not the DVBPR structure: {what} has the key {key!r}, expected integer indices")
            pairs.append((int(key), value))
        return sorted(pairs, key=lambda kv: kv[0])
    if isinstance(container, (list, tuple)):
        return list(enumerate(container))
    raise DataError(f"{path}: not the DVBPR structure: {what} is a {type(container).__name__}, expected a dict or list")


def load_dvbpr_npy(path: str | Path) -> list[Any]:
    """Unpickle the DVBPR file at ``path`` (runs code: trusted files only) into its six parts.

    Raises:
        DataError: Missing, empty, truncated or corrupt file, or not a list of six parts.
    """
    path = Path(path).expanduser()
    require_file(path, "DVBPR dataset file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; download or copy it again")
    try:
        content = np.load(path, encoding="bytes", allow_pickle=True)
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ImportError,
            AttributeError, TypeError, IndexError, MemoryError) as exc:
        raise DataError(
            f"{path}: not a readable .npy file (truncated or corrupt: {type(exc).__name__}: {str(exc)[:120]}); "
            "download or copy it again"
        ) from None
    if isinstance(content, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: an .npz archive, not the DVBPR .npy file; give the *ImgPartitioned.npy file")
    if isinstance(content, np.ndarray) and content.dtype == object and content.ndim == 0:
        content = content.item()
    if isinstance(content, np.ndarray) and content.dtype == object and content.ndim == 1:
        content = list(content)
    if not isinstance(content, (list, tuple)) or len(content) != 6:
        shape = getattr(content, "shape", None)
        raise DataError(
            f"{path}: not the DVBPR structure: expected the list [user_train, user_validation, user_test, Item, "
            f"usernum, itemnum], got {type(content).__name__}{f' of shape {shape}' if shape is not None else ''}"
        )
    return list(content)


def read_dvbpr(path: str | Path, name: str | None = None) -> RawData:
    """Read a DVBPR dataset file (see the module docstring).

    Raises:
        DataError: An unreadable file, or one whose content is not the DVBPR structure
            (the message names the part and the entry).
    """
    path = Path(path).expanduser()
    parts = load_dvbpr_npy(path)
    usernum, itemnum = parts[4], parts[5]
    for what, value in (("usernum", usernum), ("itemnum", itemnum)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise DataError(f"{path}: not the DVBPR structure: {what} is {value!r}, expected a non-negative integer")

    item_ids: list[str] = []
    sources: list[ImageSource] = []
    for index, record in _entries(parts[3], "Item", path):
        if not isinstance(record, Mapping):
            raise DataError(f"{path}: not the DVBPR structure: Item[{index}] is a {type(record).__name__}, expected a dict")
        data = _get(record, "imgs") if _has(record, "imgs") else None
        if data is not None and not isinstance(data, (bytes, bytearray)):
            raise DataError(f"{path}: Item[{index}][b'imgs'] is a {type(data).__name__}, expected encoded image bytes")
        item_ids.append(str(index))
        sources.append(ImageSource(label=f"{path.name}: Item[{index}][b'imgs']", data=bytes(data) if data is not None else None))
    if len(item_ids) != int(itemnum):
        logger.warning("%s: itemnum says %d items but Item holds %d; using Item", path, int(itemnum), len(item_ids))

    users: list[str] = []
    items: list[str] = []
    times: list[float] = []
    part_of: list[int] = []
    where: list[tuple[str, int, int]] = []
    all_timed = True
    for (part_name, part), container in zip(_PARTS, parts[:3]):
        for user, records in _entries(container, part_name, path):
            if not isinstance(records, (list, tuple)):
                raise DataError(
                    f"{path}: not the DVBPR structure: {part_name}[{user}] is a {type(records).__name__}, "
                    "expected a list of interaction dicts"
                )
            for k, record in enumerate(records):
                if not isinstance(record, Mapping) or not _has(record, "productid"):
                    raise DataError(f"{path}: not the DVBPR structure: {part_name}[{user}][{k}] has no b'productid'")
                product = _get(record, "productid")
                if isinstance(product, bool) or not isinstance(product, (int, np.integer)):
                    raise DataError(f"{path}: {part_name}[{user}][{k}][b'productid'] is {product!r}, expected an item index")
                stamp = next((_get(record, t) for t in _TIME_KEYS if _has(record, t)), None)
                if isinstance(stamp, (int, float, np.integer, np.floating)) and not isinstance(stamp, bool):
                    times.append(float(stamp))
                else:
                    all_timed = False
                    times.append(0.0)
                users.append(str(user))
                items.append(str(int(product)))
                part_of.append(part)
                where.append((part_name, user, k))

    def row_label(row: int) -> str:
        part_name, user, k = where[row]
        return f"{path}: {part_name}[{user}][{k}]"

    return RawData(
        name=name or path.stem,
        users=np.asarray(users, dtype=object),
        items=np.asarray(items, dtype=object),
        item_ids=item_ids,
        sources=sources,
        row_label=row_label,
        missing_item="is not in the file's Item dict (unknown item)",
        timestamps=np.asarray(times) if all_timed and times else None,
        parts=np.asarray(part_of, dtype=np.int8),
    )
