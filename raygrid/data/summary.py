"""The datasets a grid (or a dataset file) uses, loaded for inspection (``raygrid data``).

A *dataset file* is a YAML file whose only sections are ``data`` (a dataset
config, as in a grid file), and optionally ``variables`` and ``description``;
``experiments/datasets/`` holds one per published dataset. A grid file works
too: each distinct ``data`` section of its trials is one dataset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from raygrid.data.dataset import Dataset
from raygrid.errors import ConfigError
from raygrid.registry import DATASETS

_DATASET_FILE_KEYS = frozenset({"data", "variables", "description"})


def dataset_configs(
    path: str | Path, overrides: Sequence[str] = (), variables: Mapping[str, str] | None = None
) -> list[BaseModel]:
    """The distinct validated ``data`` sections of a grid file or dataset file, in order of appearance.

    Raises:
        ConfigError: The file is missing or invalid, or a ``${NAME}`` it uses is not set.
    """
    from raygrid.config.loader import build_grid, load_grid

    path = Path(path)
    document = _read_yaml(path)
    if isinstance(document, dict) and "data" in document and set(document) <= _DATASET_FILE_KEYS:
        grid = build_grid({"name": "data", **document}, overrides=overrides, source=str(path), variables=variables)
        return [grid.trials[0].config.data]  # type: ignore[attr-defined]
    grid = load_grid(path, overrides, variables)
    configs: list[BaseModel] = []
    for trial in grid.trials:
        data = trial.config.data  # type: ignore[attr-defined]
        if data not in configs:
            configs.append(data)
    return configs


def load_dataset(config: BaseModel) -> Dataset:
    """Load (or find in the image store) the dataset a validated ``data`` section describes."""
    source_cls = DATASETS.get(config.name)  # type: ignore[attr-defined]
    return source_cls(config).load()


def describe(config: BaseModel) -> str:
    """A short label of a data section: its title, else its name and path or size."""
    data: dict[str, Any] = config.model_dump()
    return str(data.get("title") or data.get("path") or f"{data['name']} {data.get('size', '')}".strip())


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found; give a grid file or a dataset file (experiments/datasets/*.yaml)")
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not readable YAML ({exc}); fix the file") from None
