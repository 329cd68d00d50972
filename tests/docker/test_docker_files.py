"""Static checks of docker/: Docker cannot run here, so keep the files honest by reading them.

They must parse, copy paths that exist, use the Ray and MLflow versions that
pyproject.toml pins (a worker on another Ray version cannot join, a server on
another MLflow may not read the runs), and configure every Ray node alike.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def _pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^;\s]+)", requirement.strip())
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def _compose(name: str) -> dict[str, Any]:
    return yaml.safe_load((DOCKER / name).read_text())


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_the_raygrid_image_uses_the_pinned_ray_torch_and_torchvision() -> None:
    pins = _pins()
    text = (DOCKER / "Dockerfile").read_text()
    base = re.search(r"ARG RAY_IMAGE=rayproject/ray:([0-9.]+)-py(\d)(\d+)-cpu", text)
    assert base, "the Dockerfile's default base must be a CPU rayproject/ray image"
    assert base.group(1) == pins["ray"]
    assert f"{base.group(2)}.{base.group(3)}" == "3.11"  # pyproject requires Python 3.11
    assert f"torch=={pins['torch']}" in text and f"torchvision=={pins['torchvision']}" in text
    gpu = _compose("compose.gpu.yaml")["x-cuda-build"]["build"]["args"]["RAY_IMAGE"]
    assert gpu == f"rayproject/ray:{pins['ray']}-py311-gpu"


def test_the_mlflow_image_uses_the_pinned_mlflow() -> None:
    instructions = _dockerfile_instructions(DOCKER / "mlflow.Dockerfile")
    assert ("FROM", f"ghcr.io/mlflow/mlflow:v{_pins()['mlflow']}") in instructions


def test_every_path_a_dockerfile_copies_exists() -> None:
    for instruction, argument in _dockerfile_instructions(DOCKER / "Dockerfile"):
        if instruction == "COPY":
            *sources, _destination = argument.split()
            for source in sources:
                assert (ROOT / source).exists(), f"docker/Dockerfile copies {source}, which is not in the repository"


def test_compose_builds_from_files_that_exist() -> None:
    for name in ("compose.yaml", "compose.gpu.yaml"):
        document = _compose(name)
        builds = [s["build"] for s in document["services"].values() if isinstance(s, dict) and "build" in s]
        builds += [v["build"] for k, v in document.items() if k.startswith("x-") and "build" in v]
        assert builds
        for build in builds:
            context = (DOCKER / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), f"{name}: {build}"


@pytest.mark.parametrize("service", ["ray-head", "ray-worker"])
def test_every_ray_node_has_the_same_auth_shared_memory_and_storage(service: str) -> None:
    node = _compose("compose.yaml")["services"][service]  # YAML merge keys already applied
    assert node["environment"]["RAY_AUTH_MODE"] == "token"
    assert node["environment"]["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?")  # refuses to start without it
    assert re.fullmatch(r"\d+gb", node["shm_size"]) and int(node["shm_size"][:-2]) >= 2
    assert "raygrid-storage:/data/raygrid" in node["volumes"]
    assert node["image"] == "raygrid:cpu"


def test_workers_join_the_head_and_the_head_serves_clients() -> None:
    services = _compose("compose.yaml")["services"]
    assert "--head" in services["ray-head"]["command"] and "--port=6379" in services["ray-head"]["command"]
    assert "--address=ray-head:6379" in services["ray-worker"]["command"]


def test_the_mlflow_server_proxies_artifacts_and_accepts_its_service_name() -> None:
    services = _compose("compose.yaml")["services"]
    command = services["mlflow"]["command"]
    assert "--serve-artifacts" in command and "--artifacts-destination s3://" in command
    assert re.search(r"--backend-store-uri postgresql://\S+@postgres:5432/", command)
    allowed = re.search(r"--allowed-hosts (\S+)", command)
    assert allowed and {"mlflow", "mlflow:5000", "localhost:5000"} <= set(allowed.group(1).split(","))
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    # Only the server holds the artifact store's credentials.
    for service in ("ray-head", "ray-worker"):
        assert not any(k.startswith("AWS_") for k in services[service]["environment"])
