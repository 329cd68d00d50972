"""Composition of defenses: several transforms applied one after the other."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from raygrid.defenses.base import Defense, DefenseConfig
from raygrid.errors import UnknownComponentError
from raygrid.registry import DEFENSES


@DEFENSES.register("chain")
class Chain(Defense):
    """Apply several defenses in order, e.g. bit-depth reduction then JPEG.

    Arguments:
        config (Chain.Config): ``steps``: the defenses' configs in order of
            application, each a mapping with a ``name`` and that defense's
            settings, but no ``apply_to`` (the chain's own ``apply_to`` decides
            which images the whole chain transforms); ``apply_to`` ("all" or
            "attacked", default "all").

    Examples::
        >>> chain = Chain(Chain.Config(steps=[{"name": "bit_depth", "bits": 5},
        ...                                   {"name": "jpeg", "quality": 70}]))
        >>> defended = chain(images)

    Notes:
        - Steps are validated against their own configs when the chain's config
          is, so a typo in a step fails before a grid starts; they are kept in
          their complete form (defaults filled in), so equal chains share cache keys.
        - A chain cannot contain a chain or ``none``: write the steps out.
    """

    class Config(DefenseConfig):
        name: Literal["chain"] = "chain"
        steps: tuple[dict[str, Any], ...] = Field(..., min_length=1)

        @field_validator("steps", mode="before")
        @classmethod
        def _validate_steps(cls, steps: Any) -> Any:
            if not isinstance(steps, (list, tuple)):
                return steps  # pydantic reports the type error
            complete = []
            for i, step in enumerate(steps):
                if not isinstance(step, dict) or "name" not in step:
                    raise ValueError(f"step {i} must be a mapping with a 'name', e.g. {{name: jpeg, quality: 50}}")
                if step["name"] in ("chain", "none"):
                    raise ValueError(f"step {i}: a chain cannot contain {step['name']!r}")
                if "apply_to" in step:
                    raise ValueError(f"step {i}: set apply_to on the chain, not on its steps")
                try:
                    step_cls = DEFENSES.get(step["name"])
                except UnknownComponentError as exc:
                    raise ValueError(f"step {i}: {exc}") from None  # pydantic reports ValueErrors with the key path
                config = step_cls.Config.model_validate(step)
                complete.append(config.model_dump(mode="json", exclude={"apply_to"}))
            return tuple(complete)

    config: Config

    @property
    def defenses(self) -> list[Defense]:
        """The built steps, in order."""
        return [DEFENSES.build(DEFENSES.get(step["name"]).Config.model_validate(step)) for step in self.config.steps]

    def label(self) -> str:
        return "chain_" + "+".join(d.label() for d in self.defenses) + self._label_suffix()

    def transform(self, images: np.ndarray) -> np.ndarray:
        out = images
        for defense in self.defenses:
            out = defense(out)
        return out if out is not images else np.array(images, copy=True)


__all__ = ["Chain"]
