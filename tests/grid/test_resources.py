"""Resource requests are fitted to the cluster before any trial starts: never a trial pending forever."""

from __future__ import annotations

import pytest

from raygrid.config.sections import ResourcesConfig
from raygrid.errors import ResourceError
from raygrid.grid.resources import ClusterShape, default_concurrency, fit_resources

LAPTOP = ClusterShape(max_node_cpu=2, max_node_gpu=0, total_cpu=2, total_gpu=0)
GPU_NODE = ClusterShape(max_node_cpu=16, max_node_gpu=1, total_cpu=16, total_gpu=1)


def test_gpu_request_without_gpus_becomes_cpu_with_a_warning():
    resources = ResourcesConfig.model_validate({"trial": {"cpu": 1, "gpu": 0.25}, "attack": {"gpu": 0.5}})
    fitted, warnings = fit_resources(resources, LAPTOP)
    assert fitted.trial.gpu == 0 and fitted.attack.gpu == 0 and fitted.trial.cpu == 1
    assert any("resources.attack.gpu=0.5" in w and "no GPU" in w for w in warnings)


def test_gpu_fractions_are_kept_where_gpus_exist():
    resources = ResourcesConfig.model_validate({"trial": {"gpu": 0.25}, "attack": {"gpu": 0.5}})
    fitted, warnings = fit_resources(resources, GPU_NODE)
    assert (fitted.trial.gpu, fitted.attack.gpu, warnings) == (0.25, 0.5, [])


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        ({"trial": {"cpu": 8}}, r"resources\.trial\.cpu=8 exceeds the largest node's 2 CPUs"),
        ({"attack": {"gpu": 2}}, r"resources\.attack\.gpu=2 exceeds"),
        ({"attack": {"gpu": 1.5}}, "whole number"),
    ],
)
def test_impossible_requests_are_refused_with_the_setting_named(request_, match):
    shape = GPU_NODE if "gpu" in str(request_) else LAPTOP
    with pytest.raises(ResourceError, match=match):
        fit_resources(ResourcesConfig.model_validate(request_), shape)


def test_default_concurrency_is_bounded_by_trials_and_cluster():
    assert default_concurrency(LAPTOP, 1) == 1
    assert default_concurrency(LAPTOP, 54) == 2
    assert default_concurrency(GPU_NODE, 54) == 16
