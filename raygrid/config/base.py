"""Base pydantic models shared by every config section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A frozen model that rejects unknown keys, so a typo fails validation with its key path."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ComponentConfig(StrictModel):
    """Config of a registered component; subclasses narrow ``name`` to ``Literal[...]``."""

    name: str
