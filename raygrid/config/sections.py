"""Config sections that are not registered components: run-wide settings of a grid file."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from raygrid.config.base import StrictModel


class CategoriesConfig(StrictModel):
    """Origin and target categories of the VAR attack.

    ``None`` takes the dataset's suggestion (the synthetic data knows its rare and
    popular category). Names are category names as the extractor knows them.
    """

    origin: str | None = None
    target: str | None = None

    @model_validator(mode="after")
    def _distinct(self) -> CategoriesConfig:
        if self.origin is not None and self.origin == self.target:
            raise ValueError("origin and target categories must differ")
        return self


class MetricsConfig(StrictModel):
    """Evaluation settings: the top-K cutoffs of every ranking metric."""

    cutoffs: tuple[int, ...] = Field((20, 50), min_length=1)
    block_size: int = Field(1024, ge=1, description="users scored per block when ranking")

    @model_validator(mode="after")
    def _positive(self) -> MetricsConfig:
        if any(k < 1 for k in self.cutoffs):
            raise ValueError("every cutoff must be >= 1")
        return self


class StageResources(StrictModel):
    """Resources of one stage task: CPU count and (fractional) GPU share."""

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)


class ResourcesConfig(StrictModel):
    """Resources per stage. ``trial`` is the trial's own work (recommender training and evaluation).

    A GPU request on a cluster without GPUs becomes a CPU request with a warning;
    a request larger than any node is refused before the grid starts.
    """

    trial: StageResources = StageResources()
    dataset: StageResources = StageResources()
    extractor: StageResources = StageResources()
    features: StageResources = StageResources()
    attack: StageResources = StageResources()
    attacked_features: StageResources = StageResources()
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="trials coordinated at once; default: all (their stages queue for resources)"
    )

    def for_stage(self, stage: str) -> StageResources:
        """Resources of ``stage``; stages without their own entry use one CPU."""
        value = getattr(self, stage, None)
        return value if isinstance(value, StageResources) else StageResources()


class TrackingConfig(StrictModel):
    """Where MLflow records the grid.

    ``uri`` is a folder (made into an absolute ``sqlite:///<folder>/mlflow.db`` with
    artifacts under ``<folder>/artifacts``; MLflow 3 refuses its plain file store),
    a ``sqlite:///`` URI, or an ``http(s)://`` tracking server.
    """

    uri: str = "mlruns"
    experiment: str | None = Field(None, description="MLflow experiment; default: the grid name")


class StorageConfig(StrictModel):
    """Where stage results (the content-addressed cache) and Ray Tune state live."""

    root: str = ".raygrid"


StudyName = Literal["var"]
