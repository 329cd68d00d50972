"""Item ids that may come near the filesystem.

Item ids come from the user's files (an ASIN, a number, anything in a CSV
column). raygrid never joins an id into a path as it is: an id is either checked
to be a plain file stem (:func:`check_file_stem`, used where the published
layout names images ``<item_id>.jpg``), or turned into one
(:func:`safe_file_stem`, used wherever raygrid itself writes a file per item).
"""

from __future__ import annotations

import hashlib
import re

from raygrid.errors import DataError

_PLAIN_STEM = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=@-]{0,199}")
"""What a file stem made from an id may look like: no separators, no leading dot."""


def is_plain_file_stem(item_id: str) -> bool:
    """Whether ``item_id`` can be used as a file stem as it is.

    It must be 1 to 200 characters of letters, digits and ``_ . + = @ -``, not
    start with a dot, and not contain ``..``; so it holds no path separator, is
    not ``.``/``..``, and names no hidden file.
    """
    return bool(_PLAIN_STEM.fullmatch(item_id)) and ".." not in item_id


def check_file_stem(item_id: str, where: str) -> str:
    """Return ``item_id`` if it is a plain file stem, else raise naming ``where`` it came from.

    Raises:
        DataError: The id holds a path separator, ``..``, a leading dot or other
            characters that cannot safely name a file.
    """
    if not is_plain_file_stem(item_id):
        raise DataError(
            f"{where}: item id {item_id!r} cannot name an image file (path separators, '..', a leading dot "
            "and characters other than letters, digits and _.+=@- are refused); fix the id"
        )
    return item_id


def safe_file_stem(item_id: str) -> str:
    """A file stem for ``item_id`` that is safe to create and unique per id.

    Plain ids (see :func:`is_plain_file_stem`) are kept as they are; any other
    id has its unsafe characters replaced by ``_`` and a short hash of the
    original appended, so ``'a/b'`` and ``'a_b'`` never collide and ``'../x'``
    cannot leave the folder.
    """
    if is_plain_file_stem(item_id):
        return item_id
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", item_id).strip("_")[:80] or "item"
    digest = hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()
    return f"{cleaned}-{digest}"
