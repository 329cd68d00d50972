"""The AIP study's report: the paper's Tables 3 to 6 and 8, and example adversarial images per attack.

From a finished (or partly finished) AIP grid session in MLflow (Liu & Larson,
"Adversarial Item Promotion", section 6):

* **Table 3**: mean prediction shift of the cold items (adversarial minus
  cooperative score, averaged over users, then items) per attack (rows) and
  ranker (columns), undefended trials, each attack at its largest eps.
* **Table 4**: HR@5 of the cold items, cooperative and adversarial, and the
  availability HR@5 of the ordinary test items with the adversarial cold item
  present, per attack and ranker (undefended, largest eps).
* **Table 5**: the change of HR@5 (adversarial minus cooperative cold items; and
  of availability), with the ratio adversarial / cooperative.
* **Table 6**: adversarial HR@5 by eps per ranker and eps-attack (INSA, EXPA,
  TAaMR), the cooperative HR@5 as eps 0; skipped (one line in the README) when no
  attack has two eps values on the grid.
* **Table 8**: per ranker and attack, the weakest JPEG quality and the weakest bit
  depth at which the adversarial cold items' HR@5 falls back to (at most) the
  cooperative items' HR@5 under the same defense, with the adversarial HR@5 at
  every defense level in ``table8_levels``; skipped when the grid has no JPEG or
  bit-depth defense.
* **Examples**: each attack's ``attack/preview.png`` (cooperative, adversarial,
  amplified difference, logged by every attacked trial) copied from one trial.

A trial is placed by its config (the stored grid file rebuilt, else the trial
run's logged parameters): dataset label, ranker (``recommender`` label), attack
kind (``insa``, ``expa``, ``csema``, ``taamr_fgsm``, ``taamr_pgd``; eps apart),
eps, defense kind and level. Rows and columns follow the grid file's order.
Daggers mark a paired t-test over the cold items (adversarial against
cooperative) with p < 0.05, as logged by the trials (``ttest_p_*``).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raygrid.reports.report import GridSession, ReportContent, first_seen
from raygrid.reports.tables import DAGGER, Cell, Column, ReportTable, Row, to_csv, to_latex, to_markdown

log = logging.getLogger(__name__)

#: Significance level of the dagger mark.
ALPHA = 0.05
#: Attack kinds whose strength is an eps (Table 6).
EPS_KINDS = ("insa", "expa", "taamr_fgsm", "taamr_pgd")
#: Defense kinds of Table 8, their README name and the order of their levels (weakest first).
DEFENSE_KINDS = {"jpeg": ("JPEG quality", "quality", True), "bit_depth": ("bit depth", "bits", True)}
#: Files of the report, in the order the README lists them.
TABLE_KEYS = ("table3", "table4", "table5", "table6", "table8", "table8_levels")
EXAMPLES = "examples"
#: Trials asked for an attack's preview image before giving up on its example.
EXAMPLE_TRIES = 3


# --------------------------------------------------------------------------- the collected session


@dataclass(frozen=True)
class AipTrial:
    """One grid point of an AIP session, placed on the report's dimensions.

    Attributes:
        name: The trial (grid key).
        status: MLflow status, or ``MISSING`` when it has no run.
        dataset: The dataset's label.
        ranker: The recommender's label.
        attack: The attack kind (``insa``, ``taamr_pgd``...; ``none`` for no attack).
        eps: Its Linf budget in 0-255 units (``None`` for c-SEMA and no attack).
        defense: The defense kind (``none``, ``jpeg``, ``bit_depth``).
        level: The defense's level (JPEG quality, bits), ``None`` for none.
        defense_label: The defense's axis label (or kind and level).
        metrics: Its logged metrics (empty unless it finished).
        run_id: Its MLflow run.
    """

    name: str
    status: str
    dataset: str
    ranker: str
    attack: str
    eps: float | None
    defense: str
    level: float | None
    defense_label: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    run_id: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the trial finished."""
        return self.status == "FINISHED"

    def value(self, metric: str) -> float | None:
        """Its value of ``metric``; ``None`` when unfinished, not logged or NaN."""
        if not self.finished:
            return None
        value = self.metrics.get(metric)
        return None if value is None or math.isnan(value) else float(value)


@dataclass
class AipSession:
    """An AIP grid session on the report's dimensions, in grid order.

    Attributes:
        name, grid_run_id, started, description: The session.
        trials: Every grid point, in grid order.
        datasets, rankers, attacks: Labels in order (attacks without ``none``).
        notes: Remarks on how the session was read.
    """

    name: str
    grid_run_id: str
    started: str
    description: str
    trials: list[AipTrial]
    datasets: list[str]
    rankers: list[str]
    attacks: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def finished(self) -> list[AipTrial]:
        """The finished trials."""
        return [t for t in self.trials if t.finished]

    def select(self, **fixed: Any) -> list[AipTrial]:
        """The trials whose attributes equal ``fixed``."""
        return [t for t in self.trials if all(getattr(t, k) == v for k, v in fixed.items())]

    def main_eps(self, dataset: str, attack: str) -> float | None:
        """The eps an attack's main tables use: its largest on the grid (the paper's tables use eps 32)."""
        values = [t.eps for t in self.select(dataset=dataset, attack=attack) if t.eps is not None]
        return max(values) if values else None

    def main(self, dataset: str, ranker: str, attack: str, defense: str = "none") -> AipTrial | None:
        """The undefended (or ``defense``-kind) trial of a ranker and attack at the attack's main eps."""
        eps = self.main_eps(dataset, attack)
        found = self.select(dataset=dataset, ranker=ranker, attack=attack, eps=eps, defense=defense)
        return found[0] if found else None


def _attack_kind(attack: Mapping[str, Any]) -> str:
    name = str(attack.get("name", "none"))
    return f"taamr_{attack.get('method', 'pgd')}" if name == "taamr" else name


def _level(defense: Mapping[str, Any]) -> float | None:
    kind = defense.get("name", "none")
    if kind in DEFENSE_KINDS:
        value = defense.get(DEFENSE_KINDS[kind][1])
        return None if value is None else float(value)
    return None


def _from_params(params: Mapping[str, str], section: str) -> dict[str, Any]:
    """A config section rebuilt from a run's flattened parameters (``attack.eps`` -> ``{"eps": "32.0"}``)."""
    prefix = section + "."
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key.startswith(prefix) and "." not in key[len(prefix) :]:
            out[key[len(prefix) :]] = value
    return out


def _float(value: Any) -> float | None:
    try:
        return None if value in (None, "None", "") else float(value)
    except (TypeError, ValueError):
        return None


def collect_aip_session(session: GridSession) -> AipSession:
    """Place every grid point of ``session`` on the report's dimensions.

    Raises:
        RaygridError: No trial of the session finished.
    """
    notes: list[str] = []
    points: list[tuple[str, dict[str, Any], dict[str, str]]] = []  # name, config sections, labels
    if session.grid is not None:
        for trial in session.grid.trials:
            sections = {s: getattr(trial.config, s).model_dump(mode="json") for s in ("attack", "defense")}
            labels = {"dataset": trial.component("data"), "ranker": trial.component("recommender"), **trial.labels}
            points.append((trial.name, sections, labels))
    else:
        notes.append("The stored grid file no longer validates: trials are placed by their MLflow runs' parameters.")
        for key, run in sorted(session.runs.items(), key=lambda item: item[1].info.start_time or 0):
            params, tags = run.data.params, run.data.tags
            sections = {s: _from_params(params, s) for s in ("attack", "defense")}
            labels = {"dataset": tags.get("dataset", "?"), "ranker": tags.get("recommender", "?")}
            labels.update({k[len("axis.") :]: v for k, v in tags.items() if k.startswith("axis.")})
            points.append((key, sections, labels))

    trials = []
    for name, sections, labels in points:
        run = session.runs.get(name)
        attack, defense = sections["attack"], sections["defense"]
        kind = _attack_kind(attack)
        defense_kind = str(defense.get("name", "none"))
        level = _level(defense)
        trials.append(
            AipTrial(
                name=name,
                status=run.info.status if run is not None else "MISSING",
                dataset=labels.get("data", labels["dataset"]),
                ranker=labels.get("recommender", labels["ranker"]),
                attack=kind,
                eps=_float(attack.get("eps")) if kind in EPS_KINDS else None,
                defense=defense_kind,
                level=level,
                defense_label=labels.get("defense", defense_kind if level is None else f"{defense_kind}{level:g}"),
                metrics=dict(run.data.metrics) if run is not None else {},
                run_id=run.info.run_id if run is not None else None,
            )
        )
    session.require_finished(sum(t.finished for t in trials), len(trials))
    return AipSession(
        name=session.name,
        grid_run_id=session.grid_run_id,
        started=session.started,
        description=str(session.document.get("description", "")),
        trials=trials,
        datasets=first_seen(t.dataset for t in trials),
        rankers=first_seen(t.ranker for t in trials),
        attacks=first_seen(t.attack for t in trials if t.attack != "none"),
        notes=notes,
    )


# --------------------------------------------------------------------------- the tables


def _attack_row(s: AipSession, dataset: str, attack: str) -> str:
    eps = s.main_eps(dataset, attack)
    return attack if eps is None else f"{attack} (ε {eps:g})"


def _value(trial: AipTrial | None, metric: str) -> float | None:
    return None if trial is None else trial.value(metric)


def _p(trial: AipTrial | None, metric: str) -> float | None:
    return None if trial is None else trial.value(f"ttest_p_{metric}")


def table3(s: AipSession) -> ReportTable:
    """Mean prediction shift per dataset x attack (rows) and ranker (columns), undefended."""
    table = ReportTable(
        "table3",
        "Table 3: mean prediction shift of the cold items (adversarial minus cooperative score)",
        ["dataset", "attack"],
        [Column("prediction_shift", "shift", ranker, ".4g") for ranker in s.rankers],
        notes=[
            (
                "Score of the adversarial cold item minus that of the cooperative one, averaged over users, then items; "
                "undefended trials, each attack at its largest eps on the grid."
            ),
            (
                f"{DAGGER}: paired t-test over the cold items of their mean adversarial against mean cooperative score, "
                f"p < {ALPHA:g}. Scores are on each ranker's own scale: compare within a column."
            ),
        ],
    )
    for dataset in s.datasets:
        for attack in s.attacks:
            cells = []
            for ranker in s.rankers:
                trial = s.main(dataset, ranker, attack)
                cells.append(
                    Cell(trial.value("prediction_shift") if trial else None, p_value=_p(trial, "prediction_shift"))
                )
            table.rows.append(Row((dataset, _attack_row(s, dataset, attack)), tuple(cells)))
    return table


def table4(s: AipSession) -> ReportTable:
    """HR@5 of cooperative and adversarial cold items and availability HR@5 per attack and ranker."""
    columns = []
    for ranker in s.rankers:
        columns += [
            Column("cold_hr_5_cooperative", "coop HR@5", ranker, ".4f"),
            Column("cold_hr_5_adversarial", "adv HR@5", ranker, ".4f"),
            Column("availability_hr_5_adversarial", "avail HR@5", ranker, ".4f"),
        ]
    table = ReportTable(
        "table4",
        "Table 4: HR@5 of cooperative and adversarial cold items, and availability of the test items",
        ["dataset", "attack"],
        columns,
        notes=[
            (
                "coop / adv HR@5: share of users whose top 5 of candidates + test item + the cold item holds the cold "
                "item, averaged over cold items (integrity). avail HR@5: HR@5 of the users' test items with the "
                "adversarial cold item present (availability). Undefended trials, each attack at its largest eps."
            ),
            f"{DAGGER}: paired t-test over the cold items, adversarial against cooperative, p < {ALPHA:g}.",
            *_hook_ceiling_notes(s),
        ],
    )
    for dataset in s.datasets:
        for attack in s.attacks:
            cells = []
            for ranker in s.rankers:
                trial = s.main(dataset, ranker, attack)
                cells += [
                    Cell(_value(trial, "cold_hr_5_cooperative")),
                    Cell(_value(trial, "cold_hr_5_adversarial"), p_value=_p(trial, "cold_hr_5")),
                    Cell(_value(trial, "availability_hr_5_adversarial"), p_value=_p(trial, "availability_hr_5")),
                ]
            table.rows.append(Row((dataset, _attack_row(s, dataset, attack)), tuple(cells)))
    return table


def _hook_ceiling_notes(s: AipSession) -> list[str]:
    """Per dataset, each ranker's HR@5 of a cold item given the hook item's exact content (EXPA's ceiling).

    The AIP paper explains EXPA's and c-SEMA's small lift on Tradesy by its hook's low
    HR@5 (section 6.1); this is that figure for the grid's hook, read from any
    undefended EXPA or c-SEMA trial (they log ``hook_hr_5``).
    """
    notes = []
    for dataset in s.datasets:
        parts = []
        for ranker in s.rankers:
            values = [t.value("hook_hr_5") for t in s.select(dataset=dataset, ranker=ranker, defense="none")]
            known = [v for v in values if v is not None]
            if known:
                parts.append(f"{ranker} {known[0]:.4f}")
        if parts:
            notes.append(
                f"Hook ceiling, {dataset}: HR@5 of a cold item given the hook item's exact content, the most EXPA "
                f"(which matches the hook's features) can reach: {', '.join(parts)}."
            )
    return notes


def table5(s: AipSession) -> ReportTable:
    """Change of HR@5 (adversarial minus cooperative), its ratio, and the change of availability."""
    columns = []
    for ranker in s.rankers:
        columns += [
            Column("delta_cold_hr_5", "ΔHR@5", ranker, "+.4f"),
            Column("ratio_cold_hr_5", "adv/coop", ranker, ".1f"),
            Column("delta_availability_hr_5", "Δavail", ranker, "+.4f"),
        ]
    table = ReportTable(
        "table5",
        "Table 5: change of HR@5, adversarial against cooperative cold items",
        ["dataset", "attack"],
        columns,
        notes=[
            (
                "ΔHR@5: adversarial minus cooperative cold-item HR@5; adv/coop: their ratio ('-' when the cooperative "
                "HR@5 is 0); Δavail: change of the test items' HR@5. Undefended trials, largest eps."
            ),
            f"{DAGGER}: paired t-test over the cold items, p < {ALPHA:g}.",
        ],
    )
    for dataset in s.datasets:
        for attack in s.attacks:
            cells = []
            for ranker in s.rankers:
                trial = s.main(dataset, ranker, attack)
                coop = trial.value("cold_hr_5_cooperative") if trial else None
                adv = trial.value("cold_hr_5_adversarial") if trial else None
                cells += [
                    Cell(trial.value("delta_cold_hr_5") if trial else None, p_value=_p(trial, "cold_hr_5")),
                    Cell(adv / coop if adv is not None and coop else None),
                    Cell(
                        trial.value("delta_availability_hr_5") if trial else None,
                        p_value=_p(trial, "availability_hr_5"),
                    ),
                ]
            table.rows.append(Row((dataset, _attack_row(s, dataset, attack)), tuple(cells)))
    return table


def table6(s: AipSession) -> ReportTable | None:
    """Adversarial HR@5 by eps per dataset x ranker x attack (eps 0 = cooperative); ``None`` without an eps axis."""
    eps_values = sorted({t.eps for t in s.trials if t.eps is not None and t.defense == "none"})
    varied = [a for a in s.attacks if a in EPS_KINDS and len({t.eps for t in s.select(attack=a, defense="none")}) > 1]
    if not varied:
        return None
    table = ReportTable(
        "table6",
        "Table 6: HR@5 of adversarial cold items by eps (0: cooperative)",
        ["dataset", "ranker", "attack"],
        [Column("cold_hr_5_cooperative", "ε 0", "", ".4f")]
        + [Column(f"cold_hr_5_eps{e:g}", f"ε {e:g}", "", ".4f") for e in eps_values],
        notes=[f"Undefended trials. {DAGGER}: paired t-test over the cold items against cooperative, p < {ALPHA:g}."],
    )
    for dataset in s.datasets:
        for ranker in s.rankers:
            for attack in varied:
                trials = s.select(dataset=dataset, ranker=ranker, attack=attack, defense="none")
                if not trials:
                    continue
                coop = next((t.value("cold_hr_5_cooperative") for t in trials if t.finished), None)
                cells = [Cell(coop)]
                for e in eps_values:
                    trial = next((t for t in trials if t.eps == e), None)
                    cells.append(
                        Cell(trial.value("cold_hr_5_adversarial") if trial else None, p_value=_p(trial, "cold_hr_5"))
                    )
                table.rows.append(Row((dataset, ranker, attack), tuple(cells)))
    return table


def fallback_level(trials: Iterable[AipTrial]) -> tuple[float | None, bool]:
    """The weakest defense level whose adversarial HR@5 is at most the cooperative one under the same defense.

    Args:
        trials: The trials of one ranker and attack under one defense kind.

    Returns:
        ``(level, tested)``: the level (``None`` when the attack keeps a lift at
        every tested level), and whether any level had a finished trial.
    """
    ordered = sorted((t for t in trials if t.finished and t.level is not None), key=_strength)
    for trial in ordered:
        adv, coop = trial.value("cold_hr_5_adversarial"), trial.value("cold_hr_5_cooperative")
        if adv is not None and coop is not None and adv <= coop:
            return trial.level, True
    return None, bool(ordered)


def _strength(trial: AipTrial) -> float:
    """Sort key: weakest defense first (JPEG: high quality first; bit depth: many bits first)."""
    return -(trial.level or 0.0)


def table8(s: AipSession) -> tuple[ReportTable, ReportTable] | None:
    """The defense level at which adversarial HR@5 falls back to cooperative, and HR@5 at every level.

    ``None`` when the grid has no JPEG or bit-depth defense.
    """
    kinds = [k for k in DEFENSE_KINDS if any(t.defense == k for t in s.trials)]
    if not kinds:
        return None
    table = ReportTable(
        "table8",
        "Table 8: weakest defense level at which the adversarial cold items' HR@5 falls back to the cooperative HR@5",
        ["dataset", "ranker", "attack"],
        [Column(f"fallback_{k}", DEFENSE_KINDS[k][0], "", ".0f") for k in kinds],
        notes=[
            (
                "Per defense, its levels from the weakest (JPEG quality 90, 7 bits) to the strongest: the first whose "
                "adversarial HR@5 is at most the cooperative HR@5 under the same defense (both images are defended "
                "before extraction). '-': no tested level undoes the attack (listed below), or nothing was tested."
            ),
        ],
    )
    defended = [t for t in s.trials if t.defense in kinds]
    labels = first_seen((t.defense, t.level, t.defense_label) for t in s.trials if t.defense in ("none", *kinds))
    labels.sort(key=lambda x: (x[0] != "none", kinds.index(x[0]) if x[0] in kinds else -1, -(x[1] or 0.0)))
    levels = ReportTable(
        "table8_levels",
        "Table 8 (detail): HR@5 of cooperative / adversarial cold items under each defense",
        ["dataset", "ranker", "attack"],
        [
            Column(f"{which}_{label}", f"{which} HR@5", label, ".4f")
            for _, _, label in labels
            for which in ("coop", "adv")
        ],
        notes=[
            (
                f"{DAGGER}: paired t-test over the cold items, adversarial against cooperative, p < {ALPHA:g}. "
                "Each attack at its largest eps."
            )
        ],
    )
    kept: list[str] = []
    no_lift: list[str] = []
    for dataset in s.datasets:
        for ranker in s.rankers:
            for attack in s.attacks:
                eps = s.main_eps(dataset, attack)
                mine = [t for t in s.select(dataset=dataset, ranker=ranker, attack=attack, eps=eps)]
                if not any(t in defended for t in mine):
                    continue
                cells = []
                undefended = next((t for t in mine if t.defense == "none"), None)
                lifted = _lifted(undefended)
                if lifted is False:
                    no_lift.append(f"{ranker} {attack}")
                for kind in kinds:
                    level, tested = fallback_level(t for t in mine if t.defense == kind)
                    cells.append(Cell(None if lifted is False else level))
                    if level is None and tested and lifted is not False:
                        kept.append(f"{ranker} {attack} under {DEFENSE_KINDS[kind][0]}")
                table.rows.append(Row((dataset, ranker, _attack_row(s, dataset, attack)), tuple(cells)))
                detail = []
                for kind, level, _ in labels:
                    trial = next((t for t in mine if t.defense == kind and t.level == level), None)
                    detail += [
                        Cell(trial.value("cold_hr_5_cooperative") if trial else None),
                        Cell(trial.value("cold_hr_5_adversarial") if trial else None, p_value=_p(trial, "cold_hr_5")),
                    ]
                levels.rows.append(Row((dataset, ranker, _attack_row(s, dataset, attack)), tuple(detail)))
    if kept:
        table.notes.append("Still above the cooperative HR@5 at every tested level: " + "; ".join(kept) + ".")
    if no_lift:
        table.notes.append(
            "'-' as well where the undefended attack does not raise HR@5 (nothing to undo): " + "; ".join(no_lift) + "."
        )
    return table, levels


def _lifted(trial: AipTrial | None) -> bool | None:
    """Whether an undefended trial's adversarial HR@5 exceeds its cooperative one (``None``: unknown)."""
    if trial is None:
        return None
    adv, coop = trial.value("cold_hr_5_adversarial"), trial.value("cold_hr_5_cooperative")
    return None if adv is None or coop is None else adv > coop


# --------------------------------------------------------------------------- writing


class AipReporter:
    """The AIP study's :class:`~raygrid.reports.report.StudyReporter`."""

    def collect(self, session: GridSession) -> tuple[AipSession, GridSession]:
        """See :func:`collect_aip_session` (the session is kept to fetch example images)."""
        return collect_aip_session(session), session

    def counts(self, collected: tuple[AipSession, GridSession]) -> tuple[int, int]:
        """``(grid points, finished trials)``."""
        return len(collected[0].trials), len(collected[0].finished)

    def write(
        self, collected: tuple[AipSession, GridSession], folder: Path, context: Mapping[str, str]
    ) -> ReportContent:
        """Write the tables (md, csv, tex), trials.csv, example images and README.md into ``folder``."""
        s, session = collected
        return write_aip_report(
            s, folder, context, fetch=lambda run_id, path, dst: _download(session, run_id, path, dst)
        )


def _download(session: GridSession, run_id: str, path: str, dst: Path) -> bool:
    """Copy artifact ``path`` of ``run_id`` to ``dst``; ``False`` (logged) when it cannot be read."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = session.tracker.client.download_artifacts(run_id, path, tmp)
            shutil.copyfile(local, dst)
        return True
    except Exception as exc:  # noqa: BLE001  (a missing or unreadable artifact only drops one example)
        log.warning("example image %s of run %s cannot be read (%s)", path, run_id, type(exc).__name__)
        return False


def write_aip_report(
    s: AipSession, folder: Path, context: Mapping[str, str] | None = None, fetch: Any = None
) -> ReportContent:
    """Write the AIP report of ``s`` into ``folder`` (which must exist); see the module docstring.

    Args:
        fetch: ``(run_id, artifact path, destination) -> bool``, copies an example image; ``None``: no examples.
    """
    context = context or {}
    tables: dict[str, ReportTable] = {}
    skipped: dict[str, str] = {}
    for t in (table3(s), table4(s), table5(s)):
        tables[t.key] = t
    t6 = table6(s)
    if t6 is None:
        skipped["table6"] = "Table 6 (HR@5 by eps) is skipped: no attack has two eps values on this grid."
    else:
        tables["table6"] = t6
    t8 = table8(s)
    if t8 is None:
        skipped["table8"] = (
            "Table 8 (defense level undoing the attack) is skipped: the grid has no JPEG or bit-depth defense."
        )
    else:
        tables["table8"], tables["table8_levels"] = t8
    files = ["README.md"]
    for key in TABLE_KEYS:
        if key not in tables:
            continue
        table = tables[key]
        (folder / f"{key}.md").write_text(to_markdown(table))
        (folder / f"{key}.csv").write_text(to_csv(table))
        (folder / f"{key}.tex").write_text(to_latex(table, label=f"tab:aip-{key}"))
        files += [f"{key}.md", f"{key}.csv", f"{key}.tex"]
    (folder / "trials.csv").write_text(trials_csv(s))
    files.append("trials.csv")
    examples = _examples(s, folder, fetch) if fetch is not None else {}
    files += [f"{EXAMPLES}/{name}" for name in examples.values()]
    (folder / "README.md").write_text(readme(s, tables, skipped, examples, context))

    headlines = [_lift_headline(s, dataset) for dataset in s.datasets]
    headlines += list(skipped.values())
    unfinished = [t for t in s.trials if not t.finished]
    if unfinished:
        headlines.append(f"{len(unfinished)} of {len(s.trials)} trials did not finish (shown as '-').")
    metrics = {"trials_total": float(len(s.trials)), "trials_finished": float(len(s.finished))}
    for dataset in s.datasets[:1]:
        for ranker in s.rankers:
            for attack in s.attacks:
                trial = s.main(dataset, ranker, attack)
                value = trial.value("cold_hr_5_adversarial") if trial else None
                if value is not None:
                    metrics[f"hr5_{ranker}_{attack}"] = value
    terminal = [tables["table5"]] + ([tables["table8"]] if "table8" in tables else [])
    return ReportContent(files=files, tables=terminal, headlines=[h for h in headlines if h], metrics=metrics)


def _lift_headline(s: AipSession, dataset: str) -> str:
    """One line: per ranker, the attack that lifts the cold items' HR@5 most (undefended)."""
    parts = []
    for ranker in s.rankers:
        best: tuple[float, str, float, float] | None = None
        for attack in s.attacks:
            trial = s.main(dataset, ranker, attack)
            coop = trial.value("cold_hr_5_cooperative") if trial else None
            adv = trial.value("cold_hr_5_adversarial") if trial else None
            if coop is None or adv is None:
                continue
            if best is None or adv - coop > best[0]:
                best = (adv - coop, attack, coop, adv)
        if best is not None:
            parts.append(f"{ranker}: {best[1]} {best[2]:.4f} -> {best[3]:.4f}")
    return f"{dataset}: strongest lift of cold-item HR@5 per ranker: " + "; ".join(parts) if parts else ""


def _examples(s: AipSession, folder: Path, fetch: Any) -> dict[str, str]:
    """Per attack, its preview image from one finished undefended trial (the first ranker's); attack -> file name."""
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for attack in s.attacks:
            tried = [t for t in s.finished if t.attack == attack and t.defense == "none" and t.run_id is not None]
            for trial in tried[:EXAMPLE_TRIES]:
                name = f"{attack}.png"
                if fetch(trial.run_id, "attack/preview.png", Path(tmp) / name):
                    (folder / EXAMPLES).mkdir(exist_ok=True)
                    shutil.move(Path(tmp) / name, folder / EXAMPLES / name)
                    out[attack] = name
                    break
    return out


def trials_csv(s: AipSession) -> str:
    """Every grid point as one CSV row: placement, status and the main metrics at full precision."""
    names = ["prediction_shift", "ttest_p_prediction_shift"]
    for k in (5, 10, 20):
        names += [
            f"cold_hr_{k}_cooperative",
            f"cold_hr_{k}_adversarial",
            f"ttest_p_cold_hr_{k}",
            f"availability_hr_{k}_cooperative",
            f"availability_hr_{k}_adversarial",
            f"test_hr_{k}",
        ]
    names += ["linf_realised_mean", "attack_seconds", "success_rate", "hook_item", "hook_hr_5"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial", "status", "dataset", "ranker", "attack", "eps", "defense", "level", *names, "run_id"])
    for t in s.trials:
        values = [t.value(n) for n in names]
        writer.writerow(
            [
                t.name,
                t.status,
                t.dataset,
                t.ranker,
                t.attack,
                "" if t.eps is None else f"{t.eps:g}",
                t.defense_label,
                "" if t.level is None else f"{t.level:g}",
                *("" if v is None else repr(v) for v in values),
                t.run_id or "",
            ]
        )
    return buffer.getvalue()


def readme(
    s: AipSession,
    tables: Mapping[str, ReportTable],
    skipped: Mapping[str, str],
    examples: Mapping[str, str],
    context: Mapping[str, str],
) -> str:
    """The report's README.md: session, findings, the tables, skipped tables, example images, conventions."""
    lines = [f"# AIP report: grid `{s.name}`", ""]
    if s.description:
        lines += [s.description, ""]
    lines += [
        f"- Grid session (MLflow grid run): `{s.grid_run_id}`, started {s.started}",
        (
            f"- Tracking store: `{context.get('tracking_uri', '?')}`; this report's MLflow run: "
            f"`{context.get('report_run_id', '?')}` (tag `raygrid.kind=report`)"
        ),
        (
            f"- Trials: {len(s.finished)} of {len(s.trials)} finished; rankers: {', '.join(s.rankers)}; "
            f"attacks: {', '.join(s.attacks)}"
        ),
        f"- Written {time.strftime('%Y-%m-%d %H:%M')}",
        "",
    ]
    lines += [f"- {h}" for h in (_lift_headline(s, d) for d in s.datasets) if h]
    lines += [f"- {note}" for note in skipped.values()]
    for note in s.notes:
        lines += ["", f"> {note}"]
    unfinished = [t for t in s.trials if not t.finished]
    if unfinished:
        lines += ["", "## Trials that did not finish", ""] + [f"- `{t.name}`: {t.status.lower()}" for t in unfinished]
    sections = {
        "table3": "Table 3: prediction shift",
        "table4": "Table 4: HR@5 per attack and ranker",
        "table5": "Table 5: change of HR@5",
        "table6": "Table 6: HR@5 by eps",
        "table8": "Table 8: the defense level that undoes an attack",
        "table8_levels": "Table 8 (detail): HR@5 under each defense",
    }
    for key, heading in sections.items():
        if key not in tables:
            continue
        lines += [
            "",
            f"## {heading}",
            "",
            to_markdown(tables[key]),
            f"Files: [{key}.csv]({key}.csv), [{key}.tex]({key}.tex), [{key}.md]({key}.md)",
        ]
    if examples:
        lines += [
            "",
            "## Example adversarial images",
            "",
            (
                "Each: cooperative images (top), adversarial (middle), amplified difference (bottom), from one "
                "undefended trial per attack."
            ),
            "",
        ]
        lines += [f"### {attack}\n\n![{attack}]({EXAMPLES}/{name})\n" for attack, name in examples.items()]
    lines += [
        "",
        "## Conventions",
        "",
        "- Rows and columns follow the grid file's order; '-' = the trial did not finish or did not log the metric.",
        "- Each attack appears at its largest eps on the grid in Tables 3, 4, 5 and 8 (the paper's eps 32).",
        (
            f"- {DAGGER} = two-sided paired t-test over the cold items (adversarial against cooperative) with "
            f"p < {ALPHA:g}."
        ),
        "- `trials.csv`: every grid point with its metrics at full precision.",
        "- LaTeX tables need `\\usepackage{booktabs}`.",
        "",
    ]
    return "\n".join(lines)

