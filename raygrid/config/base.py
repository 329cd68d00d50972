"""Base pydantic models shared by every config section."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A frozen model that rejects unknown keys, so a typo fails validation with its key path."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ComponentConfig(StrictModel):
    """Config of a registered component; subclasses narrow ``name`` to ``Literal[...]``."""

    name: str


class Configured:
    """Base of a component built from its own ``Config`` (attacks, defenses).

    ``cls()`` uses the defaults of ``cls.Config``; a config of another class is
    refused, so a PGD config cannot silently build an FGSM.

    Attributes:
        config: The component's validated config.
    """

    Config: ClassVar[type[ComponentConfig]]

    def __init__(self, config: ComponentConfig | None = None) -> None:
        if config is None:
            config = self.Config()
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} needs a {type(self).__name__}.Config, got {type(config).__name__}")
        self.config = config
