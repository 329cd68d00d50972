"""The content-addressed stage cache under a grid's storage root.

Each stage result is one entry ``<root>/cache/<stage>/<key[:2]>/<key>.pkl`` holding
the value and a small metadata record. Entries are written to a temporary name
beside the final one and renamed into place, so a crash (or a full or read-only
disk) never leaves a half entry and a restarted driver finds every finished
stage. An entry that cannot be read back (truncated, corrupt, written by
incompatible code) counts as a miss and is recomputed.

The root is a local folder, a shared filesystem path mounted alike on every node,
or a URI that :mod:`pyarrow.fs` understands (``s3://bucket/prefix``, ``file:///...``).
On S3 an object only appears once its upload completes, and the rename is a
server-side copy, so the same guarantee holds there.

Large arrays are memory-mapped, not read: an entry on a local root is written as a
short header, the pickle of the record with every contiguous buffer of at least
:data:`OUT_OF_BAND_BYTES` (a catalogue's ``float32`` features, adversarial images)
kept out of band, then those buffers, each 64-byte aligned. Loading maps the file
and hands the buffers to ``pickle`` as views of the map, so a 2.7 GB feature
matrix (326k items x 2048) costs page cache shared by every process on the
node instead of two private copies (the file's bytes and the unpickled array).
Such arrays are read-only: copy before mutating, as with Ray's object store.
Plain pickle entries (earlier versions, URI roots) still load.
"""

from __future__ import annotations

import errno
import json
import logging
import mmap
import os
import pickle
import struct
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from raygrid.errors import StorageError
from raygrid.pipeline.spec import StageSpec

log = logging.getLogger(__name__)

#: Name of the probe file :func:`check_storage` writes and removes.
PROBE_NAME = ".raygrid-write-test"

#: Buffers (numpy arrays, tensors' storage) at least this large are stored out of band and memory-mapped on load.
OUT_OF_BAND_BYTES = 1 << 20

#: First bytes of an entry with out-of-band buffers (a plain pickle starts with ``0x80``).
MAGIC = b"RGCACHE1"
_ALIGN = 64


class CacheMiss(KeyError):
    """No usable cache entry for a stage key."""


def is_uri(root: str | Path) -> bool:
    """Whether ``root`` is a URI (``s3://``, ``file://``) rather than a local path."""
    return "://" in str(root)


def resolve_root(root: str | Path, base: Path | None = None) -> str:
    """An absolute form of a storage root: a URI as given, a local path made absolute against ``base``."""
    if is_uri(root):
        return str(root).rstrip("/")
    path = Path(root).expanduser()
    return str(path if path.is_absolute() else (base or Path.cwd()).resolve() / path)


def filesystem(uri: str) -> tuple[Any, str]:
    """The :mod:`pyarrow.fs` filesystem of a storage URI and the path inside it.

    An ``s3://`` URI takes its credentials from the standard ``AWS_*`` variables and its
    endpoint from ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL`` or ``MLFLOW_S3_ENDPOINT_URL``
    (MinIO and other S3-compatible stores), in that order.

    Raises:
        StorageError: The URI's scheme is not supported or its filesystem cannot be opened.
    """
    import pyarrow.fs as pafs

    scheme, _, rest = uri.partition("://")
    try:
        if scheme == "s3":
            endpoint = next(
                (os.environ[v] for v in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL") if os.environ.get(v)),
                None,
            )
            options: dict[str, Any] = {}
            if endpoint:
                scheme_part, _, host = endpoint.partition("://")
                options = {"endpoint_override": host or endpoint, "scheme": scheme_part if host else "https"}
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            if region:
                options["region"] = region
            return pafs.S3FileSystem(**options), rest.rstrip("/")
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path.rstrip("/")
    except (OSError, ValueError) as exc:
        raise StorageError(f"storage.root {uri!r} cannot be opened ({exc}); use a folder, a shared path or s3://bucket/prefix") from None


class StageCache:
    """Stage results under a storage root, addressed by :attr:`StageSpec.key`.

    Args:
        root: The storage root (folder or URI); entries go under ``root/cache``.
        fs: A :mod:`pyarrow.fs` filesystem to use instead of the one ``root`` names
            (``root`` is then a path inside it): tests use a local stand-in for S3.
    """

    def __init__(self, root: str | Path, fs: Any | None = None) -> None:
        self.uri = resolve_root(root) if fs is None else str(root)
        self.fs: Any | None = fs
        self._base = str(root).rstrip("/") if fs is not None else ""
        if fs is None and is_uri(self.uri):
            self.fs, self._base = filesystem(self.uri)
        self.root = Path(self.uri) if self.fs is None else None

    @property
    def is_local(self) -> bool:
        """Whether entries are plain files on a (local or shared) filesystem."""
        return self.fs is None

    def _relative(self, spec: StageSpec) -> str:
        return f"cache/{spec.stage}/{spec.key[:2]}/{spec.key}.pkl"

    def path(self, spec: StageSpec) -> Path:
        """Where the entry of ``spec`` lives on a local root (whether or not it exists)."""
        if self.root is None:
            raise ValueError(f"the storage root {self.uri} is not a local folder; use location()")
        return self.root / self._relative(spec)

    def location(self, spec: StageSpec) -> str:
        """Where the entry of ``spec`` lives: a local path, or a path inside the root's filesystem."""
        return str(self.path(spec)) if self.root is not None else f"{self._base}/{self._relative(spec)}"

    def exists(self, spec: StageSpec) -> bool:
        """Whether an entry for ``spec`` has been written."""
        if self.root is not None:
            return self.path(spec).is_file()
        import pyarrow.fs as pafs

        return self.fs.get_file_info(self.location(spec)).type == pafs.FileType.File

    def load(self, spec: StageSpec) -> Any:
        """The cached value of ``spec``.

        Raises:
            CacheMiss: No entry, or the entry is unreadable (it is then removed).
        """
        where = self.location(spec)
        try:
            record = self._read_record(where)
            if not isinstance(record, dict) or record.get("key") != spec.key:
                raise ValueError("entry does not belong to this key")
            return record["value"]
        except FileNotFoundError:
            raise CacheMiss(spec.key) from None
        except Exception as exc:
            log.warning("cache entry %s is unreadable (%s); recomputing it", where, exc)
            self._remove(where)
            raise CacheMiss(spec.key) from exc

    def save(self, spec: StageSpec, value: Any, seconds: float) -> str:
        """Write ``value`` as the entry of ``spec`` atomically; returns where it went.

        Raises:
            StorageError: The root is full, read-only or otherwise unwritable (no entry is left behind).
        """
        record = {
            "key": spec.key,
            "stage": spec.stage,
            "params": dict(spec.params),
            "inputs": {n: s.key for n, s in spec.inputs.items()},
            "seconds": seconds,
            "created": time.time(),
            "value": value,
        }
        try:
            if self.root is not None:
                return str(self._save_local(self.path(spec), record))
            return self._save_fs(self.location(spec), record)
        except OSError as exc:
            raise storage_error(self.uri, exc, f"writing the {spec.stage} stage's result") from exc

    def entries(self) -> list[str]:
        """Every finished entry (not temporary files) under the root, as locations."""
        if self.root is not None:
            return sorted(str(p) for p in (self.root / "cache").glob("*/*/*.pkl"))
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(f"{self._base}/cache", recursive=True, allow_not_found=True)
        return sorted(
            i.path for i in self.fs.get_file_info(selector) if i.type == pafs.FileType.File and i.path.endswith(".pkl")
            and not i.base_name.startswith(".")
        )

    def read_record(self, location: str) -> dict[str, Any]:
        """The whole record (metadata and value) of the entry at ``location``: for checks and reports."""
        return self._read_record(location)

    # ------------------------------------------------------------------ io

    def _read_record(self, where: str) -> Any:
        """Unpickle the entry at ``where``: large buffers as views of a read-only map of a local file."""
        if self.root is not None:
            with open(where, "rb") as fh:
                if fh.read(len(MAGIC)) != MAGIC:
                    fh.seek(0)
                    return pickle.load(fh)
                # The map outlives the file object: arrays built on it keep it open.
                data: Any = memoryview(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
        else:
            data = memoryview(self._read(where))
        return decode_entry(data)

    def _read(self, where: str) -> bytes:
        if self.root is not None:
            return Path(where).read_bytes()
        import pyarrow.fs as pafs

        if self.fs.get_file_info(where).type != pafs.FileType.File:
            raise FileNotFoundError(where)
        with self.fs.open_input_stream(where) as fh:
            return fh.read()

    def _remove(self, where: str) -> None:
        try:
            if self.root is not None:
                Path(where).unlink(missing_ok=True)
            else:
                self.fs.delete_file(where)
        except OSError:
            pass  # a read-only root: the unreadable entry stays, and is recomputed in memory

    @staticmethod
    def _save_local(path: Path, record: dict[str, Any]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{record['key']}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                write_entry(fh, record)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def _save_fs(self, where: str, record: dict[str, Any]) -> str:
        # Serialise first: a value that fails to pickle never opens an upload.
        payload = pickle.dumps(record, protocol=5)
        folder, _, name = where.rpartition("/")
        tmp = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        self.fs.create_dir(folder, recursive=True)
        try:
            with self.fs.open_output_stream(tmp) as fh:
                fh.write(payload)
            self.fs.move(tmp, where)
        except BaseException:
            try:
                self.fs.delete_file(tmp)
            except OSError:
                pass
            raise
        return where


def write_entry(fh: Any, record: Any) -> None:
    """Write ``record`` to the binary file ``fh``: header, pickle, then its large buffers, 64-byte aligned.

    Layout: :data:`MAGIC`, an 8-byte little-endian header length, the JSON header
    ``{"pickle": [offset, length], "buffers": [[offset, length], ...]}`` (offsets from
    the start of the file), then the pickle stream and the buffers at those offsets.
    The buffers are written straight from the arrays' memory: nothing is copied.
    """
    buffers: list[memoryview] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        view = buffer.raw()
        if view.nbytes < OUT_OF_BAND_BYTES:
            return True  # small: in the pickle stream
        buffers.append(view)
        return False

    stream = pickle.dumps(record, protocol=5, buffer_callback=out_of_band)
    # The header's length depends on the offsets and they on it: reserve room for the largest offsets.
    def header_for(start: int) -> tuple[bytes, list[int]]:
        offsets, position = [], _aligned(start + len(stream))
        for view in buffers:
            offsets.append(position)
            position = _aligned(position + view.nbytes)
        header = json.dumps({"pickle": [start, len(stream)], "buffers": [[o, v.nbytes] for o, v in zip(offsets, buffers)]})
        return header.encode(), offsets

    reserve = len(MAGIC) + 8 + len(header_for(0)[0]) + 32 * (len(buffers) + 1)
    start = _aligned(reserve)
    header, offsets = header_for(start)
    fh.write(MAGIC + struct.pack("<Q", len(header)) + header)
    fh.write(b"\0" * (start - len(MAGIC) - 8 - len(header)))
    fh.write(stream)
    position = start + len(stream)
    for offset, view in zip(offsets, buffers):
        fh.write(b"\0" * (offset - position))
        fh.write(view)
        position = offset + view.nbytes


def decode_entry(data: memoryview) -> Any:
    """Unpickle an entry from its bytes (or a map of its file): :func:`write_entry`'s layout, or a plain pickle."""
    if bytes(data[: len(MAGIC)]) != MAGIC:
        return pickle.loads(data)
    (length,) = struct.unpack("<Q", data[len(MAGIC) : len(MAGIC) + 8])
    header = json.loads(bytes(data[len(MAGIC) + 8 : len(MAGIC) + 8 + length]))
    start, size = header["pickle"]
    if start + size > len(data) or any(o + n > len(data) for o, n in header["buffers"]):
        raise ValueError("entry is truncated")
    return pickle.loads(data[start : start + size], buffers=[data[o : o + n] for o, n in header["buffers"]])


def _aligned(position: int) -> int:
    return -(-position // _ALIGN) * _ALIGN


def storage_error(root: str, exc: OSError, doing: str) -> StorageError:
    """A one-line :class:`StorageError` for an ``OSError`` met while ``doing`` something under ``root``."""
    text = str(exc).strip()
    reason = exc.strerror or (text.splitlines()[0] if text else type(exc).__name__)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free space (or raise the quota) there, or choose another storage.root"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "make it writable, or choose another storage.root"
    else:
        fix = "check it, or choose another storage.root"
    return StorageError(f"storage root {root} is not writable while {doing} ({reason}); {fix}")


def check_storage(root: str | Path, fs: Any | None = None) -> None:
    """Fail fast, with one clear line, when the storage root cannot hold cache entries.

    Writes (and fsyncs, so a full disk shows) a small probe file under ``root`` and removes it.

    Raises:
        StorageError: The root is read-only, full, or cannot be created.
    """
    cache = StageCache(root, fs=fs)
    payload = os.urandom(64 * 1024)
    try:
        if cache.root is not None:
            cache.root.mkdir(parents=True, exist_ok=True)
            probe = cache.root / PROBE_NAME
            try:
                with probe.open("wb") as fh:
                    fh.write(payload)
                    fh.flush()
                    os.fsync(fh.fileno())
            finally:
                probe.unlink(missing_ok=True)
        else:
            probe_path = f"{cache._base}/{PROBE_NAME}"
            cache.fs.create_dir(cache._base, recursive=True)
            with cache.fs.open_output_stream(probe_path) as fh:
                fh.write(payload)
            cache.fs.delete_file(probe_path)
    except OSError as exc:
        raise storage_error(cache.uri, exc, "checking it before the grid starts") from None
