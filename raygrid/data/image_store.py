"""The canonical image store: every item image decoded once to ``uint8`` RGB, memory-mapped.

Real catalogues hold tens of thousands of JPEG and PNG images (some grayscale,
some with an alpha channel, a few broken). Every later stage (extractor
training, feature extraction, attacks) needs them as one ``uint8`` array
``(n_items, size, size, 3)``. Decoding them is the expensive part of loading a
dataset, so it happens once per (set of image contents, size):

* **Keyed by content.** The store's key hashes the bytes of every source image
  in catalogue order, the output size and the decoder version, never the file
  names or paths: moving the data folder keeps the store, editing one image
  makes a new one.
* **Found without reading the images again.** ``<root>/index/`` maps a
  fingerprint of the sources (file paths, sizes and modification times; the
  bytes of in-memory images) to the content key, so loading a dataset a second
  time costs a ``stat`` per file. A build reads each file once, for its hash and
  its pixels; if the content key then names an existing store (the same images
  under other paths), that store is used.
* **Layout.** ``<root>/<key[:2]>/<key>/images.npy`` (a plain ``.npy`` opened
  with ``mmap_mode="r"``) and ``meta.json`` (size, count, dropped items).
  A store is built in a temporary folder and renamed into place, so a
  crash or a refused image never leaves a half store.
* **Cheap to pickle.** The array handed out is a :class:`StoredImages`, an
  ``ndarray`` that pickles as *(store folder, key)* and re-opens the memory map
  when unpickled. A :class:`~raygrid.data.dataset.Dataset` holding it costs a
  few hundred bytes in the stage cache and in the Ray object store, and every
  process on a node shares the page cache instead of its own copy. The flip
  side: the store must be readable wherever the dataset is unpickled, so on a
  multi-node cluster the store root must be on a filesystem every node mounts
  (the default puts it beside the data, which the nodes need anyway).
* **Fast to build.** Decoding runs in a pool of processes, and JPEGs larger
  than the target are decoded with PIL's draft mode (scaling in the DCT domain,
  so a 300 px JPEG is decoded at 75 px before the final resize to 64):
  ``benchmarks/image_store.py`` measures it.

Images are resized to ``size x size`` without keeping the aspect ratio, as the
authors' code of both papers did (torchvision ``Resize((224, 224))``);
transparent pixels are composited on white (product photos are shot on white).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile

from raygrid.errors import DataError

logger = logging.getLogger(__name__)

DECODER_VERSION = 3
"""Bump when decoding or resizing changes, so stores built by older code are not reused."""

DRAFT_MIN_FRACTION = 0.75
"""JPEG draft mode decodes at the smallest DCT scale (1, 1/2, 1/4, 1/8) whose sides
stay at least this fraction of the target side; the final resize then enlarges by
at most 1/0.75. On 200-300 px product photos stored at 64 px this saves about a
sixth of the decoding time against requiring the full target side, for a mean
pixel difference to a full-resolution decode that grows from 1.24 to 1.30 / 255."""

_CHUNK = 128
"""Images per task handed to a decoding process."""

_JPEG_MAGIC = b"\xff\xd8\xff"

_MIN_PARALLEL = 256
"""Fewer images than this are decoded in the calling process (a pool costs more to start)."""


@dataclass(frozen=True)
class ImageSource:
    """Where one item's image comes from: a file or bytes already in memory.

    Attributes:
        label: How error messages name it, e.g. ``"original/images/57.jpg (item '57')"``.
        path: The image file, or ``None`` when ``data`` holds the bytes.
        data: The encoded image (JPEG, PNG, ...), or ``None`` when ``path`` is given.
    """

    label: str
    path: str | None = None
    data: bytes | None = None

    def read(self) -> bytes:
        """The encoded bytes.

        Raises:
            OSError: The file is missing or unreadable.
        """
        if self.data is not None:
            return self.data
        if self.path is None:
            raise FileNotFoundError("no image given")
        with open(self.path, "rb") as fh:
            return fh.read()


class StoredImages(np.ndarray):
    """A read-only memory-mapped image array that pickles as a reference to its store.

    Only the array returned by :func:`open_store_images` carries the reference;
    slices and copies of it pickle as ordinary arrays (their data).
    """

    _store_dir: str | None = None

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Pickle the store reference (or, for a derived array, the data)."""
        if self._store_dir is not None:
            return (open_store_images, (self._store_dir,))
        return super().__reduce_ex__(protocol)

    @property
    def store_dir(self) -> str | None:
        """The store folder this array maps, or ``None`` for a derived array."""
        return self._store_dir


def open_store_images(directory: str | os.PathLike[str]) -> StoredImages:
    """Memory-map the images of the store in ``directory`` (read-only).

    Raises:
        DataError: The store is missing or damaged on this machine (on a cluster:
            the store root is not on a shared filesystem).
    """
    directory = str(directory)
    try:
        array = np.load(os.path.join(directory, "images.npy"), mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise DataError(
            f"image store {directory} cannot be opened ({exc}); on a cluster put the image store on a "
            "filesystem every node mounts (data.image_store or RAYGRID_IMAGE_STORE)"
        ) from None
    images = array.view(StoredImages)
    images._store_dir = directory
    return images


@dataclass(frozen=True)
class ImageStore:
    """An opened image store.

    Attributes:
        directory: Its folder.
        key: Its content key.
        images: ``uint8`` ``(len(kept), size, size, 3)``, memory-mapped, read-only.
        kept: Indices (into the sources it was built from) of the images it holds, ascending.
        dropped: Message per dropped source index (only with ``skip_bad``).
        built: Whether this call decoded the images (``False``: found in the store).
    """

    directory: Path
    key: str
    images: StoredImages
    kept: np.ndarray
    dropped: dict[int, str] = field(default_factory=dict)
    built: bool = False


def default_workers() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def decode_image(data: bytes, size: int) -> np.ndarray:
    """Decode one encoded image to ``uint8`` RGB ``(size, size, 3)``.

    Grayscale, palette and CMYK images are converted to RGB; transparent pixels
    are composited on white. JPEGs are decoded in draft mode (DCT-domain
    downscaling by 2, 4 or 8, never below :data:`DRAFT_MIN_FRACTION` of
    ``size``), then resized (area average when shrinking, bilinear when enlarging).

    Raises:
        ValueError: Empty input.
        OSError, SyntaxError: Not an image, or a corrupt or truncated one (PIL's errors).
    """
    if not data:
        raise ValueError("the image file is empty")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        # JPEG (most product images) skips Image.open's format probing.
        opened = JpegImageFile(io.BytesIO(data)) if data[:3] == _JPEG_MAGIC else Image.open(io.BytesIO(data))
        with opened as image:
            if image.format == "JPEG":
                side = max(1, int(size * DRAFT_MIN_FRACTION))
                image.draft("RGB", (side, side))
            image.load()  # decode now, so truncation surfaces here
            rgb = _to_rgb(image)
    if rgb.size != (size, size):
        # Shrinking (the usual case, by less than 2x after draft): an area average; enlarging: bilinear.
        shrink = rgb.size[0] >= size and rgb.size[1] >= size
        rgb = rgb.resize((size, size), Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    has_alpha = image.mode in ("RGBA", "LA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def describe_decode_error(exc: BaseException) -> str:
    """A short phrase for why an image could not be decoded."""
    if isinstance(exc, FileNotFoundError):
        return "image file is missing"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image (no known image format)"
    text = str(exc).strip() or type(exc).__name__
    if "truncated" in text.lower():
        return f"truncated image ({text})"
    if isinstance(exc, ValueError) and "empty" in text:
        return text
    return f"corrupt image ({text})"


def _digest(source: ImageSource) -> bytes:
    """16-byte content hash of one source; a missing or unreadable file hashes its label and error."""
    try:
        data = source.read()
    except OSError as exc:
        return _unreadable_digest(source, exc)
    return hashlib.blake2b(data, digest_size=16).digest()


def _unreadable_digest(source: ImageSource, exc: OSError) -> bytes:
    return hashlib.blake2b(f"unreadable\0{source.label}\0{type(exc).__name__}".encode(), digest_size=16).digest()


def _combine(digests: Sequence[bytes], size: int) -> str:
    h = hashlib.blake2b(digest_size=20)
    h.update(f"raygrid-image-store/{DECODER_VERSION}/{size}/{len(digests)}\0".encode())
    for d in digests:
        h.update(d)
    return h.hexdigest()


def store_key(sources: Sequence[ImageSource], size: int, workers: int = 1) -> str:
    """The content key of the store of ``sources`` at ``size`` (reads every source once)."""
    if workers > 1 and len(sources) >= _MIN_PARALLEL:
        # Reading files and hashing release the GIL: threads are enough.
        with concurrent.futures.ThreadPoolExecutor(max_workers=2 * workers) as pool:
            digests = list(pool.map(_digest, sources, chunksize=64))
    else:
        digests = [_digest(s) for s in sources]
    return _combine(digests, size)


def _fingerprint_part(source: ImageSource) -> bytes:
    """What identifies a source cheaply: its bytes' hash in memory, a file's path, size and mtime."""
    if source.data is not None or source.path is None:
        return b"d" + _digest(source)
    try:
        st = os.stat(source.path)
    except OSError as exc:
        return b"x" + _unreadable_digest(source, exc)
    return f"f{os.path.realpath(source.path)}\0{st.st_size}\0{st.st_mtime_ns}".encode()


def fingerprint(sources: Sequence[ImageSource], size: int) -> str:
    """A key of ``sources`` that needs no file reads (paths, sizes and modification times).

    It only finds the content key of a store built before (the store index); a
    changed file changes its size or modification time and so misses the index.
    """
    h = hashlib.blake2b(digest_size=20)
    h.update(f"raygrid-image-index/{DECODER_VERSION}/{size}/{len(sources)}\0".encode())
    for source in sources:
        part = _fingerprint_part(source)
        h.update(len(part).to_bytes(4, "little") + part)
    return h.hexdigest()


def _decode_into(
    npy_path: str, start: int, sources: Sequence[ImageSource], size: int
) -> tuple[list[bytes], list[tuple[int, str]]]:
    """Decode ``sources`` into rows ``start, start+1, ...`` of the ``.npy`` at ``npy_path``.

    Each source is read once, for both its content hash and its pixels; the
    chunk's rows go to the file in one ``pwrite`` (cheaper than faulting in the
    pages of a fresh memory map, and safe from several processes at once).

    Returns:
        The content digest of every source, and the failures as ``(row, message)``.
    """
    rows = np.zeros((len(sources), size, size, 3), dtype=np.uint8)
    digests: list[bytes] = []
    failures: list[tuple[int, str]] = []
    for offset, source in enumerate(sources):
        try:
            data = source.read()
        except OSError as exc:
            digests.append(_unreadable_digest(source, exc))
            failures.append((start + offset, describe_decode_error(exc)))
            continue
        digests.append(hashlib.blake2b(data, digest_size=16).digest())
        try:
            rows[offset] = decode_image(data, size)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            failures.append((start + offset, describe_decode_error(exc)))
    header = np.load(npy_path, mmap_mode="r").offset
    fd = os.open(npy_path, os.O_WRONLY)
    try:
        os.pwrite(fd, rows.data, header + start * rows[0].nbytes if len(rows) else header)
    finally:
        os.close(fd)
    return digests, failures


def open_or_build(
    sources: Sequence[ImageSource],
    size: int,
    root: str | os.PathLike[str],
    *,
    skip_bad: bool = False,
    workers: int | None = None,
) -> ImageStore:
    """The store of ``sources`` at ``size`` under ``root``: opened if it exists, else built.

    A store built before is found through the store index (by paths, sizes and
    modification times: no file is read) or, when the files moved, by its
    content key after reading them. Building reads each file once.

    Args:
        sources: One image per item, in catalogue order.
        size: Side of the stored square images in pixels.
        root: Folder holding the stores (created if needed).
        skip_bad: Drop items whose image is missing or cannot be decoded (their
            count and the first few are logged) instead of failing.
        workers: Decoding processes; default: every core this process may use.

    Returns:
        The opened store; ``kept`` says which sources it holds.

    Raises:
        DataError: A bad image without ``skip_bad`` (the message names the first
            one and counts the others; nothing is left in the store root), every
            image bad, or a store root that cannot be written.
    """
    if not sources:
        raise DataError("no item images to store: the catalogue is empty")
    workers = default_workers() if workers is None else max(1, workers)
    root = Path(root).expanduser()
    index_key = fingerprint(sources, size)
    store = None
    key = _read_index(root, index_key)
    if key is not None:
        store = _open_existing(root / key[:2] / key, key, len(sources), size)
    if store is None:
        store = _build(sources, size, root, workers, skip_bad)
        _write_index(root, index_key, store.key)
    if store.dropped and not skip_bad:
        raise _bad_images_error(sources, store.dropped)
    if store.dropped:
        shown = "; ".join(f"{sources[i].label}: {m}" for i, m in list(store.dropped.items())[:3])
        logger.warning(
            "dropped %d of %d items whose image is bad (skip_bad_images): %s%s",
            len(store.dropped), len(sources), shown, " ..." if len(store.dropped) > 3 else "",
        )
    return store


def _read_index(root: Path, index_key: str) -> str | None:
    try:
        key = (root / "index" / index_key[:2] / index_key).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return key if len(key) == 40 and all(c in "0123456789abcdef" for c in key) else None


def _write_index(root: Path, index_key: str, key: str) -> None:
    """Record ``index_key -> key`` atomically; the index is an accelerator, so failing to write it is harmless."""
    folder = root / "index" / index_key[:2]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{index_key}.")
        with os.fdopen(fd, "w") as fh:
            fh.write(key)
        os.replace(tmp, folder / index_key)
    except OSError as exc:
        logger.warning("cannot write the image store index in %s (%s); later loads will re-read the images", folder, exc)


def _bad_images_error(sources: Sequence[ImageSource], dropped: dict[int, str]) -> DataError:
    first = min(dropped)
    more = f" (and {len(dropped) - 1} more bad image(s))" if len(dropped) > 1 else ""
    return DataError(
        f"{sources[first].label}: {dropped[first]}{more}; fix or remove the file, "
        "or set data.skip_bad_images: true to drop such items"
    )


def _open_existing(final: Path, key: str, n_sources: int, size: int) -> ImageStore | None:
    meta_path = final / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        dropped = {int(k): str(v) for k, v in meta["dropped"].items()}
        kept = np.setdiff1d(np.arange(n_sources), np.fromiter(dropped, dtype=np.int64, count=len(dropped)))
        images = open_store_images(final)
        if meta["key"] != key or images.shape != (kept.size, size, size, 3) or images.dtype != np.uint8:
            raise ValueError("store does not match its key")
    except (OSError, ValueError, KeyError, TypeError, DataError) as exc:
        logger.warning("image store %s is damaged (%s); rebuilding it", final, exc)
        shutil.rmtree(final, ignore_errors=True)
        return None
    logger.info("image store %s: %d images of %d px (cached)", final, kept.size, size)
    return ImageStore(final, key, images, kept.astype(np.int64), dropped, built=False)


def _build(sources: Sequence[ImageSource], size: int, root: Path, workers: int, skip_bad: bool) -> ImageStore:
    """Decode every source into a temporary store, then rename it to its content key (or use the existing one)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".build-"))
    except OSError as exc:
        raise DataError(
            f"cannot write the image store under {root} ({exc.strerror or exc}); set data.image_store "
            "or RAYGRID_IMAGE_STORE to a writable folder (on a cluster: one every node mounts)"
        ) from None
    start = time.perf_counter()
    try:
        n = len(sources)
        everything = tmp / "all.npy"
        out = np.lib.format.open_memmap(everything, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
        del out
        digests, failures = _decode_all(str(everything), sources, size, workers)
        key = _combine(digests, size)
        final = root / key[:2] / key
        existing = _open_existing(final, key, n, size)
        if existing is not None:  # the same images under other paths: built before
            shutil.rmtree(tmp, ignore_errors=True)
            return existing
        dropped = dict(sorted(failures))
        if (dropped and not skip_bad) or len(dropped) == n:
            raise _bad_images_error(sources, dropped)  # before anything is kept
        if dropped:
            kept = np.setdiff1d(np.arange(n), np.fromiter(dropped, dtype=np.int64))
            _compact(everything, tmp / "images.npy", kept)
            everything.unlink()
        else:
            kept = np.arange(n)
            everything.rename(tmp / "images.npy")
        meta = {"key": key, "size": size, "n_sources": n, "decoder_version": DECODER_VERSION,
                "dropped": {str(k): v for k, v in dropped.items()}}
        _fsync(tmp / "images.npy")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():  # not a concurrent builder's finished store
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("image store %s: decoded %d images to %d px in %.1f s", final, n, size, time.perf_counter() - start)
    return ImageStore(final, key, open_store_images(final), kept.astype(np.int64), dropped, built=True)


def _decode_all(
    npy_path: str, sources: Sequence[ImageSource], size: int, workers: int
) -> tuple[list[bytes], list[tuple[int, str]]]:
    n = len(sources)
    if workers <= 1 or n < _MIN_PARALLEL:
        return _decode_into(npy_path, 0, sources, size)
    context = multiprocessing.get_context(_start_method())
    digests: list[bytes] = []
    failures: list[tuple[int, str]] = []
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, -(-n // _CHUNK)), mp_context=context) as pool:
        futures = [
            pool.submit(_decode_into, npy_path, start, list(sources[start : start + _CHUNK]), size)
            for start in range(0, n, _CHUNK)
        ]
        for future in futures:
            chunk_digests, chunk_failures = future.result()
            digests.extend(chunk_digests)
            failures.extend(chunk_failures)
    return digests, failures


def _fsync(path: Path) -> None:
    """Write ``path``'s data to disk before the store is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _start_method() -> str:
    """``fork`` in a plain process, ``spawn`` inside Ray or next to torch.

    Forking is the cheap way to start decoders (no re-import of raygrid, about a
    second per process), and the children only run PIL and numpy. But a Ray
    worker holds gRPC threads and torch may hold an OpenMP pool, neither of
    which survives a fork safely; there fresh interpreters are spawned instead.
    """
    if "ray" in sys.modules or "torch" in sys.modules or "fork" not in multiprocessing.get_all_start_methods():
        return "spawn"
    return "fork"


def _compact(src: Path, dst: Path, kept: np.ndarray) -> None:
    """Copy rows ``kept`` of the ``.npy`` at ``src`` to a new ``.npy`` at ``dst``, a block at a time."""
    full = np.load(src, mmap_mode="r")
    out = np.lib.format.open_memmap(dst, mode="w+", dtype=np.uint8, shape=(kept.size, *full.shape[1:]))
    for start in range(0, kept.size, 4096):
        out[start : start + 4096] = full[kept[start : start + 4096]]
    out.flush()
    del out, full
