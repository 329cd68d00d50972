"""MLflow tracking for grids.

Layout in MLflow:

* one **experiment** per grid (its ``name``);
* one **grid run** (parent) per ``raygrid run``: tagged ``raygrid.kind=grid``,
  holding the resolved grid file as ``grid.yaml`` and the stage summary;
* one **trial run** (child, nested under the grid run) per grid point, named
  after the trial, tagged with dataset, extractor, attack, recommender, grid key,
  config hash and git commit. The driver creates every trial run before any
  worker logs, so resume finds each trial's run by its grid key and there is
  exactly one run per grid point.

Metric names never contain '@' (MLflow rejects it): ``chr_20``, ``recall_50``.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from raygrid.errors import TrackingError

log = logging.getLogger(__name__)

T = TypeVar("T")

KIND_TAG = "raygrid.kind"
GRID_TAG = "raygrid.grid"
GRID_HASH_TAG = "raygrid.grid_hash"
GRID_PATH_TAG = "raygrid.grid_path"
GRID_KEY_TAG = "raygrid.grid_key"
STORAGE_TAG = "raygrid.storage_root"
OVERRIDES_TAG = "raygrid.overrides"
CONFIG_HASH_TAG = "raygrid.config_hash"
#: How many times a trial's coordinator started on its run (retries and resumes included).
ATTEMPTS_TAG = "raygrid.attempts"
PARENT_TAG = "mlflow.parentRunId"
MAX_PARAM_LENGTH = 6000


@dataclass(frozen=True)
class TrackingTarget:
    """A resolved MLflow location.

    Attributes:
        uri: The tracking URI handed to MLflow (absolute ``sqlite:///`` or ``http(s)://``).
        artifact_root: Local folder for artifacts of a SQLite store; ``None`` for a
            server, which decides (and proxies) artifact storage itself.
        ui_command: The command that opens the MLflow UI on this store.
    """

    uri: str
    artifact_root: Path | None

    @property
    def ui_command(self) -> str:
        """Shell command that opens the MLflow UI on these results."""
        if self.artifact_root is None:
            return f"open {self.uri} in a browser"
        return f"raygrid ui --tracking {self.artifact_root.parent}"

    @property
    def is_server(self) -> bool:
        """Whether the target is an ``http(s)://`` tracking server."""
        return self.uri.startswith(("http://", "https://"))


def resolve_tracking(uri: str, base: Path | None = None) -> TrackingTarget:
    """Turn the config's ``tracking.uri`` into an absolute MLflow target.

    A folder (the default ``mlruns``) becomes ``sqlite:///<abs folder>/mlflow.db``
    with artifacts in ``<abs folder>/artifacts``: MLflow 3 refuses the plain
    file store, and a relative SQLite URI breaks as soon as a worker starts in
    another directory.
    """
    base = (base or Path.cwd()).resolve()
    if uri.startswith(("http://", "https://")):
        return TrackingTarget(uri.rstrip("/"), None)
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        db = db if db.is_absolute() else base / db
        return TrackingTarget(f"sqlite:///{db}", db.parent / "artifacts")
    if "://" in uri or uri.startswith("file:"):
        raise TrackingError(
            f"tracking.uri {uri!r} is not supported; use a folder (e.g. mlruns), sqlite:///path/mlflow.db or http://host:5000"
        )
    folder = Path(uri).expanduser()
    folder = folder if folder.is_absolute() else base / folder
    return TrackingTarget(f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts")


def check_tracking(target: TrackingTarget, timeout: float = 5.0) -> None:
    """Fail fast, with one clear line, when the tracking store cannot be used.

    Raises:
        TrackingError: The server does not answer, or the local folder is not writable.
    """
    if target.is_server:
        url = f"{target.uri}/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                if response.status != 200:
                    raise TrackingError(f"MLflow server {target.uri} answered {response.status} on /health; check the server")
        except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(
                f"MLflow tracking server {target.uri} is unreachable ({reason}); start it or fix tracking.uri"
            ) from None
        return
    assert target.artifact_root is not None
    folder = target.artifact_root.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise TrackingError(f"cannot write the MLflow store in {folder} ({exc.strerror}); choose another tracking.uri") from None


#: Error texts of a store that may answer again: SQLite locks, a server restarting or overloaded.
TRANSIENT = (
    "locked",
    "busy",
    "timed out",
    "timeout",
    "connection",
    "temporarily",
    "max retries exceeded",
    "remote end closed",
    "502",
    "503",
    "504",
)

#: How long a tracking call is retried by default before the error is raised (seconds).
RETRY_SECONDS = 60.0

#: MLflow's own HTTP retries (7 retries, backoff factor 2: minutes per call) would hide a
#: server outage from :func:`retry`'s bound, and would re-send a request the server may
#: already have applied (a second run for one grid point): every retry goes through
#: :func:`retry`, which looks for a run before creating it again.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` looks like a store that may answer again (lock, outage), not a refused request."""
    text = str(exc).lower()
    return isinstance(exc, (ConnectionError, TimeoutError)) or any(s in text for s in TRANSIENT)


def retry(
    fn: Callable[[], T],
    *,
    what: str,
    seconds: float = RETRY_SECONDS,
    first_delay: float = 0.2,
    max_delay: float = 8.0,
    store: str = "the MLflow tracking store",
) -> T:
    """Call ``fn``, retrying transient store errors with exponential backoff for at most ``seconds``.

    A SQLite lock or a tracking server that restarts costs a few retries; a server
    that stays away for longer than ``seconds`` ends in one clear error, so the
    trial (or grid) fails instead of hanging.

    Raises:
        TrackingError: The store kept failing transiently for ``seconds``.
        Exception: Any non-transient error of ``fn``, at once.
    """
    deadline = time.monotonic() + seconds
    delay = first_delay
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                raise TrackingError(
                    f"{store} did not answer for {seconds:g} s while {what} ({first}); "
                    "check that it is up, then run raygrid resume NAME"
                ) from exc
            wait = min(delay, max_delay, left)
            log.warning("%s failed (%s); retrying in %.1fs", what, str(exc).splitlines()[0][:200] if str(exc) else exc, wait)
            time.sleep(wait)
            delay *= 2


def git_commit(path: Path | None = None) -> str:
    """The git commit of the working tree at ``path`` (``unknown`` outside a repository)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path or Path.cwd(), capture_output=True, text=True, timeout=5, check=False
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"attack": {"eps": 8}}`` -> ``{"attack.eps": "8"}``: MLflow params from a nested config."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:MAX_PARAM_LENGTH]
    return out


def metric_name(name: str) -> str:
    """An MLflow-safe metric name (no '@')."""
    return name.replace("@", "_")


class GridTracker:
    """Creates and finds grid and trial runs; logs trial results.

    The driver uses every method; a worker needs only :meth:`log_trial` and
    :meth:`set_status` (which is all a worker talking to a tracking server does).

    Args:
        target: Where MLflow lives.
    """

    def __init__(self, target: TrackingTarget, *, retry_seconds: float = RETRY_SECONDS) -> None:
        import os

        if target.is_server:
            for name, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(name, value)
        from mlflow import MlflowClient

        self.target = target
        self.retry_seconds = retry_seconds
        self.client = MlflowClient(tracking_uri=target.uri)

    def _retry(self, fn: Callable[[], T], what: str) -> T:
        store = f"MLflow tracking server {self.target.uri}" if self.target.is_server else f"MLflow store {self.target.uri}"
        return retry(fn, what=what, seconds=self.retry_seconds, store=store)

    # ----------------------------------------------------------------- driver side

    def experiment_id(self, name: str, *, create: bool = True) -> str | None:
        """The id of experiment ``name``, created (with its artifact folder) if asked."""
        experiment = self._retry(lambda: self.client.get_experiment_by_name(name), "finding the experiment")
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                raise TrackingError(
                    f"MLflow experiment {name!r} is deleted; restore it in the UI or rename the grid"
                )
            return experiment.experiment_id
        if not create:
            return None
        location = None
        if self.target.artifact_root is not None:
            location = (self.target.artifact_root / name).as_uri()
        # Opens the MLflow 3 UI on the runs table (params, metrics, artifacts), not its GenAI views.
        tags = {"mlflow.experimentKind": "custom_model_development"}
        return self._retry(
            lambda: self.client.create_experiment(name, artifact_location=location, tags=tags),
            "creating the experiment",
        )

    def start_grid_run(
        self,
        experiment_id: str,
        *,
        grid_name: str,
        grid_hash: str,
        grid_yaml: str,
        path: str | None,
        storage_root: str | None = None,
        overrides: tuple[str, ...] = (),
    ) -> str:
        """Create the parent run of a grid session; stores the resolved grid file as ``grid.yaml``."""
        import json

        tags = {KIND_TAG: "grid", GRID_TAG: grid_name, GRID_HASH_TAG: grid_hash, "git_commit": git_commit()}
        tags[OVERRIDES_TAG] = json.dumps(list(overrides))
        if storage_root:
            tags[STORAGE_TAG] = storage_root
        if path:
            tags[GRID_PATH_TAG] = path
        run = self._retry(
            lambda: self.client.create_run(experiment_id, run_name=f"{grid_name}-{time.strftime('%Y%m%d-%H%M%S')}", tags=tags),
            "creating the grid run",
        )
        self._retry(lambda: self.client.log_text(run.info.run_id, grid_yaml, "grid.yaml"), "storing grid.yaml")
        return run.info.run_id

    def create_trial_run(self, experiment_id: str, parent_id: str, *, name: str, tags: Mapping[str, str], params: Mapping[str, str]) -> str:
        """Create one trial's run under ``parent_id``, with its params and tags."""
        from mlflow.entities import Param

        all_tags = {PARENT_TAG: parent_id, KIND_TAG: "trial", GRID_KEY_TAG: name, **tags}
        tried = False

        def create() -> Any:
            # A retried create may follow one the store applied but never confirmed (a timeout):
            # look for it first, so a grid point never gets two runs.
            nonlocal tried
            if tried:
                found = self.trial_runs(experiment_id, parent_id, key=name)
                if found:
                    return next(iter(found.values()))
            tried = True
            return self.client.create_run(experiment_id, run_name=name, tags=all_tags)

        run = self._retry(create, "creating a trial run")
        run_id = run.info.run_id
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self._retry(lambda c=items[i : i + 100]: self.client.log_batch(run_id, params=c), "logging params")
        self._retry(lambda: self.client.update_run(run_id, status="SCHEDULED"), "scheduling the run")
        return run_id

    def latest_grid_run(self, experiment_id: str) -> Any | None:
        """The most recent grid (parent) run of the experiment, or ``None``."""
        runs = self._retry(
            lambda: self.client.search_runs(
                [experiment_id], filter_string=f"tags.`{KIND_TAG}` = 'grid'", order_by=["attributes.start_time DESC"], max_results=1
            ),
            "finding the grid run",
        )
        return runs[0] if runs else None

    def trial_runs(self, experiment_id: str, parent_id: str, *, key: str | None = None) -> dict[str, Any]:
        """The trial runs of a grid session (or its run of grid key ``key``), by grid key."""
        where = f"tags.`{PARENT_TAG}` = '{parent_id}'"
        if key is not None:
            where += f" and tags.`{GRID_KEY_TAG}` = '{key}'"
        runs = self._retry(
            lambda: self.client.search_runs([experiment_id], filter_string=where, max_results=5000), "finding the trial runs"
        )
        return {r.data.tags.get(GRID_KEY_TAG, r.info.run_name): r for r in runs}

    def grid_yaml(self, run_id: str) -> str:
        """The resolved grid file stored with a grid run."""
        from mlflow.artifacts import download_artifacts

        with tempfile.TemporaryDirectory() as tmp:
            path = self._retry(
                lambda: download_artifacts(run_id=run_id, artifact_path="grid.yaml", dst_path=tmp, tracking_uri=self.target.uri),
                "reading grid.yaml",
            )
            return Path(path).read_text()

    def log_table(self, run_id: str, rows: list[dict[str, Any]], artifact_file: str) -> None:
        """Log a list of dicts as a JSON artifact (the stage summary, the trial table)."""
        import json

        text = json.dumps(rows, indent=2, default=str)
        self._retry(lambda: self.client.log_text(run_id, text, artifact_file), f"storing {artifact_file}")

    # ----------------------------------------------------------------- worker side

    def set_status(self, run_id: str, status: str, *, error: str | None = None) -> None:
        """Mark a run SCHEDULED, RUNNING, FINISHED or FAILED (with the error's one-line summary)."""
        if error:
            self._retry(lambda: self.client.set_tag(run_id, "raygrid.error", error[:5000]), "tagging the error")
        if status in ("RUNNING", "SCHEDULED"):
            self._retry(lambda: self.client.update_run(run_id, status=status), f"marking the run {status}")
        else:
            self._retry(lambda: self.client.set_terminated(run_id, status=status), "closing the run")

    def count_attempt(self, run_id: str) -> int:
        """Add one to the run's :data:`ATTEMPTS_TAG` and return it (1 for a trial's first start)."""
        run = self._retry(lambda: self.client.get_run(run_id), "reading the run")
        attempt = int(run.data.tags.get(ATTEMPTS_TAG, "0") or 0) + 1
        self._retry(lambda: self.client.set_tag(run_id, ATTEMPTS_TAG, str(attempt)), "counting the attempt")
        return attempt

    def log_outcome(self, run_id: str, outcome: Any, tags: Mapping[str, str] | None = None) -> None:
        """Log a trial's outcome (a :class:`~raygrid.pipeline.outcome.TrialOutcome`): metrics, artifacts, info tags.

        Idempotent: a metric the run already has (an earlier attempt of the trial,
        killed after logging it) is not logged again, so every metric keeps one value.
        """
        all_tags = {f"raygrid.{k}": v for k, v in outcome.info.items()}
        all_tags.update(tags or {})
        self.log_trial(run_id, outcome.metrics, outcome.artifacts, tags=all_tags, skip_logged=True)

    def logged_metrics(self, run_id: str) -> dict[str, float]:
        """The latest value of every metric run ``run_id`` has."""
        return dict(self._retry(lambda: self.client.get_run(run_id), "reading the run").data.metrics)

    def log_trial(
        self,
        run_id: str,
        metrics: Mapping[str, float],
        artifacts: Mapping[str, bytes],
        tags: Mapping[str, str] | None = None,
        *,
        skip_logged: bool = False,
    ) -> None:
        """Log a trial's metrics (one batch) and artifacts (by relative path).

        With ``skip_logged``, metrics the run already has are left out, so logging
        the same outcome again (a retried or resumed trial) adds nothing to its
        metric histories. Retries within one call reuse one timestamp, which the
        store de-duplicates.
        """
        import math

        from mlflow.entities import Metric, RunTag

        present = self.logged_metrics(run_id) if skip_logged else {}
        now = int(time.time() * 1000)
        items = [
            Metric(metric_name(k), float(v), now, 0)
            for k, v in metrics.items()
            if v is not None and not (isinstance(v, float) and math.isnan(v)) and metric_name(k) not in present
        ]
        tag_items = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        for i in range(0, max(len(items), 1), 500):
            chunk, chunk_tags = items[i : i + 500], (tag_items if i == 0 else [])
            self._retry(lambda c=chunk, t=chunk_tags: self.client.log_batch(run_id, metrics=c, tags=t), "logging metrics")
        if artifacts:
            with tempfile.TemporaryDirectory() as tmp:
                for relative, payload in artifacts.items():
                    file = Path(tmp) / relative
                    file.parent.mkdir(parents=True, exist_ok=True)
                    file.write_bytes(payload)
                self._retry(lambda: self.client.log_artifacts(run_id, tmp), "logging artifacts")


def trial_table(runs: Iterable[Any], keys: Iterable[str]) -> list[dict[str, Any]]:
    """Rows of trial name, state and the chosen metrics, from MLflow runs."""
    rows = []
    for run in runs:
        row = {"trial": run.data.tags.get(GRID_KEY_TAG, run.info.run_name), "status": run.info.status}
        for key in keys:
            row[key] = run.data.metrics.get(key)
        rows.append(row)
    return rows
