"""Stage sharing inside a running grid.

The broker is one Ray actor per grid session. A trial hands it the stage graph
of its final product; the broker walks it lazily (:class:`~raygrid.pipeline.resolve.Resolver`):
a key already requested in this session is answered with the same object
reference (so every trial waits on one computation, and reads the value
zero-copy from the object store), a key on disk becomes a load task, anything
else a compute task with that stage's resources, its inputs passed as object
references. The broker owns those objects, so they live as long as the session;
the disk cache backs them beyond it.

A fresh grid hands the broker its shared upstream stages (extractors and
features) as soon as Ray is up (:meth:`StageBrokerImpl.prefetch`), so they start
while the driver is still creating the MLflow runs and Tune is starting the
coordinators; a trial that needs one of them gets the same reference.

Faults: a stage task whose worker process dies is retried by Ray (``retries``
times); a stage whose task still ended in a system failure (worker or node lost,
object lost) is forgotten, so the next trial that asks for it (a retried trial
among them) starts it again instead of inheriting the failure. A stage that
raised an error of its own is not retried: it would fail the same way.
"""

from __future__ import annotations

import logging
from typing import Any

import ray

from raygrid.pipeline.cache import CacheMiss, StageCache
from raygrid.pipeline.resolve import Resolver, StageLedger, materialize
from raygrid.pipeline.spec import StageSpec

log = logging.getLogger(__name__)


def where_am_i() -> dict[str, str]:
    """The Ray node id and IP address of the calling worker (recorded with every stage result)."""
    return {"node": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address()}


@ray.remote(num_returns=2)
def stage_task(spec: StageSpec, storage_root: str, names: list[str], *values: Any) -> tuple[Any, dict[str, Any]]:
    """Load or compute one stage in a Ray worker; returns (value, how it was obtained and where).

    A cache hit only unpickles the entry; torch and the components are imported
    only when something has to be computed, which keeps re-runs of finished grids quick.
    """
    cache = StageCache(storage_root)
    if names or not spec.inputs:
        deps: dict[str, Any] | None = dict(zip(names, values))
    else:
        deps = None  # the broker expected a cache hit
        try:
            info = {"stage": spec.stage, "key": spec.key, "how": "cached", "seconds": 0.0, **where_am_i()}
            return cache.load(spec), info
        except CacheMiss:
            pass
    import torch

    import raygrid.components  # noqa: F401  (register stages and components in this worker)

    # Ray reuses workers across tasks of different sizes: match torch's threads to this task's CPUs.
    torch.set_num_threads(max(1, int(spec.cpu)))
    device = "cuda" if spec.gpu > 0 and torch.cuda.is_available() else "cpu"
    value, info = materialize(spec, cache, device, deps)
    return value, {**info, **where_am_i()}


def is_system_failure(exc: BaseException) -> bool:
    """Whether a stage's error is Ray losing its worker, node or object (worth retrying), not the stage's own."""
    from ray import exceptions as rex

    if isinstance(exc, rex.RayTaskError):
        cause = getattr(exc, "cause", None)
        return cause is not None and cause is not exc and not isinstance(cause, rex.RayTaskError) and is_system_failure(cause)
    system = (rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError, rex.OwnerDiedError, rex.RayActorError)
    return isinstance(exc, system + (rex.TaskCancelledError, rex.LocalRayletDiedError))


class StageBrokerImpl(Resolver["ray.ObjectRef"]):
    """The broker's logic; :data:`StageBroker` is its Ray actor class.

    Args:
        storage_root: Storage root of the stage cache (shared by every node).
        retries: Times Ray re-runs a stage task whose worker died.
    """

    def __init__(self, storage_root: str, retries: int = 2) -> None:
        super().__init__(StageCache(storage_root))
        self.storage_root = storage_root
        self.retries = retries
        self.infos: list[tuple[str, Any]] = []
        self.info_by_key: dict[str, Any] = {}

    def prefetch(self, specs: list[StageSpec]) -> int:
        """Start the stages of ``specs`` (and their inputs) now; returns how many stage tasks that submitted.

        Trials that later need these products get the same references, counted as
        shares, as for any product another trial asked for first.
        """
        before = len(self.infos)
        for spec in specs:
            if spec.key not in self.handles:
                self.request(spec)
        return len(self.infos) - before

    def request_ref(self, spec: StageSpec) -> list[Any]:
        """The object reference of ``spec``'s value, wrapped in a list so Ray does not resolve it."""
        return self.request_refs(spec)[:1]

    def request_refs(self, spec: StageSpec) -> list[Any]:
        """``[value, info]`` object references of ``spec``: its value, and how and where it was obtained."""
        self._forget_lost(spec)
        value = self.request(spec)
        return [value, self.info_by_key[spec.key]]

    def _forget_lost(self, spec: StageSpec) -> None:
        """Drop this session's handles on stages of ``spec`` that ended in a system failure, so they run again."""
        for node in spec.walk():
            info_ref = self.info_by_key.get(node.key)
            if info_ref is None:
                continue
            ready, _ = ray.wait([info_ref], timeout=0)
            if not ready:
                continue
            try:
                ray.get(info_ref)
            except Exception as exc:  # noqa: BLE001  (classified below)
                if is_system_failure(exc):
                    log.warning("stage %s %s was lost (%s); starting it again", node.stage, node.key[:8], type(exc).__name__)
                    self.handles.pop(node.key, None)
                    self.info_by_key.pop(node.key, None)

    def _submit(self, spec: StageSpec, deps: dict[str, Any] | None) -> Any:
        names = list(deps) if deps else []
        values = [deps[n] for n in names] if deps else []
        value_ref, info_ref = stage_task.options(
            num_cpus=spec.cpu, num_gpus=spec.gpu, name=f"{spec.stage}:{spec.key[:8]}", max_retries=self.retries
        ).remote(spec, self.storage_root, names, *values)
        self.infos.append((spec.stage, info_ref))
        self.info_by_key[spec.key] = info_ref
        return value_ref

    def _load(self, spec: StageSpec) -> Any:
        return self._submit(spec, None)

    def _compute(self, spec: StageSpec, deps: dict[str, Any]) -> Any:
        return self._submit(spec, deps)

    def progress(self) -> dict[str, Any]:
        """Stage tasks submitted so far, how many are over, and the stages of those still running or queued."""
        refs = [ref for _, ref in self.infos]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0) if refs else ([], [])
        over = set(ready)
        running = sorted({stage for stage, ref in self.infos if ref not in over})
        return {"done": len(over), "submitted": len(refs), "running": running}

    def summary(self, wait_seconds: float = 5.0) -> list[dict[str, Any]]:
        """Per stage: how often it was computed, served from disk, or shared in memory this session.

        Stage tasks still running after ``wait_seconds`` (a grid stopped early, e.g. by
        Ctrl-C, leaves prefetched stages queued) are not counted and not waited for.
        """
        ledger = StageLedger()
        for stage, counts in self.ledger.counts.items():
            for _ in range(counts["shared"]):
                ledger.record(stage, "shared")
        refs = [ref for _, ref in self.infos]
        ready = set(ray.wait(refs, num_returns=len(refs), timeout=wait_seconds)[0]) if refs else set()
        for stage, info_ref in self.infos:
            if info_ref not in ready:
                continue
            try:
                info = ray.get(info_ref)
            except Exception:  # noqa: BLE001  (a failed stage: counted as failed)
                ledger.record(stage, "failed")
                continue
            ledger.record(stage, info["how"], info["seconds"])
        rows = ledger.rows()
        for row in rows:
            row["failed"] = ledger.counts[row["stage"]]["failed"]
        return rows


StageBroker = ray.remote(num_cpus=0)(StageBrokerImpl)
