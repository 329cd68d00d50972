"""The common base of metrics with a top-K cutoff."""

from __future__ import annotations


class CutoffMetric:
    """A metric over the first ``k`` items of each top-K list; renders its name with the cutoff.

    Args:
        k: Cutoff: only the first ``k`` items of each list count.
    """

    prefix: str = ""

    def __init__(self, k: int) -> None:
        if int(k) < 1:
            raise ValueError(f"cutoff k must be positive, got {k}")
        self.k = int(k)

    @property
    def name(self) -> str:
        """Metric key, e.g. ``"recall_20"`` (no ``@``: MLflow rejects it)."""
        return f"{self.prefix}_{self.k}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k})"
