"""The ``raygrid`` command line: a few lines over library functions per command."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.console import Console

from raygrid.errors import RaygridError

if TYPE_CHECKING:
    from raygrid.grid.runner import GridOutcome

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Experiment grids on adversarial product images and visual recommenders.")
console = Console(width=None if sys.stdout.isatty() else 132)
err_console = Console(stderr=True)
T = TypeVar("T")

SetOption = typer.Option(None, "--set", "-s", help="Override a setting: section.key=value (repeatable).")
TrackingOption = typer.Option("mlruns", "--tracking", "-t", help="MLflow store: folder, sqlite:/// URI or http:// server.")
DataRootOption = typer.Option(
    None, "--data-root", help="Folder of the real datasets: the value of ${RAYGRID_DATA_ROOT} in grid files "
    "(default: the RAYGRID_DATA_ROOT environment variable)."
)


def _variables(data_root: Path | None) -> dict[str, str]:
    """Grid-file variables set on the command line (``--data-root`` -> ``RAYGRID_DATA_ROOT``, made absolute)."""
    return {} if data_root is None else {"RAYGRID_DATA_ROOT": str(data_root.expanduser().resolve())}


def _guard(fn: Callable[[], T]) -> T:
    """Run ``fn``; a user error becomes one line on stderr and exit code 2."""
    try:
        return fn()
    except RaygridError as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


def _logging(verbose: bool) -> None:
    if not verbose:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is first imported
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # read at each download
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "ray", "filelock", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)


@app.command()
def validate(
    file: Path = typer.Argument(..., help="Grid file (YAML)."),
    set_: list[str] | None = SetOption,
    data_root: Path | None = DataRootOption,
) -> None:
    """Expand and validate every grid point; print the count and the trial names."""
    from raygrid.config.loader import load_grid

    grid = _guard(lambda: load_grid(file, set_ or (), _variables(data_root)))
    console.print(f"[bold]{grid.name}[/bold]: {len(grid.trials)} trials, all valid")
    for trial in grid.trials:
        console.print(f"  {trial.name}")


@app.command()
def run(
    file: Path = typer.Argument(..., help="Grid file (YAML)."),
    set_: list[str] | None = SetOption,
    address: str | None = typer.Option(None, "--address", help="Ray cluster to join (default: start a local Ray)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log stage progress."),
    data_root: Path | None = DataRootOption,
    no_report: bool = typer.Option(False, "--no-report", help="Skip the paper-style report written when trials finish."),
) -> None:
    """Run every trial of a grid on Ray Tune and record it in MLflow; then write its report."""
    from raygrid.config.loader import load_grid
    from raygrid.grid.runner import run_grid

    _logging(verbose)
    grid = _guard(lambda: load_grid(file, set_ or (), _variables(data_root)))
    console.print(f"[bold]{grid.name}[/bold]: {len(grid.trials)} trials")
    with _progress(len(grid.trials)) as report:
        outcome = _guard(lambda: run_grid(grid, address=address, progress=report))
    _print_outcome(outcome)
    if not no_report:
        _report_after_run(outcome)
    _exit_for(outcome)


def _exit_for(outcome: GridOutcome) -> None:
    """Exit 130 after Ctrl+C (the shell's convention for SIGINT), 1 when a trial failed, else return."""
    if outcome.interrupted:
        raise typer.Exit(130)
    if outcome.failed:
        raise typer.Exit(1)


def _report_after_run(outcome: GridOutcome) -> None:
    """Write the report of a grid that just ran, when its study has one and a trial finished.

    A report that cannot be written is a warning: the grid's results are in MLflow either way.
    """
    from raygrid.reports.report import make_report, reported_studies

    study = outcome.grid.trials[0].config.study if outcome.grid.trials else None
    if study not in reported_studies() or len(outcome.failed) == len(outcome.trials):
        return
    from raygrid.pipeline.cache import is_uri, resolve_root

    experiment = outcome.grid.settings.tracking.experiment or outcome.grid.name
    # Beside the grid's other products: <storage.root>/reports/NAME (a local root; else the default).
    root = resolve_root(outcome.grid.settings.storage.root)
    out = None if is_uri(root) else Path(root) / "reports" / experiment
    try:
        with err_console.status("writing the report ..."):
            result = make_report(experiment, tracking=outcome.target.uri, out=out)
    except RaygridError as exc:
        err_console.print(f"[yellow]warning:[/yellow] no report written: {exc}", highlight=False, soft_wrap=True)
        return
    for line in result.content.headlines[:1]:
        console.print(line, highlight=False)
    console.print(f"Report: [bold]{_short_path(result.main_file)}[/bold]  (MLflow run {result.run_id})", highlight=False)


@app.command()
def report(
    name: str = typer.Argument(..., help="Grid name (its MLflow experiment)."),
    tracking: str = TrackingOption,
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Report folder, replaced as a whole (default: .raygrid/reports/NAME)."
    ),
) -> None:
    """Write the paper-style report (tables, plots, correlations) of a grid's latest session."""
    from raygrid.reports.report import make_report
    from raygrid.reports.tables import to_rich

    _logging(False)
    with err_console.status(f"writing the report of {name} ..."):
        result = _guard(lambda: make_report(name, tracking=tracking, out=out))
    for table in result.content.tables:
        console.print(to_rich(table))
    for line in result.content.headlines:
        console.print(line, highlight=False)
    console.print(f"{result.n_finished} of {result.n_trials} trials finished")
    console.print(f"Report: [bold]{_short_path(result.main_file)}[/bold]  (MLflow run {result.run_id})", highlight=False)


@app.command()
def resume(
    name: str = typer.Argument(..., help="Grid name (its MLflow experiment)."),
    tracking: str = TrackingOption,
    address: str | None = typer.Option(None, "--address", help="Ray cluster to join."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
    no_report: bool = typer.Option(False, "--no-report", help="Skip the paper-style report written when trials finish."),
) -> None:
    """Re-run the trials of a grid's latest session that did not finish, in their own MLflow runs; then write its report."""
    from raygrid.grid.runner import resume_grid

    _logging(verbose)
    _guard(lambda: _restore_variables(name, tracking))
    with _progress(None) as report:
        outcome = _guard(lambda: resume_grid(name, tracking=tracking, address=address, progress=report))
    if outcome.skipped:
        console.print(f"{len(outcome.skipped)} trials had finished and were skipped")
    _print_outcome(outcome)
    if not no_report:
        _report_after_run(outcome)
    _exit_for(outcome)


def _restore_variables(name: str, tracking: str) -> None:
    """Put the ``${NAME}`` values the grid's session started with (e.g. its data root) in the environment.

    The stored grid carries them, but resume also re-reads the grid file to check
    that it did not change, and that file refers to them by name.
    """
    import yaml

    from raygrid.config.loader import VARIABLES_KEY
    from raygrid.grid.runner import latest_session

    tracker, _, parent = latest_session(name, tracking)
    document = yaml.safe_load(tracker.grid_yaml(parent.info.run_id)) or {}
    for key, value in (document.get(VARIABLES_KEY) or {}).items():
        os.environ[str(key)] = str(value)


@app.command()
def data(
    file: Path = typer.Argument(..., help="Grid file, or dataset file such as experiments/datasets/var_amazon_men.yaml."),
    set_: list[str] | None = SetOption,
    data_root: Path | None = DataRootOption,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log preprocessing and image decoding."),
    log_to: str | None = typer.Option(
        None, "--log", help="Also log the statistics to this MLflow store (experiment 'datasets', one run per dataset)."
    ),
) -> None:
    """Load the datasets a grid uses (decoding their images into the image store once) and print their statistics."""
    from rich.table import Table

    from raygrid.data.stats import TABLE1_COLUMNS, category_rows, dataset_stats, table1_rows
    from raygrid.data.summary import dataset_configs, describe, load_dataset

    _logging(verbose)
    configs = _guard(lambda: dataset_configs(file, set_ or (), _variables(data_root)))
    named = []
    for config in configs:
        with err_console.status(f"loading {describe(config)} ..."):
            dataset = _guard(lambda config=config: load_dataset(config))
        named.append((dataset.name, dataset_stats(dataset)))
    table = Table(*TABLE1_COLUMNS, title="Dataset statistics (VAR paper, Table 1)")
    for row in table1_rows(named):
        table.add_row(*row)
    console.print(table)
    for name, stats in named:
        steps = {k: int(stats[k]) for k in ("raw_interactions", "duplicates_removed", "dropped_images", "cold_items") if k in stats}
        if steps:
            console.print(f"{name}: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in steps.items()))
        rows = category_rows(stats)
        if rows:
            categories = Table("category", "items", "interactions", title=f"{name}: categories")
            for category, items, interactions in rows:
                categories.add_row(category, f"{items:,}", f"{interactions:,}")
            console.print(categories)
    if log_to is not None:
        _guard(lambda: _log_dataset_stats(log_to, configs, named))
        console.print(f"statistics logged to the MLflow experiment 'datasets' in {log_to}")


def _log_dataset_stats(tracking: str, configs: Sequence[object], named: Sequence[tuple[str, dict[str, float]]]) -> None:
    """One MLflow run per dataset in experiment ``datasets``: its config as params, its statistics as metrics."""
    from mlflow.entities import Param

    from raygrid.tracking.store import GridTracker, check_tracking, flatten, resolve_tracking

    target = resolve_tracking(tracking)
    check_tracking(target)
    tracker = GridTracker(target)
    experiment_id = tracker.experiment_id("datasets")
    for config, (name, stats) in zip(configs, named):
        run_id = tracker.client.create_run(experiment_id, run_name=name, tags={"raygrid.kind": "dataset"}).info.run_id
        params = flatten(config.model_dump(mode="json"))  # type: ignore[attr-defined]
        tracker.client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
        tracker.log_trial(run_id, stats, {})
        tracker.set_status(run_id, "FINISHED")


@app.command()
def status(name: str = typer.Argument(..., help="Grid name."), tracking: str = TrackingOption) -> None:
    """Each trial's state and key metrics in the grid's latest session."""
    from raygrid.grid.runner import KEY_METRICS, grid_status
    from raygrid.reports.summary import trials_table

    rows = _guard(lambda: grid_status(name, tracking))
    console.print(trials_table(rows, KEY_METRICS))
    counts = {s: sum(r["status"] == s for r in rows) for s in {r["status"] for r in rows}}
    console.print(", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())))


@app.command("list")
def list_components() -> None:
    """The registered components, by kind, and the pipeline's stages."""
    import raygrid.components  # noqa: F401
    from raygrid.pipeline.spec import STAGES
    from raygrid.registry import REGISTRIES

    for kind, registry in REGISTRIES.items():
        console.print(f"[bold]{kind}[/bold]: {', '.join(registry.names())}")
    console.print(f"[bold]stages[/bold]: {', '.join(STAGES)}")


@app.command()
def ui(
    tracking: str = TrackingOption,
    port: int = typer.Option(5000, "--port", "-p"),
) -> None:
    """Start the MLflow UI on the local store, bound to 127.0.0.1."""
    from raygrid.tracking.store import resolve_tracking

    def local_store():
        target = resolve_tracking(tracking)
        if not target.is_server and not Path(target.uri[len("sqlite:///") :]).is_file():
            raise RaygridError(f"no MLflow store in {target.artifact_root.parent}; run a grid first or pass --tracking")
        return target

    target = _guard(local_store)
    if target.is_server:
        console.print(f"the results are on a tracking server: open {target.uri}")
        return
    assert target.artifact_root is not None
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow") or "mlflow"
    command = [
        mlflow, "server", "--backend-store-uri", target.uri, "--default-artifact-root", target.artifact_root.as_uri(),
        "--host", "127.0.0.1", "--port", str(port),
    ]
    console.print(f"MLflow UI on http://127.0.0.1:{port} (Ctrl-C to stop)")
    raise typer.Exit(subprocess.call(command))


class _progress:
    """A tqdm bar of finished trials, with the stages at work shown beside it."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.bar = None
        self.failed = 0
        self.last = ""
        self.stage_text = ""

    def __enter__(self) -> _progress:
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, unit="trial", desc="trials", disable=None, file=sys.stderr)
        return self

    def trial_done(self, done: int, total: int, name: str, status: str) -> None:
        assert self.bar is not None
        if self.bar.total != total:
            self.bar.total = total
        self.failed += status != "FINISHED"
        self.last = f"last: {name} {status.lower()}" + (f", {self.failed} failed" if self.failed else "")
        self.bar.update(done - self.bar.n)
        self._postfix()

    def stages(self, done: int, submitted: int, running: Sequence[str]) -> None:
        if submitted:
            pending = f" (pending: {', '.join(running)})" if running else ""
            self.stage_text = f"stages done {done}/{submitted}{pending}"
        self._postfix()

    def _postfix(self) -> None:
        assert self.bar is not None
        self.bar.set_postfix_str("; ".join(t for t in (self.stage_text, self.last) if t))

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _print_outcome(outcome) -> None:
    from raygrid.grid.runner import KEY_METRICS
    from raygrid.reports.summary import attack_baselines, stages_table, trials_table

    console.print(trials_table(outcome.trials, KEY_METRICS, attack_baselines(outcome.grid)))
    if outcome.stages:
        console.print(stages_table(outcome.stages))
    finished = len(outcome.trials) - len(outcome.failed)
    console.print(f"{finished} of {len(outcome.trials)} trials finished in {outcome.seconds:.0f} s")
    for row in outcome.trials:
        if row["status"] != "FINISHED" and row.get("error"):
            console.print(f"  [red]{row['trial']}[/red]: {row['error']}", highlight=False)
    shown = _raygrid_command()
    folder = outcome.target.artifact_root.parent if outcome.target.artifact_root else None
    tracking = "" if folder is None or folder == Path.cwd() / "mlruns" else f" --tracking {_short_path(folder)}"
    if outcome.interrupted:
        console.print(f"Stopped by Ctrl+C. Continue the grid: {shown} resume {outcome.grid.name}{tracking}")
    elif outcome.failed:
        console.print(f"Fix the cause, then re-run the failed trials: {shown} resume {outcome.grid.name}{tracking}")
    if folder is not None:
        console.print(f"Open the results in the MLflow UI: [bold]{shown} ui{tracking}[/bold]  (then http://127.0.0.1:5000)")
    else:
        console.print(f"Open the results in the MLflow UI: {outcome.target.uri}")


def _short_path(path: Path) -> str:
    """``path`` relative to the cwd when it lies below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _raygrid_command() -> str:
    """How the user can call this raygrid again from the current directory."""
    exe = Path(sys.executable).parent / "raygrid"
    if not exe.exists() or shutil.which("raygrid") == str(exe):
        return "raygrid"
    shown = _short_path(exe)
    return shown if shown.startswith("/") else f"./{shown}"


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
