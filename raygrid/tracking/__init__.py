"""MLflow: one experiment per grid, one parent run per grid session, one child run per trial."""

from raygrid.tracking.store import GridTracker, TrackingTarget, resolve_tracking

__all__ = ["GridTracker", "TrackingTarget", "resolve_tracking"]
