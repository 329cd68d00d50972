"""``raygrid report NAME``: the paper-style report of a grid's latest session, by study.

What every study's report shares lives here:

1. :func:`open_session` reads the grid's latest session from MLflow (the grid run,
   its stored grid file rebuilt into a :class:`~raygrid.config.loader.GridSpec`,
   and its trial runs);
2. the study named in the stored grid file picks a :class:`StudyReporter` from
   :data:`REPORTERS` (``var``, ``aip``), which collects the
   trials (refusing a session with no finished trial) and writes its files;
3. :func:`make_report` writes those files into a temporary folder beside ``out``,
   logs them as the artifacts of a **report run** and only then renames the
   folder to ``out``: a refused or failed report leaves ``out`` as it was.

The report run lives in the grid's experiment, tagged ``raygrid.kind=report`` and
``raygrid.report_of=<grid run id>``. It is deliberately *not* nested under the
grid run (no ``mlflow.parentRunId``): the runner finds a session's trials by that
tag and its sessions by ``raygrid.kind=grid``, so a report run is never taken
for a trial or a session by ``raygrid status`` or ``raygrid resume``.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from raygrid.config.loader import GridSpec, build_grid
from raygrid.errors import RaygridError
from raygrid.reports.tables import ReportTable
from raygrid.tracking.store import GRID_PATH_TAG, GRID_TAG, KIND_TAG, GridTracker, retry

log = logging.getLogger(__name__)

#: ``raygrid.kind`` of a report run (grid sessions are ``grid``, trials ``trial``).
REPORT_KIND = "report"
#: Tag of a report run holding the id of the grid run (session) it reports on.
REPORT_OF_TAG = "raygrid.report_of"
#: Tag of a report run naming the study whose report it is.
STUDY_TAG = "raygrid.study"


@dataclass
class GridSession:
    """A grid's latest session as stored in MLflow.

    Attributes:
        name: The grid name (its MLflow experiment).
        tracker: The MLflow access.
        experiment_id: The grid's experiment.
        grid_run: The session's grid (parent) run.
        document: The grid file stored with the session.
        study: The study the grid runs (``var``).
        grid: The grid rebuilt from ``document`` (trial order and axis labels); ``None``
            when it no longer validates (components renamed since): reports then
            fall back on the trial runs' ``axis.*`` tags and creation order.
        runs: The session's trial runs, by grid key.
    """

    name: str
    tracker: GridTracker
    experiment_id: str
    grid_run: Any
    document: dict[str, Any]
    study: str
    grid: GridSpec | None
    runs: dict[str, Any]

    @property
    def grid_run_id(self) -> str:
        """Id of the session's grid run."""
        return self.grid_run.info.run_id

    @property
    def started(self) -> str:
        """When the session started, ``YYYY-MM-DD HH:MM`` local time (``?`` when MLflow has no time)."""
        start = self.grid_run.info.start_time
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(start / 1000)) if start else "?"

    def require_finished(self, finished: int, total: int) -> None:
        """Refuse a report of a session with no finished trial.

        Raises:
            RaygridError: ``finished`` is 0.
        """
        if not finished:
            raise RaygridError(
                f"grid {self.name!r} has no finished trial in its latest session (0 of {total}); "
                f"finish it first: raygrid resume {self.name}"
            )


def first_seen(values: Iterable[Any]) -> list[Any]:
    """The distinct ``values`` in the order they first appear (rows and columns follow the grid's order)."""
    out: list[Any] = []
    for value in values:
        if value not in out:
            out.append(value)
    return out


@dataclass
class ReportContent:
    """What a study's report wrote, for the caller and the report run.

    Attributes:
        files: Relative paths of the files written, main file (``README.md``) first.
        tables: The main tables, to print in the terminal.
        headlines: One-line findings (correlations, trials that did not finish).
        metrics: Numbers to log as the report run's metrics.
    """

    files: list[str] = field(default_factory=list)
    tables: list[ReportTable] = field(default_factory=list)
    headlines: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class ReportResult:
    """A written report.

    Attributes:
        name: The grid name.
        study: The grid's study.
        out: The folder the report was written to.
        run_id: The MLflow report run holding the same files as artifacts.
        content: What the study's report wrote.
        n_trials: Grid points of the session; ``n_finished`` those that finished.
    """

    name: str
    study: str
    out: Path
    run_id: str
    content: ReportContent
    n_trials: int
    n_finished: int

    @property
    def main_file(self) -> Path:
        """The file that ties the report together (``README.md``)."""
        return self.out / self.content.files[0]


class StudyReporter(Protocol):
    """The report of one study, in two steps: collect (may refuse) and write."""

    def collect(self, session: GridSession) -> Any:
        """Read what the report needs from the session.

        Raises:
            RaygridError: The session cannot be reported (e.g. no trial finished).
        """

    def write(self, collected: Any, folder: Path, context: Mapping[str, str]) -> ReportContent:
        """Write the report's files into ``folder``; ``context`` names the tracking URI and report run."""

    def counts(self, collected: Any) -> tuple[int, int]:
        """``(grid points, finished trials)`` of the collected session."""


def _reporters() -> dict[str, StudyReporter]:
    from raygrid.reports.aip_report import AipReporter
    from raygrid.reports.var_report import VarReporter

    return {"aip": AipReporter(), "var": VarReporter()}


#: Study name -> its reporter (built on first use: the VAR report imports scipy and matplotlib).
REPORTERS: dict[str, StudyReporter] = {}


def reported_studies() -> list[str]:
    """The studies that have a report."""
    if not REPORTERS:
        REPORTERS.update(_reporters())
    return sorted(REPORTERS)


def reporter_for(study: str, name: str) -> StudyReporter:
    """The reporter of ``study``.

    Raises:
        RaygridError: No report exists for that study.
    """
    if study not in reported_studies():
        raise RaygridError(
            f"grid {name!r} runs study {study!r}, which has no report yet (reports exist for: "
            f"{', '.join(sorted(REPORTERS))}); compare its trials with raygrid status or raygrid ui"
        )
    return REPORTERS[study]


def open_session(name: str, tracking: str = "mlruns", base: Path | None = None) -> GridSession:
    """The latest session of grid ``name``: grid run, stored grid file, trial runs.

    Raises:
        RaygridError: The store cannot be reached, or has no grid of that name.
    """
    from raygrid.grid.runner import latest_session

    tracker, experiment_id, parent = latest_session(name, tracking, base)
    try:
        text = tracker.grid_yaml(parent.info.run_id)
    except Exception as exc:  # noqa: BLE001  (any MLflow failure: the artifact is missing or unreadable)
        raise RaygridError(
            f"the grid file of grid {name!r}'s latest session cannot be read from {tracker.target.uri} "
            f"({type(exc).__name__}); run the grid again with raygrid run FILE"
        ) from None
    document = yaml.safe_load(text) or {}
    study = str(document.get("study", "var"))
    grid: GridSpec | None = None
    try:
        path_tag = parent.data.tags.get(GRID_PATH_TAG)
        grid = build_grid(document, source=path_tag or name, path=Path(path_tag) if path_tag else None)
    except RaygridError as exc:
        log.warning(
            "the stored grid file of %r no longer validates (%s); ordering trials by their runs' tags", name, exc
        )
    runs = retry(lambda: tracker.trial_runs(experiment_id, parent.info.run_id), what="reading the trial runs")
    return GridSession(name, tracker, experiment_id, parent, document, study, grid, runs)


def default_out(name: str, base: Path | None = None) -> Path:
    """Where a report goes by default: ``.raygrid/reports/<NAME>/`` under ``base`` (the cwd)."""
    return (base or Path.cwd()) / ".raygrid" / "reports" / name


def make_report(
    name: str, *, tracking: str = "mlruns", out: Path | None = None, base: Path | None = None
) -> ReportResult:
    """Build the report of grid ``name``'s latest session, write it to ``out`` and log it as a report run.

    Args:
        name: The grid name (its MLflow experiment).
        tracking: The MLflow store (folder, ``sqlite:///`` URI or ``http(s)://`` server).
        out: The report folder (replaced as a whole); default :func:`default_out`.
        base: Folder relative paths are resolved against; default the cwd.

    Raises:
        RaygridError: Unknown grid, unreachable store, a study without a report,
            no finished trial, or ``out`` is a file.
    """
    base = (base or Path.cwd()).resolve()
    out = Path(out).expanduser() if out is not None else default_out(name, base)
    out = out if out.is_absolute() else base / out
    if out.exists() and not out.is_dir():
        raise RaygridError(f"--out {out} is a file; give a folder for the report")
    session = open_session(name, tracking, base)
    reporter = reporter_for(session.study, name)
    collected = reporter.collect(session)
    n_trials, n_finished = reporter.counts(collected)

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RaygridError(
            f"cannot create the report folder {out.parent} ({exc.strerror}); choose another --out"
        ) from None
    staging = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    run_id: str | None = None
    tracker = session.tracker
    try:
        run_id = _start_report_run(session)
        context = {"tracking_uri": tracker.target.uri, "report_run_id": run_id, "out": str(out)}
        content = reporter.write(collected, staging, context)
        if content.metrics:
            tracker.log_trial(run_id, content.metrics, {})
        retry(lambda: tracker.client.log_artifacts(run_id, str(staging)), what="logging the report")
        _replace_folder(staging, out)
        tracker.set_status(run_id, "FINISHED")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if run_id is not None:
            try:  # a report run without its files would mislead: remove it
                tracker.client.delete_run(run_id)
            except Exception:  # noqa: BLE001  (best effort while another error propagates)
                log.warning("could not delete the unfinished report run %s", run_id)
        raise
    log.info("report of %s written to %s (MLflow run %s)", name, out, run_id)
    return ReportResult(name, session.study, out, run_id, content, n_trials, n_finished)


def _start_report_run(session: GridSession) -> str:
    """Create the report run in the grid's experiment (not nested: see the module docstring)."""
    tags = {
        KIND_TAG: REPORT_KIND,
        GRID_TAG: session.name,
        REPORT_OF_TAG: session.grid_run_id,
        STUDY_TAG: session.study,
        "mlflow.note.content": f"Report of grid session {session.grid_run_id}",
    }
    run_name = f"{session.name}-report-{time.strftime('%Y%m%d-%H%M%S')}"
    client = session.tracker.client
    run = retry(
        lambda: client.create_run(session.experiment_id, run_name=run_name, tags=tags), what="creating the report run"
    )
    return run.info.run_id


def _replace_folder(staging: Path, out: Path) -> None:
    """Put ``staging`` at ``out`` by renames, replacing an earlier report as a whole."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        out.rename(old)
    try:
        staging.rename(out)
    except BaseException:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
