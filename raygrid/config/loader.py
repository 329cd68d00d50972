"""Read a grid file: YAML -> validated run settings and one validated config per grid point.

Precedence: component defaults < the YAML file < ``--set`` overrides from the CLI.
Every grid point is validated here, before Ray starts, and a mistake becomes a
:class:`~raygrid.errors.ConfigError` naming the file, the trial and the key path.

String values may refer to variables as ``${NAME}`` (e.g.
``path: ${RAYGRID_DATA_ROOT}/amazon_men``), so a grid file names no machine's
folders. A variable's value comes from, first to last: the ``variables``
argument (the CLI's ``--data-root`` sets ``RAYGRID_DATA_ROOT``), the file's own
``variables:`` section, the environment. The values used are written back into
the document's ``variables`` section, which is stored with the grid's session,
so ``raygrid resume`` re-applies exactly the values the grid started with.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from raygrid.config.schema import COMPONENT_SECTIONS, RUN_KEYS, GridRunSettings, trial_model
from raygrid.errors import ConfigError
from raygrid.hashing import content_hash


@dataclass(frozen=True)
class TrialSpec:
    """One grid point.

    Attributes:
        name: Trial name built from the grid axes' values, e.g. ``standard-pgd_eps8-vbpr``;
            unique within the grid and used as its grid key.
        axes: The value of each grid axis at this point, by dotted path.
        config: The validated trial config (a ``TrialConfig`` model).
        labels: The label of each grid axis's value at this point (what the name is
            built from), by dotted path; e.g. ``{"attack": "pgd_eps8"}``.
    """

    name: str
    axes: dict[str, Any]
    config: BaseModel
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def config_dict(self) -> dict[str, Any]:
        """The resolved trial config as plain JSON-able data."""
        return self.config.model_dump(mode="json")

    @property
    def config_hash(self) -> str:
        """Hash of the resolved trial config: changes whenever any setting of the trial changes."""
        return content_hash(self.config_dict)

    def component(self, section: str) -> str:
        """A short label of one component section, e.g. ``pgd_eps8`` for the attack."""
        return axis_label(_non_default_fields(getattr(self.config, section)))


@dataclass(frozen=True)
class GridSpec:
    """A validated grid file.

    Attributes:
        name: Grid name (the file's ``name`` key, else its stem); also the MLflow experiment.
        path: The file it was read from (``None`` when built from a dict).
        document: The resolved YAML document, overrides applied.
        settings: Run-wide settings (resources, tracking, storage, grid axes).
        trials: Every grid point, in Cartesian-product order of the axes as written.
        overrides: The ``--set`` overrides applied over the file (resume re-applies them).
    """

    name: str
    path: Path | None
    document: dict[str, Any]
    settings: GridRunSettings
    trials: list[TrialSpec] = field(default_factory=list)
    overrides: tuple[str, ...] = ()

    @property
    def grid_hash(self) -> str:
        """Hash of the resolved document: two runs with equal hashes ran the same grid."""
        return content_hash(self.document)

    def trial(self, name: str) -> TrialSpec:
        """The grid point called ``name``."""
        for t in self.trials:
            if t.name == name:
                return t
        raise KeyError(name)


def load_grid(path: str | Path, overrides: Sequence[str] = (), variables: Mapping[str, str] | None = None) -> GridSpec:
    """Read, resolve and validate the grid file at ``path``.

    Args:
        path: A YAML grid file.
        overrides: ``dotted.path=value`` strings applied over the file (values parsed as YAML).
        variables: Values of ``${NAME}`` references, over the file's and the environment's.

    Raises:
        ConfigError: The file is missing, not YAML, or any grid point is invalid.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"grid file {str(path)!r} not found; give the path of a YAML grid such as experiments/demo.yaml")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where} ({getattr(exc, 'problem', exc)}); fix the syntax") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc}); check the file") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings, not a {type(document).__name__}")
    document.setdefault("name", _name_from_stem(path.stem))
    return build_grid(document, overrides=overrides, source=str(path), path=path, variables=variables)


def build_grid(
    document: dict[str, Any],
    *,
    overrides: Sequence[str] = (),
    source: str = "<grid>",
    path: Path | None = None,
    variables: Mapping[str, str] | None = None,
) -> GridSpec:
    """Validate a grid given as a dict (the YAML document); see :func:`load_grid`."""
    document = copy.deepcopy(document)
    for item in overrides:
        key, value = parse_override(item)
        _set_path(document, key, value, source)
    resolved = resolve_variables(document, variables, source)
    run_part = {k: v for k, v in resolved.items() if k in RUN_KEYS}
    trial_part = {k: v for k, v in resolved.items() if k not in RUN_KEYS and k != VARIABLES_KEY}
    try:
        settings = GridRunSettings.model_validate(run_part)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {format_validation_error(exc)}") from None

    model = trial_model()
    # A mapping value may name itself: ``{label: traditional, name: resnet50, ...}``; the
    # label names the trial and is not a setting.
    named = [(axis, [_split_label(v, axis, source) for v in values]) for axis, values in settings.grid.items()]
    axes = [(axis, [value for value, _ in pairs]) for axis, pairs in named]
    chosen = {axis: [label for _, label in pairs] for axis, pairs in named}
    for axis, values in axes:
        head = axis.split(".")[0]
        if head not in model.model_fields or head == "name":
            choices = ", ".join(k for k in model.model_fields if k != "name")
            raise ConfigError(f"{source}: grid axis {axis!r}: {head!r} is not a trial setting; use one of: {choices}")
        if not values:
            raise ConfigError(f"{source}: grid axis {axis!r} has no values; give a non-empty list")

    for item in overrides:
        key = parse_override(item)[0]
        for axis, _ in axes:
            if key == axis or key.startswith(axis + ".") or axis.startswith(key + "."):
                raise ConfigError(
                    f"--set {key} is decided by the grid axis {axis!r}, which would override it; "
                    f"set the axis instead, e.g. --set 'grid.{axis}=[...]'"
                )

    trials: list[TrialSpec] = []
    seen: dict[str, dict[str, Any]] = {}
    # Trial names come from the axis values as written (``${NAME}`` unresolved), so a
    # grid point keeps its name (its grid key) wherever the data root lies.
    written = document.get("grid") if isinstance(document.get("grid"), dict) else {}
    for positions in itertools.product(*(range(len(values)) for _, values in axes)) if axes else [()]:
        combo = tuple(values[p] for (_, values), p in zip(axes, positions))
        labels = tuple(
            chosen[axis][p]
            if chosen[axis][p] is not None
            else written[axis][p]
            if isinstance(written.get(axis), list) and len(written[axis]) == len(values)
            else combo[n]
            for n, ((axis, values), p) in enumerate(zip(axes, positions))
        )
        point = copy.deepcopy(trial_part)
        assignment = {axis: value for (axis, _), value in zip(axes, combo)}
        for axis, value in assignment.items():
            _set_path(point, axis, copy.deepcopy(value), source)
        name = "-".join(axis_label(v) for v in labels) or "trial"
        where = f"{source}: trial {name!r}" if axes else source
        try:
            config = model.model_validate(point)
        except ValidationError as exc:
            raise ConfigError(f"{where}: {format_validation_error(exc)}") from None
        if name in seen:
            raise ConfigError(
                f"{source}: grid points {seen[name]} and {assignment} are both named {name!r}; make the axis values distinct"
            )
        seen[name] = assignment
        axis_labels = {axis: axis_label(label) for (axis, _), label in zip(axes, labels)}
        trials.append(TrialSpec(name=name, axes=assignment, config=config, labels=axis_labels))

    name = trials[0].config.name  # type: ignore[attr-defined]
    return GridSpec(
        name=name, path=path, document=document, settings=settings, trials=trials, overrides=tuple(overrides)
    )


VARIABLES_KEY = "variables"
"""Top-level key of a grid document holding the values of its ``${NAME}`` references."""

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def resolve_variables(document: dict[str, Any], variables: Mapping[str, str] | None, source: str) -> dict[str, Any]:
    """``document`` with every ``${NAME}`` in its strings replaced; records the values used.

    The values used are stored in ``document["variables"]`` (in place), so the
    document carries what it needs to be resolved again.

    Raises:
        ConfigError: A referenced variable has no value, or ``variables`` is not a mapping.
    """
    recorded = document.get(VARIABLES_KEY) or {}
    if not isinstance(recorded, dict):
        raise ConfigError(f"{source}: {VARIABLES_KEY} must be a mapping of NAME: value")
    used: dict[str, str] = {}

    def value_of(name: str, where: str) -> str:
        if variables and name in variables:
            value = variables[name]
        elif name in recorded:
            value = recorded[name]
        elif name in os.environ:
            value = os.environ[name]
        else:
            hint = "pass --data-root DIR or " if name == "RAYGRID_DATA_ROOT" else ""
            raise ConfigError(f"{source}: {where} uses ${{{name}}}, which is not set; {hint}export {name}=...")
        used[name] = str(value)
        return str(value)

    def walk(node: Any, where: str) -> Any:
        if isinstance(node, str):
            return _REFERENCE.sub(lambda m: value_of(m.group(1), where or "<top level>"), node)
        if isinstance(node, dict):
            return {k: walk(v, f"{where}.{k}" if where else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{where}[{n}]") for n, v in enumerate(node)]
        return node

    resolved = {k: walk(v, k) for k, v in document.items() if k != VARIABLES_KEY}
    if used:
        document[VARIABLES_KEY] = {**{k: str(v) for k, v in recorded.items()}, **used}
        resolved[VARIABLES_KEY] = document[VARIABLES_KEY]
    return resolved


def parse_override(item: str) -> tuple[str, Any]:
    """Split ``dotted.path=value``; the value is parsed as YAML (``eps=8`` gives an int)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. attack.eps=8")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _split_label(value: Any, axis: str, source: str) -> tuple[Any, str | None]:
    """``(value without its label key, the label)`` of one axis value; ``(value, None)`` when it has none."""
    if not isinstance(value, dict) or "label" not in value:
        return value, None
    rest = {k: v for k, v in value.items() if k != "label"}
    label = value["label"]
    if not isinstance(label, (str, int, float)) or not axis_label(label):
        raise ConfigError(
            f"{source}: grid axis {axis!r}: label {label!r} gives no name; use letters, digits, '.' or '_'"
        )
    return rest, axis_label(label)


def axis_label(value: Any) -> str:
    """A short, path-safe label of a grid axis value: ``{name: pgd, eps: 8}`` -> ``pgd_eps8``."""
    if isinstance(value, dict):
        parts = [axis_label(value["name"])] if "name" in value else []
        parts += [f"{k}{axis_label(v)}" for k, v in value.items() if k != "name"]
        return "_".join(parts)
    if isinstance(value, (list, tuple)):
        return "x".join(axis_label(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return re.sub(r"[^A-Za-z0-9._]+", "", str(value))


def format_validation_error(exc: ValidationError) -> str:
    """One line naming the first invalid key path, the problem and the value given."""
    errors = exc.errors()
    first = errors[0]
    loc = _clean_loc(first.get("loc", ()))
    message = first.get("msg", "invalid value")
    if first.get("type") == "extra_forbidden":
        message = "unknown key (a typo?); remove it or check the spelling"
    elif first.get("type") == "union_tag_invalid":
        tags = first.get("ctx", {}).get("expected_tags", "")
        message = f"unknown component {first.get('ctx', {}).get('tag')!r}; choose one of: {tags}"
    given = first.get("input")
    shown = "" if first.get("type") in ("extra_forbidden", "missing", "union_tag_invalid") else f" (got {given!r})"
    more = f" [and {len(errors) - 1} more problem(s)]" if len(errors) > 1 else ""
    return f"{loc or '<top level>'}: {message}{shown}{more}"


def _clean_loc(loc: Iterable[Any]) -> str:
    parts = [str(p) for p in loc]
    # Discriminated unions put the tag in the path (attack.pgd.eps): drop it.
    if len(parts) > 2 and parts[0] in COMPONENT_SECTIONS:
        parts = [parts[0]] + parts[2:]
    return ".".join(parts)


def _set_path(target: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    keys = dotted.split(".")
    node = target
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: cannot set {dotted!r}: {key!r} is a value, not a section")
        node = child
    node[keys[-1]] = value


def _name_from_stem(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "grid"


def _non_default_fields(section: BaseModel) -> dict[str, Any]:
    data = {"name": section.name}
    defaults = type(section)()
    for key in type(section).model_fields:
        if key != "name" and getattr(section, key) != getattr(defaults, key):
            data[key] = getattr(section, key)
    return data
