"""Run a validated grid on Ray Tune, tracked in MLflow: the driver side.

``run_grid`` is everything ``raygrid run`` and ``raygrid resume`` do:

1. resolve and check the MLflow store; unless every trial's product is already
   cached, start or join Ray and fit the resource requests to the cluster:
   anything that refuses the grid does so before a run is written; on a fresh
   run, start the session's stage broker and hand it the grid's shared upstream
   (extractors, features), so it runs while the next steps do their bookkeeping;
2. create the experiment, the grid run and one trial run per grid point, on the
   driver, before any worker logs (on resume: find them by grid key);
3. log the trials whose product is cached straight from the driver; start one
   Tune trial for every other grid point to run, its coordinator asking the broker;
4. collect the outcome: per-trial metrics, per-stage computed / cached / shared
   counts, and mark every run's final state.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from raygrid.config.loader import GridSpec, TrialSpec, build_grid, load_grid
from raygrid.errors import RaygridError
from raygrid.grid.trainable import ATTEMPTS_TAG, FAILED_METRIC, NODE_IP_TAG, NODE_TAG
from raygrid.pipeline.cache import CacheMiss, StageCache, check_storage, filesystem, is_uri, resolve_root
from raygrid.pipeline.resolve import CACHED, StageLedger
from raygrid.pipeline.spec import StageSpec
from raygrid.tracking.store import (
    CONFIG_HASH_TAG,
    GRID_HASH_TAG,
    GRID_PATH_TAG,
    OVERRIDES_TAG,
    STORAGE_TAG,
    GridTracker,
    TrackingTarget,
    check_tracking,
    flatten,
    git_commit,
    resolve_tracking,
)

log = logging.getLogger(__name__)

#: What a trial's coordinator reserves: no CPU (its stages are tasks with their own
#: requests, so waiting trials never starve the stages they wait for), only memory,
#: which Ray needs some non-zero request to place it.
COORDINATOR_MEMORY = 256 * 1024**2

#: Metrics shown in summaries and ``raygrid status``.
KEY_METRICS = (
    # the VAR study
    "success_rate", "feature_loss", "recall_20", "ndcg_20", "chr_20", "ncdcg_20", "ttest_p_chr_20",
    # the AIP study
    "cold_hr_5_cooperative", "cold_hr_5_adversarial", "delta_cold_hr_5", "ttest_p_cold_hr_5", "prediction_shift",
)


@dataclass
class GridOutcome:
    """What a grid session produced.

    Attributes:
        grid: The grid that ran.
        target: Where MLflow recorded it.
        grid_run_id: The session's parent MLflow run.
        trials: One row per grid point: trial name, status, key metrics, error.
        stages: One row per stage: computed, cached, shared, failed counts and seconds.
        skipped: Trials not run because their run had already FINISHED (resume).
        seconds: Wall time of the session.
        warnings: Resource adjustments and similar notes.
        interrupted: Ctrl+C (SIGINT) stopped the session: no more trials started, the finished ones stand.
    """

    grid: GridSpec
    target: TrackingTarget
    grid_run_id: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failed(self) -> list[str]:
        """Names of trials that did not finish."""
        return [row["trial"] for row in self.trials if row["status"] != "FINISHED"]


def trial_tags(trial: TrialSpec, grid: GridSpec, commit: str | None = None) -> dict[str, str]:
    """MLflow tags of a trial run: its components (defense included), grid key, config hash, git commit.

    ``axis.<path>`` tags hold the label of each grid axis's value (``axis.attack``:
    ``pgd_eps8``), the names reports group and order trials by. ``commit``: the git
    commit, when the caller already knows it (one ``git`` call per grid, not per trial).
    """
    return {
        **{f"axis.{axis}": label for axis, label in trial.labels.items()},
        "dataset": trial.component("data"),
        "extractor": trial.component("extractor"),
        "attack": trial.component("attack"),
        "recommender": trial.component("recommender"),
        "defense": trial.component("defense"),
        CONFIG_HASH_TAG: trial.config_hash,
        "raygrid.grid": grid.name,
        "git_commit": commit if commit is not None else git_commit(),
    }


def run_grid(
    grid: GridSpec,
    *,
    address: str | None = None,
    resume: bool = False,
    progress: ProgressSink | None = None,
    base: Path | None = None,
) -> GridOutcome:
    """Run (or resume) ``grid``; see the module docstring.

    Everything that can refuse the grid (tracking store, Ray, resources) is
    checked before the first MLflow run is written, so a refused grid leaves
    nothing half-written.

    Args:
        grid: A validated grid.
        address: Ray cluster address (``None``: start a local Ray, or use the one running in this process).
        resume: Continue the grid's latest session: trials whose run FINISHED are skipped,
            the others re-run in their own run.
        progress: Told of every finished trial and, about once a second, of the stages' progress.
        base: Folder relative paths (tracking, storage) are resolved against; default the cwd.
    """
    start = time.perf_counter()
    base = (base or Path.cwd()).resolve()
    target = resolve_tracking(grid.settings.tracking.uri, base)
    check_tracking(target)
    storage_root = resolve_root(grid.settings.storage.root, base)
    check_storage(storage_root)
    cache = StageCache(storage_root)
    graphs = _graphs(grid, grid.settings.resources)
    # A grid whose every trial product is cached is replayed by the driver alone: no Ray to start.
    spill = str(Path(storage_root) / SPILL_FOLDER) if not is_uri(storage_root) else None
    ray_state = _RayState(address, spill) if not all(cache.exists(g) for g in graphs.values()) else None
    broker: _Broker | None = None
    try:
        if ray_state is not None:
            graphs = _graphs(grid, ray_state.resources(grid))
            if not resume:
                # Start the grid's shared upstream (extractors, features) now: it runs while the
                # MLflow runs are created and Tune starts the coordinators, and every extractor
                # trains at once instead of one at a time behind the first trials. Later stages
                # are left to the coordinators, so trials finish in grid order and results reach
                # MLflow early. (A resumed grid skips its finished trials, known only once the
                # runs are read.)
                broker = _Broker(storage_root, grid.settings.retries)
                broker.prefetch(_upstream([g for g in graphs.values() if not cache.exists(g)]))
        tracker = GridTracker(target, retry_seconds=grid.settings.tracking.retry_seconds)
        experiment_id = tracker.experiment_id(grid.settings.tracking.experiment or grid.name)
        assert experiment_id is not None
        grid_run_id, runs, statuses = _open_session(tracker, experiment_id, grid, resume, storage_root)
        to_run = [t for t in grid.trials if statuses.get(t.name) != "FINISHED"]
        outcome = GridOutcome(
            grid=grid,
            target=target,
            grid_run_id=grid_run_id,
            skipped=[t.name for t in grid.trials if statuses.get(t.name) == "FINISHED"],
            warnings=ray_state.warnings if ray_state else [],
        )
        try:
            ledger, rest = _serve_cached(tracker, to_run, runs, graphs, cache, progress)
            results: dict[str, dict[str, Any]] = {}
            broker_rows: list[dict[str, Any]] = []
            if rest:
                if ray_state is None:  # a cache entry turned out unreadable: compute it after all
                    ray_state = _RayState(address, spill)
                    graphs = _graphs(grid, ray_state.resources(grid))
                    outcome.warnings = ray_state.warnings
                if broker is None:
                    broker = _Broker(storage_root, grid.settings.retries)
                with _TuneStopMessages() as stop:
                    results, broker_rows = _run_trials(
                        grid, rest, runs, graphs, target, storage_root, grid_run_id, ray_state.shape, progress,
                        broker, done=len(to_run) - len(rest), total=len(to_run),
                    )
                outcome.interrupted = stop.interrupted
            outcome.stages = _merge_stage_rows(ledger.rows(), broker_rows)
            _log_significance(tracker, grid, runs, graphs, cache)
            outcome.trials = _final_states(tracker, experiment_id, grid_run_id, grid, to_run, results)
        except BaseException:
            tracker.set_status(grid_run_id, "FAILED", error="the driver stopped before the grid finished")
            raise
    finally:
        if broker is not None:
            broker.kill()
        if ray_state is not None:
            ray_state.close()

    outcome.seconds = time.perf_counter() - start
    tracker.log_table(grid_run_id, outcome.stages, "stages.json")
    tracker.log_table(grid_run_id, outcome.trials, "trials.json")
    tracker.log_trial(
        grid_run_id,
        {"wall_seconds": outcome.seconds, "trials_failed": float(len(outcome.failed)), "trials_run": float(len(to_run))},
        {},
    )
    tracker.set_status(grid_run_id, "FAILED" if outcome.failed else "FINISHED")
    return outcome


class _TuneStopMessages(logging.Filter):
    """Puts Tune's Ctrl+C messages in raygrid's terms while a grid's trials run, and notes the interrupt.

    On the first SIGINT Tune starts no more trials and returns (the finished ones
    stand; a running one may still finish before the driver shuts Ray down); its
    messages point to ``Tuner.restore``, which a raygrid user never calls: the
    grid continues with ``raygrid resume``, which the CLI names.
    """

    LOGGER = "ray.tune.tune"

    def __init__(self) -> None:
        super().__init__()
        self.interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Stop signal received"):
            self.interrupted = True
            record.msg, record.args = (
                "Stopping the grid: no more trials start, finished ones are kept (Ctrl+C again stops at once)", ()
            )
        return not message.startswith(("Experiment has been interrupted", "Training has been interrupted"))

    def __enter__(self) -> _TuneStopMessages:
        logging.getLogger(self.LOGGER).addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger(self.LOGGER).removeFilter(self)


#: Stages started before any trial asks for them (with their inputs): those most trials share.
PREFETCH_STAGES = frozenset({"extractor", "features"})


def _upstream(graphs: Sequence[StageSpec]) -> list[StageSpec]:
    """The distinct :data:`PREFETCH_STAGES` nodes of ``graphs``, in grid order."""
    nodes: dict[str, StageSpec] = {}
    for graph in graphs:
        for node in graph.walk():
            if node.stage in PREFETCH_STAGES:
                nodes.setdefault(node.key, node)
    return list(nodes.values())


class _Broker:
    """The session's stage broker actor (:mod:`raygrid.grid.broker`), under a name coordinators look up."""

    def __init__(self, storage_root: str, retries: int) -> None:
        from raygrid.grid.broker import StageBroker

        self.name = f"raygrid-broker-{uuid.uuid4().hex[:16]}"
        self.actor = StageBroker.options(name=self.name, max_restarts=0).remote(storage_root, retries)

    def prefetch(self, specs: list[StageSpec]) -> None:
        """Start the stages of ``specs`` without waiting for them."""
        if specs:
            self.actor.prefetch.remote(specs)

    def kill(self) -> None:
        """End the actor (its objects go with it; the disk cache keeps every finished stage)."""
        import ray

        try:
            ray.kill(self.actor)
        except Exception as exc:  # noqa: BLE001  (already gone with its cluster)
            log.debug("broker %s: %s", self.name, exc)


#: Folder under a local storage root where Ray spills objects that do not fit its object store.
SPILL_FOLDER = "ray-spill"


class _RayState:
    """Ray started or joined for this grid, the cluster's shape, and the resource requests fitted to it."""

    def __init__(self, address: str | None, spill: str | None = None) -> None:
        # MLflow takes seconds to import; let it load while Ray starts its processes.
        prefetch = threading.Thread(target=importlib.import_module, args=("mlflow",), daemon=True)
        prefetch.start()
        self.started = _init_ray(address, spill)
        prefetch.join()
        self.warnings: list[str] = []
        try:
            from raygrid.grid.resources import cluster_shape

            self.shape = cluster_shape()
        except BaseException:
            self.close()
            raise

    def resources(self, grid: GridSpec) -> Any:
        """The grid's resource requests fitted to the cluster (warnings kept, impossible ones refused)."""
        from raygrid.grid.resources import fit_resources

        try:
            resources, self.warnings = fit_resources(grid.settings.resources, self.shape)
        except BaseException:
            self.close()
            raise
        for warning in self.warnings:
            log.warning(warning)
        return resources

    def close(self) -> None:
        """Stop Ray if this grid started it."""
        if self.started:
            import ray

            ray.shutdown()
            self.started = False


def _graphs(grid: GridSpec, resources: Any) -> dict[str, StageSpec]:
    """Each trial's stage graph (keys do not depend on ``resources``; the stage tasks' requests do)."""
    from raygrid.studies import STUDIES

    # Every trial sees its peers: a study may share work across the grid (the VAR study
    # selects its categories from the clean runs of every extractor and recommender).
    peers = [t.config for t in grid.trials]
    return {t.name: STUDIES[t.config.study](t.config, resources, peers) for t in grid.trials}  # type: ignore[attr-defined]


def _serve_cached(
    tracker: GridTracker,
    trials: list[TrialSpec],
    runs: dict[str, str],
    graphs: dict[str, StageSpec],
    cache: StageCache,
    progress: ProgressSink | None,
) -> tuple[StageLedger, list[TrialSpec]]:
    """Log, from the driver, every trial whose final product is cached; returns the ledger and the others."""
    ledger = StageLedger()
    rest: list[TrialSpec] = []
    for trial in trials:
        graph = graphs[trial.name]
        try:
            outcome = cache.load(graph)
        except CacheMiss:
            rest.append(trial)
            continue
        tracker.set_status(runs[trial.name], "RUNNING")
        tracker.log_outcome(runs[trial.name], outcome, tags={NODE_TAG: "driver"})
        tracker.set_status(runs[trial.name], "FINISHED")
        ledger.record(graph.stage, CACHED)
        if progress is not None:
            progress.trial_done(ledger.total(CACHED), len(trials), trial.name, "FINISHED")
    return ledger, rest


def _log_significance(
    tracker: GridTracker, grid: GridSpec, runs: dict[str, str], graphs: dict[str, StageSpec], cache: StageCache
) -> None:
    """Log paired tests of every attacked trial against its no-attack twin to the attacked trial's run.

    The per-user values are read back from the stage cache, where every finished
    trial's outcome lies; trials without a cached outcome (failed) are skipped.
    """
    from raygrid.reports.summary import attack_baselines, twin_significance

    baselines = attack_baselines(grid)
    outcomes = {}
    for name in set(baselines) | set(baselines.values()):
        try:
            outcomes[name] = cache.load(graphs[name])
        except CacheMiss:
            continue
    for name, values in twin_significance(outcomes, baselines).items():
        if values and name in runs:
            # Only what the run lacks: a finished run of an earlier session keeps its one value.
            tracker.log_trial(runs[name], values, {}, skip_logged=True)


def _merge_stage_rows(*tables: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-stage rows summed over several ledgers (driver-served and broker-served)."""
    merged: dict[str, dict[str, Any]] = {}
    for rows in tables:
        for row in rows:
            into = merged.setdefault(row["stage"], {"stage": row["stage"], "computed": 0, "cached": 0, "shared": 0, "failed": 0, "seconds": 0.0})
            for key in ("computed", "cached", "shared", "failed", "seconds"):
                into[key] += row.get(key, 0)
    return list(merged.values())


def _open_session(
    tracker: GridTracker, experiment_id: str, grid: GridSpec, resume: bool, storage_root: str
) -> tuple[str, dict[str, str], dict[str, str]]:
    """The grid run and one trial run per grid point: new ones, or the latest session's on resume."""
    runs: dict[str, str] = {}
    statuses: dict[str, str] = {}
    if resume:
        parent = tracker.latest_grid_run(experiment_id)
        if parent is None:
            raise RaygridError(f"grid {grid.name!r} has no session to resume; start it with raygrid run FILE")
        grid_run_id = parent.info.run_id
        for key, run in tracker.trial_runs(experiment_id, grid_run_id).items():
            runs[key], statuses[key] = run.info.run_id, run.info.status
    else:
        grid_run_id = tracker.start_grid_run(
            experiment_id,
            grid_name=grid.name,
            grid_hash=grid.grid_hash,
            grid_yaml=yaml.safe_dump(grid.document, sort_keys=False),
            path=str(grid.path.resolve()) if grid.path else None,
            storage_root=str(storage_root),
            overrides=grid.overrides,
        )
    commit = git_commit()
    for trial in grid.trials:
        if trial.name not in runs:
            runs[trial.name] = tracker.create_trial_run(
                experiment_id, grid_run_id, name=trial.name, tags=trial_tags(trial, grid, commit), params=flatten(trial.config_dict)
            )
            statuses[trial.name] = "SCHEDULED"
    tracker.set_status(grid_run_id, "RUNNING")
    return grid_run_id, runs, statuses


def _final_states(
    tracker: GridTracker,
    experiment_id: str,
    grid_run_id: str,
    grid: GridSpec,
    ran: list[TrialSpec],
    results: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """One row per grid point, read back from MLflow (the record resume trusts)."""
    final = tracker.trial_runs(experiment_id, grid_run_id)
    names = {t.name for t in ran}
    rows = []
    for trial in grid.trials:
        run = final.get(trial.name)
        status = run.info.status if run else "MISSING"
        error = results.get(trial.name, {}).get("error")
        if run is not None and status in ("RUNNING", "SCHEDULED") and trial.name in names:
            # The coordinator died without closing its run (process killed, node lost, Ctrl-C).
            error = error or "the trial stopped before finishing"
            tracker.set_status(run.info.run_id, "FAILED", error=error)
            status = "FAILED"
        row: dict[str, Any] = {"trial": trial.name, "status": status}
        row.update({k: (run.data.metrics.get(k) if run else None) for k in KEY_METRICS})
        row["node"] = _node_label(run.data.tags) if run else ""
        row["attempts"] = int(run.data.tags.get(ATTEMPTS_TAG, "0") or 0) if run else 0
        if status != "FINISHED":
            row["error"] = (run.data.tags.get("raygrid.error") if run else None) or error
        rows.append(row)
    return rows


def latest_session(name: str, tracking: str = "mlruns", base: Path | None = None) -> tuple[GridTracker, str, Any]:
    """The tracker, experiment id and latest grid run of grid ``name``.

    Raises:
        RaygridError: The store has no grid of that name.
    """
    target = resolve_tracking(tracking, base)
    check_tracking(target)
    tracker = GridTracker(target)
    experiment_id = tracker.experiment_id(name, create=False)
    parent = tracker.latest_grid_run(experiment_id) if experiment_id else None
    if experiment_id is None or parent is None:
        raise RaygridError(f"no grid named {name!r} in {target.uri}; run one with raygrid run FILE, or pass --tracking")
    return tracker, experiment_id, parent


def grid_status(name: str, tracking: str = "mlruns", base: Path | None = None) -> list[dict[str, Any]]:
    """Each trial of grid ``name``'s latest session: name, MLflow status, key metrics."""
    from raygrid.tracking.store import trial_table

    tracker, experiment_id, parent = latest_session(name, tracking, base)
    runs = sorted(tracker.trial_runs(experiment_id, parent.info.run_id).values(), key=lambda r: r.info.start_time)
    return trial_table(runs, KEY_METRICS)


def resume_grid(
    name: str,
    *,
    tracking: str = "mlruns",
    address: str | None = None,
    progress: ProgressSink | None = None,
    base: Path | None = None,
) -> GridOutcome:
    """Continue the latest session of grid ``name`` from the grid file stored with it.

    Raises:
        RaygridError: No such grid, or its file changed since the session started.
    """
    base = (base or Path.cwd()).resolve()
    tracker, _, parent = latest_session(name, tracking, base)
    target = tracker.target
    document = yaml.safe_load(tracker.grid_yaml(parent.info.run_id))
    # Resume where the session recorded, whatever the current directory.
    document.setdefault("tracking", {})["uri"] = target.uri
    if parent.data.tags.get(STORAGE_TAG):
        document.setdefault("storage", {})["root"] = parent.data.tags[STORAGE_TAG]
    path_tag = parent.data.tags.get(GRID_PATH_TAG)
    path = Path(path_tag) if path_tag else None
    grid = build_grid(document, source=path_tag or name, path=path)
    if path is not None and path.is_file():
        current = load_grid(path, json.loads(parent.data.tags.get(OVERRIDES_TAG, "[]")))
        if current.grid_hash != parent.data.tags.get(GRID_HASH_TAG):
            raise RaygridError(
                f"grid file {path} changed since grid {name!r} started; restore it, or give the changed grid "
                "a new name: and start it with raygrid run"
            )
    return run_grid(grid, address=address, resume=True, progress=progress, base=base)


def _run_trials(
    grid: GridSpec,
    trials: list[TrialSpec],
    runs: dict[str, str],
    graphs: dict[str, StageSpec],
    target: TrackingTarget,
    storage_root: str,
    session: str,
    shape: Any,
    progress: ProgressSink | None,
    stage_broker: _Broker,
    *,
    done: int = 0,
    total: int | None = None,
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """One Tune trial per grid point, sharing stages through the session's broker (killed by the caller)."""
    import ray
    from ray import tune

    from raygrid.grid.resources import default_concurrency
    from raygrid.grid.trainable import run_trial

    retries = grid.settings.retries
    broker, broker_name = stage_broker.actor, stage_broker.name
    payloads = {
        t.name: {
            "run_id": runs[t.name],
            "graph": graphs[t.name],
            "tracking_uri": target.uri,
            "retry_seconds": grid.settings.tracking.retry_seconds,
            "broker": broker_name,
        }
        for t in trials
    }
    # Tune's own state goes under the storage root too (a URI through its pyarrow filesystem).
    if is_uri(storage_root):
        tune_fs, tune_base = filesystem(storage_root)
        tune_storage: dict[str, Any] = {"storage_path": f"{tune_base}/tune", "storage_filesystem": tune_fs}
    else:
        tune_storage = {"storage_path": str(Path(storage_root) / "tune")}
    concurrency = grid.settings.resources.max_concurrent_trials or default_concurrency(shape, len(trials))
    tuner = tune.Tuner(
        tune.with_resources(
            tune.with_parameters(run_trial, payloads=payloads), {"cpu": 0, "memory": COORDINATOR_MEMORY}
        ),
        param_space={"trial": tune.grid_search([t.name for t in trials])},
        tune_config=tune.TuneConfig(
            reuse_actors=True,
            max_concurrent_trials=concurrency,
            trial_name_creator=lambda t: t.config["trial"],
            trial_dirname_creator=lambda t: t.config["trial"],
        ),
        run_config=tune.RunConfig(
            name=f"{grid.name}-{session[:8]}",
            **tune_storage,
            verbose=0,
            callbacks=[_ProgressCallback(done, total or len(trials), progress, broker)] if progress else [],
            # A trial whose process, stage worker or node died starts again, continuing its MLflow run.
            failure_config=tune.FailureConfig(max_failures=retries, fail_fast=False),
        ),
    )
    result_grid = tuner.fit()
    results: dict[str, dict[str, Any]] = {}
    for result in result_grid:
        if result.config:
            failed = bool((result.metrics or {}).get(FAILED_METRIC))
            error = _error_line(result.error) if result.error else ("the trial failed" if failed else None)
            results[result.config["trial"]] = {"error": error}
    return results, ray.get(broker.summary.remote())


def _init_ray(address: str | None, spill: str | None = None) -> bool:
    """Start or join Ray; returns whether this call started it (and so must stop it).

    A Ray started here spills objects that overflow its object store (by default 30%
    of the node's memory) to ``spill`` (a folder under a local storage root, where
    the disk space for the grid's products is), instead of Ray's temporary folder.
    A joined cluster keeps its own spilling settings.
    """
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # No --address: RAY_ADDRESS if set (a cluster's job environment), else a new local Ray;
    # never silently the `ray start` cluster some other user runs on this machine.
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    options: dict[str, Any] = {}
    if address == "local" and spill:
        Path(spill).mkdir(parents=True, exist_ok=True)
        options["object_spilling_directory"] = spill
    try:
        ray.init(
            address=address,
            **options,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=False,
        )
    except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
        where = "a local Ray" if address == "local" else address
        raise RaygridError(f"cannot start or join Ray at {where} ({str(exc).splitlines()[0]}); check --address and that the cluster is up") from None
    return True


class ProgressSink(Protocol):
    """Where the runner reports progress (the CLI's progress bar)."""

    def trial_done(self, done: int, total: int, name: str, status: str) -> None:
        """A trial finished (``status`` FINISHED) or failed; ``done`` of ``total`` are over."""

    def stages(self, done: int, submitted: int, running: Sequence[str]) -> None:
        """Stage tasks: ``done`` of ``submitted`` are over; ``running`` names the others' stages."""


class _ProgressCallback:
    """Tune callback forwarding finished trials, and the broker's stage progress, to a sink."""

    def __new__(cls, done: int, total: int, sink: ProgressSink, broker: Any):
        from ray.tune import Callback

        class Forward(Callback):
            def __init__(self) -> None:
                self.done = done
                self.polled = 0.0

            def on_step_end(self, iteration, trials, **info):
                if time.monotonic() - self.polled < 1.0:
                    return
                self.polled = time.monotonic()
                import ray

                try:
                    state = ray.get(broker.progress.remote(), timeout=2)
                except Exception:  # noqa: BLE001  (progress is best effort)
                    return
                sink.stages(state["done"], state["submitted"], state["running"])

            def on_trial_complete(self, iteration, trials, trial, **info):
                self.done += 1
                failed = (trial.last_result or {}).get(FAILED_METRIC)
                sink.trial_done(self.done, total, trial.config["trial"], "FAILED" if failed else "FINISHED")

            def on_trial_error(self, iteration, trials, trial, **info):
                self.done += 1
                sink.trial_done(self.done, total, trial.config["trial"], "FAILED")

        return Forward()


def _error_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[-1] if text else type(error).__name__)[:500]


def _node_label(tags: dict[str, str]) -> str:
    """``<node id[:8]> (<ip>)`` of the node that produced a trial's final stage, from its run's tags."""
    node, ip = tags.get(NODE_TAG, ""), tags.get(NODE_IP_TAG, "")
    if not node or node == "driver":
        return node
    return f"{node[:8]} ({ip})" if ip else node[:8]
