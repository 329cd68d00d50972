"""Stage specifications and the stage-function registry.

A :class:`StageSpec` names a stage function, its JSON-able parameters and the
specs of its inputs. Its :attr:`~StageSpec.key` hashes all of that (inputs by
their keys, recursively) plus the stage's code version, so two trials that need
the same product get the same key and share one computation and one cache entry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from raygrid.hashing import content_hash

StageFn = Callable[[dict[str, Any], dict[str, Any], "StageContext"], Any]


@dataclass(frozen=True)
class StageDef:
    """A registered stage function and the version of its code (bump it when results change)."""

    name: str
    fn: StageFn
    version: int


STAGES: dict[str, StageDef] = {}


def stage(name: str, *, version: int = 1) -> Callable[[StageFn], StageFn]:
    """Register ``fn(params, inputs, ctx) -> value`` as the stage ``name``.

    Stage functions must be pure: the value depends only on ``params`` and the
    values in ``inputs`` (and the code ``version``), which is what makes their
    results cacheable by key.
    """

    def decorator(fn: StageFn) -> StageFn:
        existing = STAGES.get(name)
        if existing is not None and existing.fn.__qualname__ != fn.__qualname__:
            raise ValueError(f"stage {name!r} is registered twice")
        STAGES[name] = StageDef(name=name, fn=fn, version=version)
        return fn

    return decorator


def get_stage(name: str) -> StageDef:
    """The registered stage ``name`` (importing every component first)."""
    if name not in STAGES:
        import raygrid.components  # noqa: F401  (registers the studies' stages)
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; registered: {', '.join(sorted(STAGES))}") from None


@dataclass(frozen=True, eq=False)
class StageSpec:
    """One node of a trial's stage graph.

    Attributes:
        stage: Name of the registered stage function.
        params: JSON-able parameters (resolved config of the stage).
        inputs: Specs of the stages whose values this one consumes, by argument name.
        cpu: CPUs the stage's task asks for.
        gpu: GPU share the stage's task asks for (fractions allowed).
    """

    stage: str
    params: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, StageSpec] = field(default_factory=dict)
    cpu: float = 1.0
    gpu: float = 0.0

    @cached_property
    def key(self) -> str:
        """Content hash of the stage name, code version, params and input keys (resources excluded)."""
        return content_hash(
            {
                "stage": self.stage,
                "version": get_stage(self.stage).version,
                "params": dict(self.params),
                "inputs": {name: spec.key for name, spec in sorted(self.inputs.items())},
            },
            length=24,
        )

    def walk(self) -> list[StageSpec]:
        """This node and all its ancestors, dependencies first, each key once."""
        order: list[StageSpec] = []
        seen: set[str] = set()

        def visit(node: StageSpec) -> None:
            if node.key in seen:
                return
            for dep in node.inputs.values():
                visit(dep)
            seen.add(node.key)
            order.append(node)

        visit(self)
        return order


@dataclass
class StageContext:
    """What a stage function may know about where it runs.

    Attributes:
        device: ``"cpu"`` or ``"cuda"``: where tensors go.
        key: The stage's cache key (for logging).
    """

    device: str = "cpu"
    key: str = ""


def run_stage_fn(spec: StageSpec, inputs: dict[str, Any], device: str) -> tuple[Any, float]:
    """Call the stage function of ``spec``; returns the value and the seconds it took."""
    definition = get_stage(spec.stage)
    start = time.perf_counter()
    value = definition.fn(dict(spec.params), inputs, StageContext(device=device, key=spec.key))
    return value, time.perf_counter() - start
