"""Fit the config's resource requests to the Ray cluster before any trial starts.

Ray leaves a task that asks for more than any node has pending forever, and a
GPU fraction on a cluster without GPUs does the same. So requests are checked
against the cluster up front: a GPU request on a GPU-less cluster becomes a CPU
request (with a warning), and a request no node can satisfy is refused with one
line naming the setting and the fix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from raygrid.config.sections import ResourcesConfig, StageResources
from raygrid.errors import ResourceError

log = logging.getLogger(__name__)

STAGE_FIELDS = ("trial", "dataset", "extractor", "features", "attack", "attacked_features")


@dataclass(frozen=True)
class ClusterShape:
    """The largest CPU and GPU count of any one node, and the totals."""

    max_node_cpu: float
    max_node_gpu: float
    total_cpu: float
    total_gpu: float


def cluster_shape() -> ClusterShape:
    """Read the shape of the connected Ray cluster."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    return ClusterShape(
        max_node_cpu=max((n.get("CPU", 0.0) for n in nodes), default=0.0),
        max_node_gpu=max((n.get("GPU", 0.0) for n in nodes), default=0.0),
        total_cpu=sum(n.get("CPU", 0.0) for n in nodes),
        total_gpu=sum(n.get("GPU", 0.0) for n in nodes),
    )


def fit_resources(resources: ResourcesConfig, shape: ClusterShape) -> tuple[ResourcesConfig, list[str]]:
    """Check every stage's request against the cluster; returns the usable requests and warnings.

    Raises:
        ResourceError: A request no node of the cluster can ever satisfy.
    """
    warnings: list[str] = []
    fitted: dict[str, StageResources] = {}
    for name in STAGE_FIELDS:
        request: StageResources = getattr(resources, name)
        cpu, gpu = request.cpu, request.gpu
        if cpu > shape.max_node_cpu:
            raise ResourceError(
                f"resources.{name}.cpu={cpu:g} exceeds the largest node's {shape.max_node_cpu:g} CPUs; "
                "lower it or join a bigger cluster with --address"
            )
        if gpu > 1 and not float(gpu).is_integer():
            raise ResourceError(f"resources.{name}.gpu={gpu:g}: a GPU request above 1 must be a whole number")
        if gpu > 0 and shape.total_gpu == 0:
            warnings.append(f"resources.{name}.gpu={gpu:g} but the cluster has no GPU: running that stage on CPU")
            gpu = 0.0
        elif gpu > shape.max_node_gpu:
            raise ResourceError(
                f"resources.{name}.gpu={gpu:g} exceeds the largest node's {shape.max_node_gpu:g} GPUs; lower it"
            )
        fitted[name] = StageResources(cpu=cpu, gpu=gpu)
    return resources.model_copy(update=fitted), warnings


def default_concurrency(shape: ClusterShape, n_trials: int) -> int:
    """How many trials to coordinate at once when the config does not say: one per CPU.

    A trial's coordinator holds no CPU (its stages are tasks with their own
    requests), so this does not limit the stages; it bounds the number of
    coordinator processes, each of which costs a Python start with MLflow
    imported, while keeping enough trials in flight to feed every CPU.
    """
    return max(1, min(n_trials, max(2, int(shape.total_cpu))))
