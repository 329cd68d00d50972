"""The end-of-run summary: trials with their key metrics, the attack's effect, and stage reuse."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.table import Table

from raygrid.config.loader import GridSpec

#: Column headers: the papers' abbreviations for the attack metrics.
SHORT_NAMES = {
    "success_rate": "SR", "feature_loss": "FL", "ttest_p_chr_20": "p(chr_20)",
    "cold_hr_5_cooperative": "HR@5 coop", "cold_hr_5_adversarial": "HR@5 adv", "delta_cold_hr_5": "ΔHR@5",
    "ttest_p_cold_hr_5": "p(HR@5)", "prediction_shift": "shift",
}

#: Per-user metrics tested against the no-attack twin. HR, Precision and the CHR
#: count are left out: per user they are Recall, Recall / K and K x CHR, so their
#: p-values would repeat those of Recall and CHR.
TESTED_PREFIXES = ("recall_", "ndcg_", "efd_", "chr_", "ncdcg_")
_UNTESTED_PREFIXES = ("chr_count_",)


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


def twin_significance(
    outcomes: Mapping[str, Any], baselines: Mapping[str, str]
) -> dict[str, dict[str, float]]:
    """Paired tests of every attacked trial against its no-attack twin, per user.

    Args:
        outcomes: Trial name -> its :class:`~raygrid.pipeline.outcome.TrialOutcome`
            (trials without one are skipped).
        baselines: Trial name -> twin name, from :func:`attack_baselines`.

    Returns:
        Attacked trial name -> ``{ttest_p_<m>, wilcoxon_p_<m>, delta_<m>}`` for each
        tested per-user metric ``m`` (see :data:`TESTED_PREFIXES`), to log to the
        attacked trial's run. Twins themselves get nothing.
    """
    from raygrid.metrics.significance import paired_metrics

    out: dict[str, dict[str, float]] = {}
    for name, twin in baselines.items():
        if name == twin or name not in outcomes or twin not in outcomes:
            continue
        treated, base = outcomes[name].per_user, outcomes[twin].per_user
        names = [
            m for m in treated
            if m.startswith(TESTED_PREFIXES) and not m.startswith(_UNTESTED_PREFIXES) and m in base
        ]
        out[name] = paired_metrics(treated, base, names)
    return out


def trials_table(rows: Sequence[dict[str, Any]], metrics: Iterable[str], baselines: dict[str, str] | None = None, effect_metric: str = "chr_20") -> Table:
    """A rich table of trials: status, the chosen metrics, and the change of ``effect_metric`` over the no-attack twin.

    When the trials ran on more than one node (a cluster), a ``node`` column says
    where each trial's last stage ran; when any trial needed more than one
    attempt, an ``attempts`` column says how many. On a laptop both stay hidden.
    """
    # Only the metrics some trial has: a grid's study logs its own (VAR: SR, CHR; AIP: cold-item HR).
    metrics = [m for m in metrics if any(row.get(m) is not None for row in rows)]
    show_node = len({row.get("node") for row in rows if row.get("node")}) > 1
    show_attempts = any((row.get("attempts") or 0) > 1 for row in rows)
    table = Table(title="Trials", title_justify="left")
    table.add_column("trial", no_wrap=True)
    table.add_column("status", no_wrap=True)
    if show_node:
        table.add_column("node", no_wrap=True)
    if show_attempts:
        table.add_column("attempts", justify="right", no_wrap=True)
    for m in metrics:
        table.add_column(SHORT_NAMES.get(m, m), justify="right", no_wrap=True)
    values = {row["trial"]: row.get(effect_metric) for row in rows}
    if baselines:
        table.add_column(f"Δ{effect_metric} vs none", justify="right", no_wrap=True)
    for row in rows:
        status = row["status"]
        style = "green" if status == "FINISHED" else "red"
        cells = [row["trial"], f"[{style}]{status}[/{style}]"]
        if show_node:
            cells.append(row.get("node") or "")
        if show_attempts:
            cells.append(str(row.get("attempts") or 0))
        cells += [_fmt(row.get(m)) for m in metrics]
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
