"""Component registries.

Every pluggable component (dataset source, extractor, attack, defense,
recommender) is a class registered under a name with a ``register`` decorator,
in the manner of timm's model registry. A registered class carries a pydantic
``Config`` model whose ``name`` field is ``Literal[<registered name>]``; the
config schema of a grid file is assembled from these models
(:func:`raygrid.config.schema.trial_model`), so adding a component is a matter of
writing and registering one class.
"""

from __future__ import annotations

import fnmatch
import typing
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from raygrid.errors import UnknownComponentError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of component classes of one kind.

    Args:
        kind: What the registry holds, e.g. ``"attack"``; used in error messages
            and as the config section name.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator registering ``cls`` under ``name``.

        The class must define ``Config``, a pydantic model whose ``name`` field
        is ``Literal[name]``.
        """

        def decorator(cls: type[T]) -> type[T]:
            existing = self._classes.get(name)
            # The same class imported twice (e.g. by a doctest collector) re-registers harmlessly.
            if existing is not None and existing.__qualname__ != cls.__qualname__:
                raise ValueError(f"{self.kind} {name!r} is registered twice ({existing.__qualname__}, {cls.__qualname__})")
            config = getattr(cls, "Config", None)
            if config is None or "name" not in getattr(config, "model_fields", {}):
                raise TypeError(f"{cls.__name__} needs a pydantic Config with a 'name' field")
            literal = typing.get_args(config.model_fields["name"].annotation)
            if tuple(literal) != (name,):
                raise TypeError(f"{cls.__name__}.Config.name must be Literal[{name!r}], got {literal}")
            self._classes[name] = cls
            return cls

        return decorator

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``; an unknown name lists the choices."""
        try:
            return self._classes[name]
        except KeyError:
            raise UnknownComponentError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names()) or '(none)'}"
            ) from None

    def build(self, config: Any, **kwargs: Any) -> T:
        """Instantiate the class named by ``config.name`` with ``config`` and ``kwargs``."""
        return self.get(config.name)(config, **kwargs)  # type: ignore[call-arg]

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern``, sorted."""
        return sorted(n for n in self._classes if fnmatch.fnmatch(n, pattern))

    def config_models(self) -> list[type]:
        """The ``Config`` models of all registered classes, in name order."""
        return [self._classes[n].Config for n in self.names()]  # type: ignore[attr-defined]

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __len__(self) -> int:
        return len(self._classes)


DATASETS: Registry[Any] = Registry("data")
EXTRACTORS: Registry[Any] = Registry("extractor")
ATTACKS: Registry[Any] = Registry("attack")
DEFENSES: Registry[Any] = Registry("defense")
RECOMMENDERS: Registry[Any] = Registry("recommender")

REGISTRIES: dict[str, Registry[Any]] = {
    r.kind: r for r in (DATASETS, EXTRACTORS, ATTACKS, DEFENSES, RECOMMENDERS)
}
