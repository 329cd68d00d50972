"""Building a study's stage graph: nodes whose tasks carry their stage's resources."""

from __future__ import annotations

from typing import Any, Protocol

from raygrid.config.sections import ResourcesConfig
from raygrid.pipeline.spec import StageSpec


class NodeBuilder(Protocol):
    """Builds one stage node; ``res`` names the resources entry when it is not the stage's own.

    ``gpu=False`` marks a stage that does no work on a GPU (numpy metrics, LightFM's
    CPU training): it takes the entry's CPUs but no GPU share, so a GPU's shares go
    to stages that use it and the CPU-only ones run beside them.
    """

    def __call__(
        self,
        name: str,
        params: dict[str, Any],
        inputs: dict[str, StageSpec],
        *,
        res: str | None = None,
        gpu: bool = True,
    ) -> StageSpec: ...


def node_builder(resources: ResourcesConfig | None) -> NodeBuilder:
    """A :class:`NodeBuilder` taking CPU and GPU shares from ``resources`` (default: one CPU per stage).

    Resources reach the stage tasks only, never the keys: the same graph under other
    resources computes and caches the same products.
    """
    resources = resources or ResourcesConfig()

    def node(
        name: str,
        params: dict[str, Any],
        inputs: dict[str, StageSpec],
        *,
        res: str | None = None,
        gpu: bool = True,
    ) -> StageSpec:
        r = resources.for_stage(res or name)
        return StageSpec(stage=name, params=params, inputs=inputs, cpu=r.cpu, gpu=r.gpu if gpu else 0.0)

    return node
