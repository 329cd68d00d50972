"""User-facing errors.

A :class:`RaygridError` is a mistake the user can fix (a config typo, a missing
file, an unreachable server, an impossible resource request). The CLI prints its
message as one line and exits non-zero, without a traceback. Every message names
the problem *and* the fix. Internal errors are ordinary exceptions and keep their
traceback.
"""

from __future__ import annotations


class RaygridError(Exception):
    """A problem caused by user input, reported as one line naming the problem and the fix."""

    exit_code: int = 2


class ConfigError(RaygridError):
    """The grid file or a trial config is invalid."""


class UnknownComponentError(ConfigError):
    """A component name (attack, extractor, recommender, dataset) is not registered."""


class ResourceError(RaygridError):
    """A resource request that the Ray cluster can never satisfy."""


class TrackingError(RaygridError):
    """The MLflow tracking store cannot be reached or used."""


class StorageError(RaygridError):
    """The storage root (stage cache, Tune state) cannot be written: read-only, full, or unreachable."""


class DataError(RaygridError):
    """A dataset file is missing or corrupt."""
