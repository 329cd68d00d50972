"""Config sections that are not registered components: run-wide settings of a grid file."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from raygrid.config.base import StrictModel


class CategoriesConfig(StrictModel):
    """Origin and target categories of the VAR attack, and which items are attacked.

    Names are category names as the extractor knows them. A category given here is
    fixed (the paper's sandal -> running shoe); one left out is chosen by
    ``selection``:

    - ``auto`` (default; the VAR paper, section 4): from the clean runs (no attack)
      of every extractor x recommender on the grid, the mean CHR@``k`` of each
      category; the origin is the least recommended category (CHR > 0) with at
      least ``min_items`` items under every extractor, the target the category,
      with at least ``min_items`` items, whose mean CHR@``k`` is closest to
      ``target_multiple`` times the origin's. Logged with every trial
      (``categories/selection.csv``, ``selection_*`` metrics).
    - ``dataset``: the dataset's own suggestion (the synthetic data knows its rare
      and popular category).

    Items attacked: those whose clean image is classified as the origin by the
    trial's own extractor (default), or by the extractor configured in
    ``classify_with``: the published code classified with the undefended extractor
    in every trial, e.g. ``classify_with: {name: resnet50, training: pretrained}``.
    """

    origin: str | None = None
    target: str | None = None
    selection: Literal["auto", "dataset"] = "auto"
    target_multiple: float = Field(4.0, gt=1.0, description="the target's CHR@k as a multiple of the origin's")
    min_items: int = Field(10, ge=1, description="fewest items a selected category must have")
    k: int = Field(50, ge=1, description="cutoff of the CHR that selection compares")
    classify_with: dict[str, Any] | None = Field(
        None, description="extractor section whose classification picks the attacked items; default: the trial's"
    )

    @model_validator(mode="after")
    def _distinct(self) -> CategoriesConfig:
        if self.origin is not None and self.origin == self.target:
            raise ValueError("origin and target categories must differ")
        return self

    @property
    def fixed(self) -> bool:
        """Whether both categories are given (or taken from the dataset): no selection runs."""
        return self.selection == "dataset" or (self.origin is not None and self.target is not None)


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

    Stages that do no GPU work take their entry's CPUs and no GPU share: the VAR
    evaluation (numpy metrics) and the training of a recommender that trains on
    the CPU whatever the device (FM: LightFM).

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
    retry_seconds: float = Field(
        60.0,
        gt=0,
        description="how long a driver or worker keeps retrying a tracking store that stopped answering, "
        "with exponential backoff, before the trial (or grid) fails",
    )


class StorageConfig(StrictModel):
    """Where stage results (the content-addressed cache) and Ray Tune state live.

    ``root`` is a local folder (relative to the working directory), a shared
    filesystem path mounted at the same place on every node, or an ``s3://bucket/prefix``
    URI (credentials and endpoint from the standard ``AWS_*`` variables;
    ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` for MinIO and other S3-compatible stores).
    """

    root: str = ".raygrid"


class FirstStageConfig(StrictModel):
    """The AIP study's first-stage BPR-MF, which picks each user's candidate set.

    Liu & Larson (section 5.3.1): 64 factors, SGD with L2 weight 1e-3. ``lr`` is
    the step on the mean loss of a minibatch of ``batch_size`` triples (1.0 is
    about 0.002 per triple; the paper: 0.01 per triple). The optimiser is SGD as
    in the paper, not BPR-MF's own default (Adam).
    """

    factors: int = Field(64, ge=1)
    epochs: int = Field(50, ge=1)
    optimizer: Literal["adam", "sgd"] = "sgd"
    lr: float = Field(1.0, gt=0)
    reg: float = Field(1e-3, ge=0)
    batch_size: int = Field(512, ge=1)


class AipConfig(StrictModel):
    """Settings of the AIP study (Liu & Larson, "Adversarial Item Promotion"); ignored by no study: the VAR study refuses non-defaults.

    Attributes:
        candidates: First-stage candidates per user (the paper: 1000); the user's test
            item and one cold item are added, so the second stage ranks ``candidates + 2``.
        cold_items: Cold items to hold out of training when the dataset holds none out
            itself (``data.cold_items`` of the real sources); ``None``: the dataset's own,
            else 1000 (the paper).
        hook_item: The EXPA and c-SEMA hook item: an item index (int) or the source's
            item id (str); ``None``: the most interacted training item (the paper's choice).
        cutoffs: N of the HR@N metrics (the paper: 5, 10, 20).
        first_stage: The candidate generator.
    """

    candidates: int = Field(1000, ge=1)
    cold_items: int | None = Field(None, ge=1)
    hook_item: int | str | None = None
    cutoffs: tuple[int, ...] = Field((5, 10, 20), min_length=1)
    first_stage: FirstStageConfig = FirstStageConfig()

    @model_validator(mode="after")
    def _positive_cutoffs(self) -> AipConfig:
        if any(k < 1 for k in self.cutoffs):
            raise ValueError("every cutoff must be >= 1")
        return self


StudyName = Literal["var", "aip"]
