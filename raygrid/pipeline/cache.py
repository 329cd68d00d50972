"""The content-addressed stage cache on disk.

Each stage result is one file ``<root>/cache/<stage>/<key[:2]>/<key>.pkl`` holding
the value and a small metadata record. Files are written to a temporary name in
the same folder and renamed into place, so a crash never leaves a half entry and
a restarted driver finds every finished stage. A file that cannot be read back
(truncated, corrupt, written by incompatible code) counts as a miss and is
recomputed.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

from raygrid.pipeline.spec import StageSpec

log = logging.getLogger(__name__)


class CacheMiss(KeyError):
    """No usable cache entry for a stage key."""


class StageCache:
    """Stage results on a local or shared filesystem, addressed by :attr:`StageSpec.key`.

    Args:
        root: The storage root; entries go under ``root/cache``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def path(self, spec: StageSpec) -> Path:
        """Where the entry of ``spec`` lives (whether or not it exists)."""
        return self.root / "cache" / spec.stage / spec.key[:2] / f"{spec.key}.pkl"

    def exists(self, spec: StageSpec) -> bool:
        """Whether an entry for ``spec`` has been written."""
        return self.path(spec).is_file()

    def load(self, spec: StageSpec) -> Any:
        """The cached value of ``spec``.

        Raises:
            CacheMiss: No entry, or the entry is unreadable (it is then removed).
        """
        path = self.path(spec)
        try:
            with path.open("rb") as fh:
                record = pickle.load(fh)
            if not isinstance(record, dict) or record.get("key") != spec.key:
                raise ValueError("entry does not belong to this key")
            return record["value"]
        except FileNotFoundError:
            raise CacheMiss(spec.key) from None
        except Exception as exc:
            log.warning("cache entry %s is unreadable (%s); recomputing it", path, exc)
            path.unlink(missing_ok=True)
            raise CacheMiss(spec.key) from exc

    def save(self, spec: StageSpec, value: Any, seconds: float) -> Path:
        """Write ``value`` as the entry of ``spec`` atomically; returns its path."""
        path = self.path(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "key": spec.key,
            "stage": spec.stage,
            "params": dict(spec.params),
            "inputs": {n: s.key for n, s in spec.inputs.items()},
            "seconds": seconds,
            "created": time.time(),
            "value": value,
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{spec.key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(record, fh, protocol=5)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
