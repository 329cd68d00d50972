"""The end-of-run summary: trials with their key metrics, the attack's effect, and stage reuse."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from rich.table import Table

from raygrid.config.loader import GridSpec

#: Column headers: the papers' abbreviations for the attack metrics.
SHORT_NAMES = {"success_rate": "SR", "feature_loss": "FL"}


def attack_baselines(grid: GridSpec) -> dict[str, str]:
    """For every trial, the name of its no-attack twin (same grid point with ``attack: none``).

    The attack's effect on the recommender is a trial's metric minus its twin's.
    Trials without a twin in the grid are left out.
    """
    by_rest: dict[str, str] = {}
    for trial in grid.trials:
        if trial.config.attack.name == "none":  # type: ignore[attr-defined]
            by_rest[_without_attack(trial.config_dict)] = trial.name
    out = {}
    for trial in grid.trials:
        twin = by_rest.get(_without_attack(trial.config_dict))
        if twin is not None:
            out[trial.name] = twin
    return out


def trials_table(rows: Sequence[dict[str, Any]], metrics: Iterable[str], baselines: dict[str, str] | None = None, effect_metric: str = "chr_20") -> Table:
    """A rich table of trials: status, the chosen metrics, and the change of ``effect_metric`` over the no-attack twin."""
    metrics = list(metrics)
    table = Table(title="Trials", title_justify="left")
    table.add_column("trial", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for m in metrics:
        table.add_column(SHORT_NAMES.get(m, m), justify="right", no_wrap=True)
    values = {row["trial"]: row.get(effect_metric) for row in rows}
    if baselines:
        table.add_column(f"Δ{effect_metric} vs none", justify="right", no_wrap=True)
    for row in rows:
        status = row["status"]
        style = "green" if status == "FINISHED" else "red"
        cells = [row["trial"], f"[{style}]{status}[/{style}]"] + [_fmt(row.get(m)) for m in metrics]
        if baselines:
            twin = baselines.get(row["trial"])
            delta = None
            if twin is not None and _num(values.get(row["trial"])) and _num(values.get(twin)):
                delta = values[row["trial"]] - values[twin]
            cells.append("" if twin is None or twin == row["trial"] else _fmt(delta, signed=True))
        table.add_row(*cells)
    return table


def stages_table(rows: Sequence[dict[str, Any]]) -> Table:
    """A rich table of stage reuse: computed, served from the disk cache, shared in memory, failed."""
    table = Table(title="Stages (this run)", title_justify="left")
    for column in ("stage", "computed", "from cache", "shared", "failed", "compute s"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for row in rows:
        table.add_row(
            row["stage"],
            str(row["computed"]),
            str(row["cached"]),
            str(row["shared"]),
            str(row.get("failed", 0)),
            f"{row['seconds']:.1f}",
        )
    return table


def _without_attack(config: dict[str, Any]) -> str:
    from raygrid.hashing import canonical_json

    rest = {k: v for k, v in config.items() if k != "attack"}
    return canonical_json(rest)


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value)


def _fmt(value: Any, signed: bool = False) -> str:
    if not _num(value):
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"
