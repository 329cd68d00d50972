"""The config schema, assembled from the component registries.

A trial config has one section per component kind (``data``, ``extractor``,
``attack``, ``defense``, ``recommender``) whose ``name`` picks a registered class and whose
other keys are that class's ``Config`` fields. The schema is a pydantic
discriminated union over the registered configs, built when first needed, so a
newly registered component is configurable without editing this module.

This is the one place where ``config`` looks at the components: it imports
:mod:`raygrid.components` to populate the registries.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BaseModel, Field, create_model, model_validator

from raygrid.config.base import StrictModel
from raygrid.config.sections import (
    AipConfig,
    CategoriesConfig,
    MetricsConfig,
    ResourcesConfig,
    StorageConfig,
    StudyName,
    TrackingConfig,
)
from raygrid.registry import REGISTRIES, Registry

#: Trial config sections backed by a registry, with the component used when the section is absent.
COMPONENT_SECTIONS: dict[str, str] = {
    "data": "synthetic",
    "extractor": "smallcnn",
    "attack": "none",
    "defense": "none",
    "recommender": "vbpr",
}

#: Grid-file keys that configure the whole run rather than a trial (not grid axes).
RUN_KEYS: frozenset[str] = frozenset({"grid", "resources", "tracking", "storage", "description", "retries"})


class TrialBase(StrictModel):
    """Fields every trial config has besides its component sections."""

    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="grid name")
    study: StudyName = "var"
    seed: int = Field(0, ge=0)
    categories: CategoriesConfig = CategoriesConfig()
    metrics: MetricsConfig = MetricsConfig()
    aip: AipConfig = AipConfig()

    @model_validator(mode="after")
    def _settings_fit_the_study(self) -> Any:
        # Refused here, so `raygrid validate` names the trial before anything runs.
        attack = getattr(self, "attack", None)
        if attack is not None:
            from raygrid.registry import ATTACKS

            studies = getattr(ATTACKS.get(attack.name), "studies", None)
            if studies is not None and self.study not in studies:
                raise ValueError(
                    f"attack {attack.name!r} belongs to the {'/'.join(sorted(studies))} study; "
                    f"set study: {min(studies)} or choose another attack"
                )
            if studies is None and self.study == "aip" and attack.name != "none":
                raise ValueError(
                    f"attack {attack.name!r} is a VAR attack; the AIP study takes insa, expa, csema, taamr "
                    "(taamr with method fgsm or pgd for the classifier-targeted baseline)"
                )
        if self.study != "aip" and self.aip != AipConfig():
            raise ValueError("the aip section configures the AIP study only; remove it or set study: aip")
        if self.study == "aip" and self.categories != CategoriesConfig():
            raise ValueError("categories (origin, target) belong to the VAR study; remove them for study: aip")
        if self.study == "aip" and self.metrics.cutoffs != MetricsConfig().cutoffs:
            raise ValueError("the AIP study's HR@N cutoffs are aip.cutoffs; remove metrics.cutoffs")
        return self

    @model_validator(mode="before")
    @classmethod
    def _default_component_names(cls, data: Any) -> Any:
        # A section given without ``name`` (e.g. only ``extractor.training`` set by a
        # grid axis) means the default component, so the discriminator can find its tag.
        if isinstance(data, dict):
            data = dict(data)
            for section, default in COMPONENT_SECTIONS.items():
                value = data.get(section)
                if isinstance(value, dict) and "name" not in value:
                    data[section] = {"name": default, **value}
        return data


class GridRunSettings(StrictModel):
    """Run-wide settings of a grid file (everything that is not a trial axis)."""

    description: str = ""
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    resources: ResourcesConfig = ResourcesConfig()
    tracking: TrackingConfig = TrackingConfig()
    storage: StorageConfig = StorageConfig()
    retries: int = Field(
        2,
        ge=0,
        le=100,
        description="times a trial whose process or node died is started again (continuing its MLflow run); "
        "also the retries of a stage task whose worker died. Errors raised by a stage are not retried",
    )


def _section_type(registry: Registry[Any]) -> Any:
    models = registry.config_models()
    if not models:
        raise RuntimeError(f"no {registry.kind} is registered")
    if len(models) == 1:
        return models[0]
    return Annotated[Union[tuple(models)], Field(discriminator="name")]  # type: ignore[valid-type]  # noqa: UP007 (built at run time)


_MODEL_CACHE: dict[tuple[Any, ...], type[BaseModel]] = {}


def trial_model() -> type[BaseModel]:
    """The pydantic model of one trial's config, over all registered components."""
    import raygrid.components  # noqa: F401  (registers every component)

    signature = tuple(tuple(REGISTRIES[s].names()) for s in COMPONENT_SECTIONS)
    model = _MODEL_CACHE.get(signature)
    if model is None:
        fields: dict[str, Any] = {}
        for section, default in COMPONENT_SECTIONS.items():
            registry = REGISTRIES[section]
            fields[section] = (_section_type(registry), registry.get(default).Config())
        model = create_model("TrialConfig", __base__=TrialBase, **fields)
        _MODEL_CACHE[signature] = model
    return model
