"""Resolving a stage graph: compute each key once, serve the rest from memory or disk.

The walk is lazy: a node whose result is on disk is loaded without touching its
ancestors, so a re-run of a finished grid reads only the final products. The
same walk drives the in-process :class:`LocalResolver` (tests, notebooks) and the
Ray broker in :mod:`raygrid.grid.broker`, which hands out object references
instead of values.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from raygrid.pipeline.cache import CacheMiss, StageCache
from raygrid.pipeline.spec import StageSpec, run_stage_fn

log = logging.getLogger(__name__)

H = TypeVar("H")

#: How a stage request was satisfied.
COMPUTED, CACHED, SHARED = "computed", "cached", "shared"


@dataclass
class StageLedger:
    """Counts, per stage, how often it was computed, loaded from the disk cache, or shared in memory."""

    counts: dict[str, Counter[str]] = field(default_factory=dict)
    seconds: Counter[str] = field(default_factory=Counter)

    def record(self, stage: str, how: str, seconds: float = 0.0) -> None:
        """Count one request of ``stage`` satisfied ``how`` (computed, cached or shared)."""
        self.counts.setdefault(stage, Counter())[how] += 1
        if how == COMPUTED:
            self.seconds[stage] += seconds

    def total(self, how: str) -> int:
        """Requests of all stages satisfied ``how``."""
        return sum(c[how] for c in self.counts.values())

    def rows(self) -> list[dict[str, Any]]:
        """One summary row per stage: computed, cached, shared, compute seconds."""
        return [
            {
                "stage": stage,
                COMPUTED: c[COMPUTED],
                CACHED: c[CACHED],
                SHARED: c[SHARED],
                "seconds": round(self.seconds[stage], 2),
            }
            for stage, c in self.counts.items()
        ]


class Resolver(Generic[H]):
    """Lazy, de-duplicating walk of stage graphs; subclasses say what a handle is."""

    def __init__(self, cache: StageCache) -> None:
        self.cache = cache
        self.handles: dict[str, H] = {}
        self.ledger = StageLedger()

    def request(self, spec: StageSpec) -> H:
        """A handle on the value of ``spec``, starting its computation if nobody has."""
        handle = self.handles.get(spec.key)
        if handle is not None:
            self.ledger.record(spec.stage, SHARED)
            return handle
        if self.cache.exists(spec):
            handle = self._load(spec)
        else:
            deps = {name: self.request(dep) for name, dep in spec.inputs.items()}
            handle = self._compute(spec, deps)
        self.handles[spec.key] = handle
        return handle

    def _load(self, spec: StageSpec) -> H:
        raise NotImplementedError

    def _compute(self, spec: StageSpec, deps: dict[str, H]) -> H:
        raise NotImplementedError


class LocalResolver(Resolver[Any]):
    """Runs stages in this process; handles are the values themselves.

    Args:
        cache: The stage cache.
        device: Device for every stage (``"cpu"`` or ``"cuda"``).
    """

    def __init__(self, cache: StageCache, device: str = "cpu") -> None:
        super().__init__(cache)
        self.device = device

    def resolve(self, spec: StageSpec) -> Any:
        """The value of ``spec``."""
        return self.request(spec)

    def _load(self, spec: StageSpec) -> Any:
        try:
            value = self.cache.load(spec)
        except CacheMiss:
            deps = {name: self.request(dep) for name, dep in spec.inputs.items()}
            return self._compute(spec, deps)
        self.ledger.record(spec.stage, CACHED)
        return value

    def _compute(self, spec: StageSpec, deps: dict[str, Any]) -> Any:
        value, seconds = run_stage_fn(spec, deps, self.device)
        self.cache.save(spec, value, seconds)
        self.ledger.record(spec.stage, COMPUTED, seconds)
        log.info("stage %s %s computed in %.1fs", spec.stage, spec.key[:8], seconds)
        return value


def materialize(spec: StageSpec, cache: StageCache, device: str, deps: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
    """Load ``spec`` from the cache or compute it; returns the value and how it was obtained.

    Used by a stage task: ``deps`` are the input values when the caller resolved
    them, or ``None`` when the caller expected a cache hit. If the entry turns out
    to be missing or unreadable, the inputs are resolved here, in-process.
    """
    try:
        value = cache.load(spec)
        return value, {"stage": spec.stage, "key": spec.key, "how": CACHED, "seconds": 0.0}
    except CacheMiss:
        pass
    if deps is None:
        local = LocalResolver(cache, device)
        deps = {name: local.resolve(dep) for name, dep in spec.inputs.items()}
    value, seconds = run_stage_fn(spec, deps, device)
    cache.save(spec, value, seconds)
    return value, {"stage": spec.stage, "key": spec.key, "how": COMPUTED, "seconds": seconds}
