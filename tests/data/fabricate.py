"""Fabricated dataset files in the real formats, small enough for unit tests."""

from __future__ import annotations

import io
import json
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def image_bytes(color: tuple[int, int, int], fmt: str = "JPEG", size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    """Encoded bytes of a two-tone image (``color`` left, its complement right) in ``fmt`` and ``mode``."""
    array = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    array[:, : size[0] // 2] = color
    array[:, size[0] // 2 :] = [255 - c for c in color]
    image = Image.fromarray(array).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def item_color(item: int) -> tuple[int, int, int]:
    """A distinct colour per item."""
    return ((item * 37) % 256, (item * 91 + 40) % 256, (item * 53 + 80) % 256)


def item_image(item: int) -> bytes:
    """Item images vary in format and mode: RGB JPEG, grayscale JPEG, RGB PNG, RGBA PNG, palette PNG."""
    kind = item % 5
    if kind == 1:
        return image_bytes(item_color(item), "JPEG", mode="L")
    if kind == 2:
        return image_bytes(item_color(item), "PNG")
    if kind == 3:
        return image_bytes(item_color(item), "PNG", mode="RGBA")
    if kind == 4:
        return image_bytes(item_color(item), "PNG", mode="P")
    return image_bytes(item_color(item), "JPEG")


def interactions(n_users: int = 30, n_items: int = 24, seed: int = 0) -> list[tuple[int, int, int]]:
    """``(user, item, time)`` rows: every user 5 to 8 distinct items, every item used at least 5 times."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        count = int(rng.integers(5, 9))
        items = [(user + j * 3) % n_items for j in range(count)]
        for t, item in enumerate(items):
            rows.append((user, item, 1_600_000_000 + user * 1000 + t * 10))
    return rows


def write_var_layout(root: Path, n_users: int = 30, n_items: int = 24, extension: str = "jpg") -> Path:
    """A VAR dataset folder: images, trainingset.tsv and testset.tsv (each user's last item in test)."""
    images = root / "original" / "images"
    images.mkdir(parents=True)
    for item in range(n_items):
        (images / f"{item}.{extension}").write_bytes(item_image(item))
    rows = interactions(n_users, n_items)
    last = {u: (i, t) for u, i, t in rows}  # rows are chronological per user
    train = [f"{u}\t{i}" for u, i, t in rows if (i, t) != last[u]]
    test = [f"{u}\t{last[u][0]}" for u in range(n_users)]
    (root / "trainingset.tsv").write_text("\n".join(train) + "\n")
    (root / "testset.tsv").write_text("\n".join(test) + "\n")
    return root


def write_dvbpr(path: Path, n_users: int = 30, n_items: int = 24, extra_items: int = 6) -> Path:
    """A Python-2-style DVBPR file: bytes keys, pickle protocol 2, ``np.save`` of the 6-part list.

    The ``extra_items`` last items have no interaction (cold item candidates).
    """
    rows = interactions(n_users, n_items)
    per_user: dict[int, list[dict[bytes, object]]] = {u: [] for u in range(n_users)}
    for u, i, t in rows:
        per_user[u].append({b"productid": i, b"reviewerID": f"U{u}".encode(), b"time": t})
    train = {u: r[:-2] for u, r in per_user.items()}
    validation = {u: [r[-2]] for u, r in per_user.items()}
    test = {u: [r[-1]] for u, r in per_user.items()}
    items = {i: {b"imgs": item_image(i), b"asin": f"B{i:05d}".encode()} for i in range(n_items + extra_items)}
    content = np.empty(6, dtype=object)
    content[:] = [train, validation, test, items, n_users, n_items + extra_items]
    write_python2_npy(path, content)
    return path


class Python2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Pickles ``bytes`` as Python 2 ``str`` (``BINSTRING`` opcodes), as Python 2 wrote them.

    Python 3 can read such strings back only with ``encoding='bytes'`` (or a
    text encoding), which is what makes the DVBPR files need it.
    """

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_python2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str


def write_python2_npy(path: Path, content: object) -> None:
    """Write ``content`` as an object ``.npy`` pickled with protocol 2 and Python 2 strings."""
    array = content if isinstance(content, np.ndarray) else np.array(content, dtype=object)
    with path.open("wb") as fh:
        np.lib.format.write_array_header_1_0(fh, np.lib.format.header_data_from_array_1_0(array))
        Python2Pickler(fh, protocol=2).dump(array)


def write_amazon(root: Path, n_users: int = 30, n_items: int = 24) -> Path:
    """McAuley-style reviews.json (JSON lines) and images/<asin>.jpg|png."""
    (root / "images").mkdir(parents=True)
    for item in range(n_items):
        ext = "png" if item % 5 in (2, 3, 4) else "jpg"
        (root / "images" / f"B{item:05d}.{ext}").write_bytes(item_image(item))
    lines = []
    for u, i, t in interactions(n_users, n_items):
        review = {"reviewerID": f"A{u:04d}", "asin": f"B{i:05d}", "overall": float(1 + (u + i) % 5), "unixReviewTime": t}
        lines.append(json.dumps(review))
    (root / "reviews.json").write_text("\n".join(lines) + "\n")
    return root / "reviews.json"
