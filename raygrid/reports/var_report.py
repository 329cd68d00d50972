"""The VAR study's report: the paper's Tables 3, 4 and 5, two plots and the correlation finding.

From a finished (or partly finished) VAR grid session in MLflow:

* **Table 3**: attack success rate SR and feature loss FL per attack (rows) and
  extractor (columns), per dataset. Both are products of the attack stage, which
  does not depend on the recommender: each cell is taken from the trials of one
  attack and extractor, and a note says where the recommenders' trials disagree.
* **Table 4**: CHR@20, CHR@50, nCDCG@20, nCDCG@50 of the origin category per
  dataset, recommender and attack (rows) and extractor (columns). The highest
  value of each dataset x recommender block, per column, is marked (bold; ``*`` in
  CSV), and an attacked cell whose paired t-test against its clean twin gives
  p < 0.05 carries a dagger; ``table4_pvalues`` lists the p-values.
* **Table 5**: Recall@20, nDCG@20, EFD@20, Gini@20 and item coverage@20 per
  dataset, extractor, recommender and attack; best of each dataset x extractor x
  recommender block marked, as in the paper.
* **Plots**: CHR@20 by attack for each extractor and recommender (grouped bars,
  one panel per dataset and recommender); feature loss (and success rate) of every
  attacked trial against its change of CHR@20 over the clean twin.
* **Correlations**: Spearman rank correlation of FL with ΔCHR@20 and of SR with
  ΔCHR@20 over the attacked trials (all, per dataset, per recommender): the
  paper's finding is that feature loss, not success rate, moves the ranking.

Rows and columns follow the order in which the grid file lists its axis values.
A grid axis is assigned to a role by its first path element (``data``,
``extractor``, ``attack``, ``recommender``); several axes of one role are joined
(``standard/16``); any other axis (``defense``, ``seed``, ``categories.origin``)
becomes an extra row level right after the dataset, and so part of every block.
A role that is not a grid axis takes the trials' component label (one value).
Gini@20 follows the paper (Elliot's convention): ``1 - G``, higher = recommendations
spread more evenly (the ``gini_diversity_20`` metric; see
:mod:`raygrid.metrics.beyond`).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raygrid.reports.report import GridSession, ReportContent, first_seen
from raygrid.reports.tables import (
    DAGGER,
    Cell,
    Column,
    ReportTable,
    Row,
    format_value,
    to_csv,
    to_latex,
    to_markdown,
)

log = logging.getLogger(__name__)

#: Significance level of the dagger mark (paired t-test against the clean twin).
ALPHA = 0.05

#: Roles of the report's dimensions, and the trial config section each comes from.
ROLE_SECTIONS = {"dataset": "data", "extractor": "extractor", "attack": "attack", "recommender": "recommender"}
_ROLE_OF_HEAD = {section: role for role, section in ROLE_SECTIONS.items()}

#: (metric name, header, number format) of each table.
TABLE3_METRICS = (("success_rate", "SR", ".1%"), ("feature_loss", "FL", ".4f"))
TABLE4_METRICS = (
    ("chr_20", "CHR@20", ".4f"),
    ("chr_50", "CHR@50", ".4f"),
    ("ncdcg_20", "nCDCG@20", ".4f"),
    ("ncdcg_50", "nCDCG@50", ".4f"),
)
TABLE5_METRICS = (
    ("recall_20", "Recall@20", ".4f"),
    ("ndcg_20", "nDCG@20", ".4f"),
    ("efd_20", "EFD@20", ".4f"),
    ("gini_diversity_20", "Gini@20", ".4f"),
    ("item_coverage_20", "iCov@20", ".0f"),
)
#: The ranking change the correlations and the scatter plot look at.
EFFECT_METRIC = "chr_20"

#: Files of the report, in the order the README lists them.
TABLE_KEYS = ("table3", "table4", "table4_pvalues", "table5", "correlations")
PLOT_BARS = "chr20_by_attack.png"
PLOT_SCATTER = "fl_vs_delta_chr20.png"


# --------------------------------------------------------------------------- the collected session


@dataclass(frozen=True)
class TrialRecord:
    """One grid point of the session, placed on the report's dimensions.

    Attributes:
        name: The trial (grid key).
        status: MLflow status (``FINISHED``, ``FAILED``, ...) or ``MISSING`` when it has no run.
        dataset, extractor, attack, recommender: Its label on each role.
        setting: Its labels on the grid's other axes (see :attr:`VarSession.setting_axes`).
        clean: Whether its attack is ``none`` (the baseline of its attacked twins).
        metrics: Its logged metrics (empty unless it has a run).
        origin, target: The attacked and the target category, when logged.
        error: Its error summary when it did not finish.
        run_id: Its MLflow run.
    """

    name: str
    status: str
    dataset: str
    extractor: str
    attack: str
    recommender: str
    setting: tuple[str, ...] = ()
    clean: bool = False
    metrics: Mapping[str, float] = field(default_factory=dict)
    origin: str | None = None
    target: str | None = None
    error: str | None = None
    run_id: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the trial finished (only finished trials give values)."""
        return self.status == "FINISHED"

    @property
    def block(self) -> tuple[str, ...]:
        """Everything but its attack: the key it shares with its clean twin."""
        return (self.dataset, *self.setting, self.recommender, self.extractor)

    def value(self, metric: str) -> float | None:
        """Its value of ``metric``; ``None`` if it did not finish or did not log it (or logged NaN).

        ``gini_diversity_K`` falls back on ``1 - gini_K`` for runs logged before that metric existed.
        """
        if not self.finished:
            return None
        value = self.metrics.get(metric)
        if value is None and metric.startswith("gini_diversity_"):
            concentration = self.metrics.get("gini_" + metric[len("gini_diversity_") :])
            value = None if concentration is None else 1.0 - concentration
        return None if value is None or math.isnan(value) else float(value)


@dataclass
class VarSession:
    """A VAR grid session laid out on the report's dimensions, in the grid file's order.

    Attributes:
        name: The grid name.
        grid_run_id: The session's grid run.
        started: The session's start (``YYYY-MM-DD HH:MM``).
        description: The grid file's description.
        setting_axes: Grid axes that are none of dataset, extractor, attack, recommender.
        trials: Every grid point, in grid order.
        datasets, extractors, attacks, recommenders: The labels of each role, in order.
        settings: The label tuples of the other axes, in order.
        notes: Remarks on how the session was read (e.g. ordering fallbacks).
    """

    name: str
    grid_run_id: str
    started: str
    description: str
    setting_axes: list[str]
    trials: list[TrialRecord]
    datasets: list[str]
    extractors: list[str]
    attacks: list[str]
    recommenders: list[str]
    settings: list[tuple[str, ...]]
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_key: dict[tuple[Any, ...], TrialRecord] = {
            (t.dataset, t.setting, t.recommender, t.attack, t.extractor): t for t in self.trials
        }
        self._clean: dict[tuple[str, ...], TrialRecord] = {}
        for t in self.trials:
            if t.clean:
                self._clean.setdefault(t.block, t)

    @property
    def clean_attacks(self) -> list[str]:
        """Attack labels of the clean (``attack: none``) trials."""
        return [a for a in self.attacks if any(t.clean and t.attack == a for t in self.trials)]

    @property
    def finished(self) -> list[TrialRecord]:
        """The trials that finished."""
        return [t for t in self.trials if t.finished]

    def find(
        self, dataset: str, setting: tuple[str, ...], recommender: str, attack: str, extractor: str
    ) -> TrialRecord | None:
        """The trial at this grid point, if the grid has one."""
        return self._by_key.get((dataset, setting, recommender, attack, extractor))

    def twin(self, trial: TrialRecord) -> TrialRecord | None:
        """The clean trial that differs from ``trial`` only by its attack (``None`` for a clean one)."""
        return None if trial.clean else self._clean.get(trial.block)

    def delta(self, trial: TrialRecord, metric: str) -> float | None:
        """``trial``'s ``metric`` minus its clean twin's, when both finished and logged it."""
        twin = self.twin(trial)
        if twin is None:
            return None
        mine, base = trial.value(metric), twin.value(metric)
        return None if mine is None or base is None else mine - base

    def has(self, dataset: str, setting: tuple[str, ...], **fixed: str) -> bool:
        """Whether any trial of the grid lies in this dataset and setting with the given role labels."""
        return any(
            t.dataset == dataset and t.setting == setting and all(getattr(t, k) == v for k, v in fixed.items())
            for t in self.trials
        )

    def categories(self) -> dict[str, list[tuple[str, str]]]:
        """Per dataset, the distinct (origin, target) pairs its finished trials logged."""
        out: dict[str, list[tuple[str, str]]] = {d: [] for d in self.datasets}
        for t in self.finished:
            if t.origin is not None and t.target is not None and (t.origin, t.target) not in out[t.dataset]:
                out[t.dataset].append((t.origin, t.target))
        return out


def collect_var_session(session: GridSession) -> VarSession:
    """Place every grid point of ``session`` on the report's dimensions.

    The rebuilt grid gives the trial order and each trial's axis labels; without it
    (a grid file that no longer validates) the trial runs' ``axis.*`` and component
    tags do, in the order the runs were created (the driver creates them in grid order).

    Raises:
        RaygridError: No trial of the session finished.
    """
    notes: list[str] = []
    points: list[tuple[str, dict[str, str], dict[str, str], bool]] = []  # name, axis labels, components, clean
    if session.grid is not None:
        axes = list(session.grid.settings.grid)
        for trial in session.grid.trials:
            components = {role: trial.component(section) for role, section in ROLE_SECTIONS.items()}
            clean = trial.config.attack.name == "none"  # type: ignore[attr-defined]
            points.append((trial.name, dict(trial.labels), components, clean))
    else:
        notes.append("The stored grid file no longer validates: trials are ordered by their MLflow runs' tags.")
        runs = sorted(session.runs.items(), key=lambda item: item[1].info.start_time or 0)
        axes = []
        for _, run in runs:
            axes += [
                k[len("axis.") :] for k in run.data.tags if k.startswith("axis.") and k[len("axis.") :] not in axes
            ]
        for key, run in runs:
            tags = run.data.tags
            labels = {a: tags.get(f"axis.{a}", "") for a in axes}
            components = {role: tags.get(role, "?") for role in ROLE_SECTIONS}
            points.append((key, labels, components, tags.get("attack") == "none"))

    roles: dict[str, list[str]] = {role: [] for role in ROLE_SECTIONS}
    setting_axes: list[str] = []
    for axis in axes:
        role = _ROLE_OF_HEAD.get(axis.split(".")[0])
        (roles[role] if role else setting_axes).append(axis)

    trials = []
    for name, labels, components, clean in points:
        placed = {
            role: "/".join(labels.get(a, "") for a in roles[role]) if roles[role] else components[role]
            for role in ROLE_SECTIONS
        }
        run = session.runs.get(name)
        tags = run.data.tags if run is not None else {}
        status = run.info.status if run is not None else "MISSING"
        trials.append(
            TrialRecord(
                name=name,
                status=status,
                setting=tuple(labels.get(a, "") for a in setting_axes),
                clean=clean,
                metrics=dict(run.data.metrics) if run is not None else {},
                origin=tags.get("raygrid.origin") or tags.get("origin"),
                target=tags.get("raygrid.target") or tags.get("target"),
                error=tags.get("raygrid.error")
                or (None if status == "FINISHED" else "no MLflow run" if run is None else None),
                run_id=run.info.run_id if run is not None else None,
                **placed,
            )
        )
    session.require_finished(sum(t.finished for t in trials), len(trials))
    return VarSession(
        name=session.name,
        grid_run_id=session.grid_run_id,
        started=session.started,
        description=str(session.document.get("description", "")),
        setting_axes=setting_axes,
        trials=trials,
        datasets=first_seen(t.dataset for t in trials),
        extractors=first_seen(t.extractor for t in trials),
        attacks=first_seen(t.attack for t in trials),
        recommenders=first_seen(t.recommender for t in trials),
        settings=first_seen(t.setting for t in trials),
        notes=notes,
    )


# --------------------------------------------------------------------------- the tables


def table3(s: VarSession) -> ReportTable:
    """SR and FL per dataset (and setting) x attack (rows) and extractor (column groups); clean trials left out."""
    columns = [Column(m, label, extractor, fmt) for extractor in s.extractors for m, label, fmt in TABLE3_METRICS]
    table = ReportTable(
        "table3",
        "Table 3: attack success rate (SR) and feature loss (FL) per attack and image feature extractor",
        ["dataset", *s.setting_axes, "attack"],
        columns,
        notes=[
            (
                "SR: share of the attacked items whose stored adversarial image the extractor classifies as the target. "
                "FL: mean squared error between clean and attacked features of the attacked items."
            ),
            "Both come from the attack stage, which does not depend on the recommender.",
        ],
    )
    disagreements = []
    for dataset in s.datasets:
        for setting in s.settings:
            for attack in s.attacks:
                if attack in s.clean_attacks or not s.has(dataset, setting, attack=attack):
                    continue
                cells = []
                for extractor in s.extractors:
                    trials = [
                        t
                        for t in s.trials
                        if (t.dataset, t.setting, t.attack, t.extractor) == (dataset, setting, attack, extractor)
                    ]
                    for metric, label, _ in TABLE3_METRICS:
                        values = [v for v in (t.value(metric) for t in trials) if v is not None]
                        if values and max(values) - min(values) > 1e-6 * max(1.0, max(abs(v) for v in values)):
                            where = ", ".join(x for x in (dataset, *setting, attack, extractor) if x)
                            disagreements.append(f"{label} of {where}: {min(values):.6g} to {max(values):.6g}")
                        cells.append(Cell(sum(values) / len(values) if values else None))
                table.rows.append(Row((dataset, *setting, attack), tuple(cells)))
    if disagreements:
        table.notes.append(
            "The recommenders' trials disagree (mean shown), which the shared attack stage should rule out: "
            + "; ".join(disagreements)
            + "."
        )
    else:
        table.notes.append("The trials of every recommender agree on each value.")
    if not s.clean_attacks:
        table.notes.append("The grid has no clean (attack: none) trial.")
    return table


def table4(s: VarSession) -> tuple[ReportTable, ReportTable]:
    """CHR@K and nCDCG@K per dataset x recommender x attack and extractor, with the paired t-test p-values."""
    metrics = _present(s, TABLE4_METRICS)
    index = ["dataset", *s.setting_axes, "recommender", "attack"]
    columns = [Column(m, label, extractor, fmt) for extractor in s.extractors for m, label, fmt in metrics]
    keys = [
        (dataset, setting, recommender, attack)
        for dataset in s.datasets
        for setting in s.settings
        for recommender in s.recommenders
        for attack in s.attacks
        if s.has(dataset, setting, recommender=recommender, attack=attack)
    ]
    values = ReportTable(
        "table4",
        "Table 4: category hit ratio (CHR@K) and normalised category DCG (nCDCG@K) of the origin category",
        index,
        columns,
        notes=[
            "Bold (CSV: * suffix): the highest value of its dataset x recommender block, per column.",
            (
                f"{DAGGER}: paired t-test over users against the clean twin (same extractor and recommender, "
                f"attack: none) gives p < {ALPHA:g}; the p-values are in table4_pvalues."
            ),
            (
                "CHR@K: share of the top-K that belongs to the origin category (the paper's definition, not the "
                "authors' code's count)."
            ),
        ],
    )
    pvalues = ReportTable(
        "table4_pvalues",
        "Table 4 p-values: paired t-test of each attacked trial against its clean twin",
        index,
        [Column(f"ttest_p_{c.key}", c.label, c.group, "p") for c in columns],
        notes=[
            (
                "Two-sided paired t-test over the users' per-user values; '-': not tested (a trial or its twin "
                "did not finish)."
            )
        ],
    )
    for dataset, setting, recommender, attack in keys:
        cells, tests = [], []
        for extractor in s.extractors:
            trial = s.find(dataset, setting, recommender, attack, extractor)
            for metric, _, _ in metrics:
                p = _p_value(s, trial, metric)
                cells.append(Cell(trial.value(metric) if trial else None, p_value=p))
                tests.append(Cell(p))
        values.rows.append(Row((dataset, *setting, recommender, attack), tuple(cells)))
        if attack not in s.clean_attacks:
            pvalues.rows.append(Row((dataset, *setting, recommender, attack), tuple(tests)))
    _mark_block_maxima(values, levels=len(index) - 1)
    values.notes += _missing_metric_notes(s, TABLE4_METRICS)
    return values, pvalues


def table5(s: VarSession) -> ReportTable:
    """Recall, nDCG, EFD, Gini and item coverage at 20 per dataset x extractor x recommender x attack."""
    metrics = _present(s, TABLE5_METRICS)
    index = ["dataset", *s.setting_axes, "extractor", "recommender", "attack"]
    table = ReportTable(
        "table5",
        "Table 5: overall recommendation performance on the top-20 lists",
        index,
        [Column(m, label, "", fmt) for m, label, fmt in metrics],
        notes=[
            (
                "Gini@20: 1 - G as in the paper (Elliot's convention): higher = recommendations spread more evenly "
                "over the catalogue. iCov@20: number of distinct items in at least one top-20 list."
            ),
            (
                "Bold (CSV: * suffix): the highest value of its dataset x extractor x recommender block, per column "
                f"(every column is higher-is-better). {DAGGER}: paired t-test against the clean twin, p < {ALPHA:g} "
                "(per-user metrics only)."
            ),
        ],
    )
    for dataset in s.datasets:
        for setting in s.settings:
            for extractor in s.extractors:
                for recommender in s.recommenders:
                    for attack in s.attacks:
                        trial = s.find(dataset, setting, recommender, attack, extractor)
                        if trial is None:
                            continue
                        cells = tuple(Cell(trial.value(m), p_value=_p_value(s, trial, m)) for m, _, _ in metrics)
                        table.rows.append(Row((dataset, *setting, extractor, recommender, attack), cells))
    _mark_block_maxima(table, levels=len(index) - 1)
    table.notes += _missing_metric_notes(s, TABLE5_METRICS)
    return table


@dataclass(frozen=True)
class Correlation:
    """Spearman rank correlations over a set of attacked trials.

    Attributes:
        scope: Which trials (``all``, ``dataset: X``, ``recommender: Y``).
        n: Number of attacked trials with a finished clean twin.
        fl_rho, fl_p: Spearman rho (and p-value) of FL with ΔCHR@20.
        sr_rho, sr_p: The same for SR.
    """

    scope: str
    n: int
    fl_rho: float
    fl_p: float
    sr_rho: float
    sr_p: float


def effect_points(s: VarSession) -> list[tuple[TrialRecord, float, float | None, float | None]]:
    """Every attacked trial with a finished clean twin: ``(trial, ΔCHR@20, FL, SR)``."""
    out = []
    for trial in s.trials:
        delta = s.delta(trial, EFFECT_METRIC)
        if delta is not None:
            out.append((trial, delta, trial.value("feature_loss"), trial.value("success_rate")))
    return out


def correlations(s: VarSession) -> list[Correlation]:
    """Spearman correlations of FL and SR with ΔCHR@20: over all attacked trials, per dataset, per recommender."""
    points = effect_points(s)
    scopes: list[tuple[str, list[Any]]] = [("all", points)]
    if len(s.datasets) > 1 or len(s.settings) > 1:
        for dataset in s.datasets:
            for setting in s.settings:
                label = ", ".join((dataset, *setting))
                scopes.append(
                    (f"dataset: {label}", [p for p in points if (p[0].dataset, p[0].setting) == (dataset, setting)])
                )
    if len(s.recommenders) > 1:
        scopes += [(f"recommender: {r}", [p for p in points if p[0].recommender == r]) for r in s.recommenders]
    out = []
    for scope, chosen in scopes:
        fl = [(p[2], p[1]) for p in chosen if p[2] is not None]
        sr = [(p[3], p[1]) for p in chosen if p[3] is not None]
        out.append(Correlation(scope, len(chosen), *spearman(fl), *spearman(sr)))
    return out


def spearman(pairs: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Spearman rho and its two-sided p-value; NaN for fewer than 3 pairs or a constant side."""
    from scipy import stats

    if len(pairs) < 3:
        return math.nan, math.nan
    x, y = zip(*pairs)
    if len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)


def correlation_table(rows: Sequence[Correlation]) -> ReportTable:
    """The correlations as a report table."""
    columns = [
        Column("n", "attacked trials", "", ".0f"),
        Column("spearman_fl", "ρ(FL, ΔCHR@20)", "", ".3f"),
        Column("spearman_fl_p", "p", "", "p"),
        Column("spearman_sr", "ρ(SR, ΔCHR@20)", "", ".3f"),
        Column("spearman_sr_p", "p", "", "p"),
    ]
    table = ReportTable(
        "correlations",
        "Spearman rank correlation of feature loss (FL) and success rate (SR) with the change of CHR@20",
        ["scope"],
        columns,
        notes=[
            (
                "ΔCHR@20: an attacked trial's CHR@20 minus that of its clean twin (same dataset, extractor and "
                "recommender, attack: none). '-': fewer than 3 trials, or one side constant."
            )
        ],
    )
    for c in rows:
        table.rows.append(Row((c.scope,), tuple(Cell(v) for v in (c.n, c.fl_rho, c.fl_p, c.sr_rho, c.sr_p))))
    return table


#: Significance level of the correlation findings.
ALPHA = 0.05


def finding(c: Correlation) -> str:
    """One sentence comparing the two correlations of ``c`` (the paper: FL, not SR, tracks the ranking change).

    A correlation counts only when its p-value is below :data:`ALPHA`; when both
    do, the larger ``|rho|`` wins. The paper's finding is a *positive* FL
    correlation (the further the features move, the more the origin category is
    recommended); a significant negative one is said to be the opposite.
    """
    if math.isnan(c.fl_rho) and math.isnan(c.sr_rho):
        return f"Spearman correlations over {c.n} attacked trials ({c.scope}) cannot be computed (fewer than 3, or constant)."
    text = (
        f"Over {c.n} attacked trials ({c.scope}), Spearman ρ(FL, ΔCHR@20) = {format_value(c.fl_rho, '.3f')} "
        f"(p = {format_value(c.fl_p, 'p')}) and ρ(SR, ΔCHR@20) = {format_value(c.sr_rho, '.3f')} "
        f"(p = {format_value(c.sr_p, 'p')})"
    )
    fl = abs(c.fl_rho) if c.fl_p < ALPHA else float("nan")  # NaN p-values compare False: not significant
    sr = abs(c.sr_rho) if c.sr_p < ALPHA else float("nan")
    if math.isnan(fl) and math.isnan(sr):
        return text + f": neither correlates significantly (p < {ALPHA})."
    if math.isnan(sr) or (not math.isnan(fl) and fl > sr):
        if c.fl_rho < 0:
            return text + (
                ": feature loss tracks the ranking change more closely than success rate, but with the opposite "
                "sign to the paper: the further the features move, the less the origin category is recommended."
            )
        return text + ": feature loss tracks the ranking change more closely than success rate, as in the paper."
    if math.isnan(fl) or sr > fl:
        return text + ": here success rate tracks the ranking change more closely than feature loss, unlike the paper."
    return text + ": both track the ranking change equally."


# --------------------------------------------------------------------------- writing


class VarReporter:
    """The VAR study's :class:`~raygrid.reports.report.StudyReporter`."""

    def collect(self, session: GridSession) -> VarSession:
        """See :func:`collect_var_session`."""
        return collect_var_session(session)

    def counts(self, collected: VarSession) -> tuple[int, int]:
        """``(grid points, finished trials)``."""
        return len(collected.trials), len(collected.finished)

    def write(self, collected: VarSession, folder: Path, context: Mapping[str, str]) -> ReportContent:
        """Write tables (md, csv, tex), trials.csv, plots and README.md into ``folder``."""
        return write_var_report(collected, folder, context)


def write_var_report(s: VarSession, folder: Path, context: Mapping[str, str] | None = None) -> ReportContent:
    """Write the VAR report of ``s`` into ``folder`` (which must exist); see the module docstring."""
    context = context or {}
    t3 = table3(s)
    t4, t4p = table4(s)
    t5 = table5(s)
    corr = correlation_table(correlations(s))
    tables = {t.key: t for t in (t3, t4, t4p, t5, corr)}
    files = ["README.md"]
    for key in TABLE_KEYS:
        table = tables[key]
        (folder / f"{key}.md").write_text(to_markdown(table))
        (folder / f"{key}.csv").write_text(to_csv(table))
        (folder / f"{key}.tex").write_text(to_latex(table, label=f"tab:var-{key}"))
        files += [f"{key}.md", f"{key}.csv", f"{key}.tex"]
    (folder / "trials.csv").write_text(trials_csv(s))
    from raygrid.reports import var_plots

    var_plots.plot_chr_by_attack(s, folder / PLOT_BARS)
    var_plots.plot_effect(s, folder / PLOT_SCATTER)
    files += ["trials.csv", PLOT_BARS, PLOT_SCATTER]

    rows = correlations(s)
    overall = rows[0]
    # The finding over all attacked trials, then per dataset or recommender where one correlation is significant.
    headlines = [finding(overall)] + [
        finding(c) for c in rows[1:] if c.fl_p < ALPHA or c.sr_p < ALPHA
    ]
    unfinished = [t for t in s.trials if not t.finished]
    if unfinished:
        headlines.append(
            f"{len(unfinished)} of {len(s.trials)} trials did not finish (shown as '-'): "
            + ", ".join(f"{t.name} ({t.status.lower()})" for t in unfinished)
        )
    (folder / "README.md").write_text(readme(s, tables, overall, context))
    metrics = {
        "trials_total": float(len(s.trials)),
        "trials_finished": float(len(s.finished)),
        "effect_points": float(overall.n),
        "spearman_fl_delta_chr_20": overall.fl_rho,
        "spearman_fl_delta_chr_20_p": overall.fl_p,
        "spearman_sr_delta_chr_20": overall.sr_rho,
        "spearman_sr_delta_chr_20_p": overall.sr_p,
    }
    terminal = [
        t3,
        t4.select(lambda c: c.key.endswith("_20"), title="Table 4 (K = 20; K = 50 in table4.md)"),
        corr,
    ]
    return ReportContent(files=files, tables=terminal, headlines=headlines, metrics=metrics)


def trials_csv(s: VarSession) -> str:
    """Every grid point as one CSV row: placement, status, categories, metrics (full precision), ΔCHR@20, p-values."""
    metric_names = [m for m, _, _ in (*TABLE3_METRICS, *TABLE4_METRICS, *TABLE5_METRICS)]
    tested = [
        f"{test}_{m}"
        for m in metric_names
        for test in ("ttest_p", "wilcoxon_p")
        if any(f"{test}_{m}" in t.metrics for t in s.trials)
    ]
    header = [
        "trial",
        "status",
        "dataset",
        *s.setting_axes,
        "recommender",
        "attack",
        "extractor",
        "clean",
        "origin",
        "target",
        *metric_names,
        f"delta_{EFFECT_METRIC}_vs_clean",
        *tested,
        "run_id",
        "error",
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for t in s.trials:
        values = [t.value(m) for m in metric_names] + [s.delta(t, EFFECT_METRIC)]
        values += [t.metrics.get(name) if t.finished else None for name in tested]
        writer.writerow(
            [
                t.name,
                t.status,
                t.dataset,
                *t.setting,
                t.recommender,
                t.attack,
                t.extractor,
                int(t.clean),
                t.origin or "",
                t.target or "",
                *("" if v is None else repr(float(v)) for v in values),
                t.run_id or "",
                t.error or "",
            ]
        )
    return buffer.getvalue()


def readme(s: VarSession, tables: Mapping[str, ReportTable], overall: Correlation, context: Mapping[str, str]) -> str:
    """The report's README.md: session, categories, the tables, the plots, the correlations and the conventions."""
    finished = len(s.finished)
    lines = [f"# VAR report: grid `{s.name}`", ""]
    if s.description:
        lines += [s.description, ""]
    lines += [
        f"- Grid session (MLflow grid run): `{s.grid_run_id}`, started {s.started}",
        (
            f"- Tracking store: `{context.get('tracking_uri', '?')}`; this report's MLflow run: "
            f"`{context.get('report_run_id', '?')}` (tag `raygrid.kind=report`)"
        ),
        (
            f"- Trials: {finished} of {len(s.trials)} finished; extractors: {', '.join(s.extractors)}; "
            f"attacks: {', '.join(s.attacks)}; recommenders: {', '.join(s.recommenders)}"
        ),
        f"- Written {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        "## Attacked categories",
        "",
    ]
    for dataset, pairs in s.categories().items():
        shown = "; ".join(f"{o} → {t}" for o, t in pairs) or "not logged"
        lines.append(f"- {dataset}: {shown} (origin → target){_selection_text(s, dataset)}")
    unfinished = [t for t in s.trials if not t.finished]
    if unfinished:
        lines += ["", "## Trials that did not finish", "", "Their cells show '-'.", ""]
        lines += [f"- `{t.name}`: {t.status.lower()}" + (f": {t.error}" if t.error else "") for t in unfinished]
    for note in s.notes:
        lines += ["", f"> {note}"]
    lines += ["", "## Feature loss, not success rate, moves the ranking?", ""]
    lines += [f"- {finding(c)}" for c in correlations(s)] + [""]
    lines += [to_markdown(tables["correlations"]), "", f"![FL and SR against ΔCHR@20]({PLOT_SCATTER})", ""]
    lines += [
        (
            "Left: feature loss, right: success rate, of every attacked trial against its change of CHR@20 over the "
            "clean twin; colour = extractor, marker = attack."
        ),
        "",
        "## Table 3: attack success and feature loss",
        "",
        to_markdown(tables["table3"]),
        _files_line("table3"),
        "",
        "## Table 4: the origin category in the top-K",
        "",
        to_markdown(tables["table4"]),
        _files_line("table4") + f"; p-values: {_files_line('table4_pvalues', bare=True)}",
        "",
        f"![CHR@20 by attack]({PLOT_BARS})",
        "",
        "CHR@20 of the origin category by attack: one bar per extractor, one panel per dataset and recommender.",
        "",
        "## Table 5: overall recommendation performance (top-20)",
        "",
        to_markdown(tables["table5"]),
        _files_line("table5"),
        "",
        "## Conventions",
        "",
        (
            "- Rows and columns follow the order of the grid file's axis values; '-' = the trial did not finish or "
            "did not log the metric."
        ),
        (
            "- SR: share of attacked items (those the trial's extractor classifies as the origin) whose stored 8-bit "
            "adversarial image it classifies as the target. FL: mean squared error between the attacked items' clean "
            "and attacked features."
        ),
        "- CHR@K, nCDCG@K: the paper's definitions (CHR = share of the top-K in the origin category).",
        (
            "- Gini@20 = 1 - G (Elliot's, and so the paper's, convention; higher = more even); iCov@20 = number of "
            "distinct recommended items."
        ),
        (
            f"- Bold = highest value of its block (Table 4: dataset x recommender; Table 5: dataset x extractor x "
            f"recommender), per column; in CSV a `*` suffix. {DAGGER} = two-sided paired t-test over users against "
            f"the clean twin with p < {ALPHA:g}."
        ),
        "- `trials.csv`: every grid point with its metrics at full precision, ΔCHR@20 and the paired tests' p-values.",
        "- LaTeX tables need `\\usepackage{booktabs}`.",
        "",
    ]
    return "\n".join(lines)


def _selection_text(s: VarSession, dataset: str) -> str:
    """How the categories of ``dataset`` were chosen, when the trials logged an automatic selection."""
    for t in s.finished:
        if t.dataset != dataset:
            continue
        origin = next((k for k in t.metrics if k.startswith("selection_origin_chr_")), None)
        if origin is None:
            continue
        k = origin[len("selection_origin_chr_") :]
        target = t.metrics.get(f"selection_target_chr_{k}")
        return (
            f"; chosen from the clean runs: CHR@{k} of the origin {format_value(t.metrics[origin], '.4f')}, "
            f"of the target {format_value(target, '.4f')} (ratio {format_value(t.metrics.get('selection_ratio'), '.2f')})"
        )
    return ""


def _files_line(key: str, bare: bool = False) -> str:
    files = f"[{key}.csv]({key}.csv), [{key}.tex]({key}.tex), [{key}.md]({key}.md)"
    return files if bare else f"Files: {files}"


def _present(s: VarSession, metrics: Iterable[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """The metrics some finished trial logged (a grid without cutoff 50 has no @50 columns)."""
    return [m for m in metrics if any(t.value(m[0]) is not None for t in s.finished)]


def _missing_metric_notes(s: VarSession, metrics: Iterable[tuple[str, str, str]]) -> list[str]:
    absent = [label for m, label, _ in metrics if not any(t.value(m) is not None for t in s.finished)]
    return [f"Not logged by any trial, so left out: {', '.join(absent)} (check metrics.cutoffs)."] if absent else []


def _p_value(s: VarSession, trial: TrialRecord | None, metric: str) -> float | None:
    """The paired t-test p-value of an attacked, finished trial's ``metric`` against its twin, if logged."""
    if trial is None or trial.clean or not trial.finished:
        return None
    value = trial.metrics.get(f"ttest_p_{metric}")
    return None if value is None or math.isnan(value) else float(value)


def _mark_block_maxima(table: ReportTable, levels: int) -> None:
    """Mark, per column, the highest value among rows sharing their first ``levels`` index values.

    Blocks with fewer than two values, or all equal, are left unmarked (nothing stands out);
    ties for the maximum are all marked.
    """
    blocks: dict[tuple[str, ...], list[int]] = {}
    for n, row in enumerate(table.rows):
        blocks.setdefault(row.index[:levels], []).append(n)
    cells = [list(row.cells) for row in table.rows]
    for members in blocks.values():
        for c in range(len(table.columns)):
            present = [(n, cells[n][c].value) for n in members if not cells[n][c].missing]
            if len(present) < 2:
                continue
            best = max(v for _, v in present)  # type: ignore[type-var]
            if best == min(v for _, v in present):  # type: ignore[type-var]
                continue
            for n, v in present:
                if v == best:
                    old = cells[n][c]
                    cells[n][c] = Cell(old.value, True, old.p_value)
    table.rows = [Row(row.index, tuple(cells[n])) for n, row in enumerate(table.rows)]

