"""A catalogue with some rows replaced, read in pieces without copying the catalogue.

At the AIP study's scale a catalogue's images are tens of gigabytes (326k items at
224 px: 49 GB), kept as a read-only memory map. Scoring the catalogue with a few
thousand items' images swapped in (the attacked items, or the cold items'
cooperative and adversarial versions) used to copy the whole array first; a
:class:`PatchedRows` instead answers each read (a batch of rows) from the base
array and applies the replaced rows to that batch only. Readers that walk the
catalogue in batches (DVBPR's network, feature extraction) then hold one batch,
not a second catalogue.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class PatchedRows:
    """Read-only view of ``base`` with the rows ``rows`` replaced by ``values``.

    Indexing with an int, a slice or an integer array returns a new ``ndarray``
    (the patched rows of that selection); ``np.asarray`` of the whole view
    materialises it, for readers that need every row at once.

    Args:
        base: ``(n, ...)`` array or memory map; never written.
        rows: ``int`` ``(m,)`` distinct row ids in ``[0, n)``.
        values: ``(m, ...)`` replacement rows, the dtype and row shape of ``base``.

    Raises:
        ValueError: If the rows repeat or fall outside ``base``, or ``values`` does not fit.
    """

    def __init__(self, base: Any, rows: np.ndarray, values: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        values = np.asarray(values)
        n = len(base)
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise ValueError(f"patched rows must lie in [0, {n})")
        if np.unique(rows).size != rows.size:
            raise ValueError("patched rows must be distinct")
        if values.shape != (rows.size, *base.shape[1:]) or values.dtype != base.dtype:
            raise ValueError(
                f"replacement rows must be {base.dtype} {(rows.size, *base.shape[1:])}, got {values.dtype} {values.shape}"
            )
        self.base = base
        self.rows = rows
        self.values = values
        self._slot = np.full(n, -1, dtype=np.int64)  # row -> index into values, -1 = unpatched
        self._slot[rows] = np.arange(rows.size)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of ``base``."""
        return tuple(self.base.shape)

    @property
    def dtype(self) -> np.dtype:
        """The dtype of ``base``."""
        return self.base.dtype

    @property
    def ndim(self) -> int:
        """The number of dimensions of ``base``."""
        return len(self.base.shape)

    @property
    def nbytes(self) -> int:
        """The bytes a materialised copy would take."""
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int | slice | np.ndarray) -> np.ndarray:
        """The selected rows, patched, as a new array (an int gives one row)."""
        if isinstance(index, tuple):
            raise TypeError("PatchedRows selects rows only: index with an int, a slice or an integer array")
        ids = np.arange(len(self))[index]
        out = np.array(self.base[index])  # a copy: a slice of a memory map would be a view
        slots = self._slot[ids]
        if np.ndim(ids) == 0:
            return self.values[slots].copy() if slots >= 0 else out
        hit = slots >= 0
        if hit.any():
            out[hit] = self.values[slots[hit]]
        return out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """The whole patched catalogue, materialised (a copy of ``base``)."""
        if copy is False:
            raise ValueError("a PatchedRows cannot be read as one array without copying its base")
        out = np.array(self.base, dtype=dtype)
        out[self.rows] = self.values
        return out


__all__ = ["PatchedRows"]
