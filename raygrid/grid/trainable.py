"""The Tune trainable: one grid point's coordinator.

It holds no CPU of its own: it hands the trial's stage graph (built on the
driver) to the session's broker, waits for the final stage (whose task carries
the trial's resources), logs the outcome to the trial's MLflow run and reports
to Tune. It imports nothing heavy (no torch), so a coordinator process starts quickly.

Failures come in two kinds:

* the trial's own error (a stage raised, the tracking store stayed away): the
  run is marked FAILED with a one-line reason and the trial reports
  ``raygrid_failed`` instead of raising, so Tune does not retry what would fail
  the same way;
* a system failure (this process, a stage's worker or a node died): Tune starts
  the trial again (``retries`` times, see :func:`~raygrid.grid.runner.run_grid`)
  with the same payload, so the retry continues the same MLflow run; logging is
  idempotent, so a metric logged before the crash keeps one value.
"""

from __future__ import annotations

from typing import Any

from raygrid.tracking.store import ATTEMPTS_TAG

__all__ = ["ATTEMPTS_TAG", "FAILED_METRIC", "NODE_IP_TAG", "NODE_TAG", "one_line", "run_trial"]

#: Reported (1.0) by a trial that failed by its own error; the runner reads the reason from MLflow.
FAILED_METRIC = "raygrid_failed"
#: MLflow tags of the node that produced the trial's final stage.
NODE_TAG = "raygrid.node"
NODE_IP_TAG = "raygrid.node_ip"


def run_trial(config: dict[str, Any], payloads: dict[str, dict[str, Any]] | None = None) -> None:
    """Tune function trainable: ``config["trial"]`` names the trial, ``payloads`` come from the driver."""
    import ray
    from ray import tune

    from raygrid.grid.broker import is_system_failure
    from raygrid.tracking.store import GridTracker, TrackingTarget

    assert payloads is not None
    payload = payloads[config["trial"]]
    run_id = payload["run_id"]
    # Ask for the trial's product first: its stages run while MLflow imports here.
    broker = ray.get_actor(payload["broker"])
    request = broker.request_refs.remote(payload["graph"])
    tracker = GridTracker(TrackingTarget(payload["tracking_uri"], None), retry_seconds=payload.get("retry_seconds", 60.0))
    try:
        tracker.count_attempt(run_id)
        tracker.set_status(run_id, "RUNNING")
        value_ref, info_ref = ray.get(request)
        outcome = ray.get(value_ref)
        info = ray.get(info_ref)
        tags = {NODE_TAG: info.get("node", ""), NODE_IP_TAG: info.get("node_ip", "")}
        tracker.log_outcome(run_id, outcome, tags=tags)
        tracker.set_status(run_id, "FINISHED")
    except Exception as exc:
        if is_system_failure(exc):
            raise  # Tune retries the trial, in this same run
        _mark_failed(tracker, run_id, exc)
        tune.report({FAILED_METRIC: 1.0})
        return
    metrics = {k: v for k, v in outcome.metrics.items() if isinstance(v, (int, float))}
    tune.report({**metrics, NODE_TAG: tags[NODE_TAG], NODE_IP_TAG: tags[NODE_IP_TAG]})


def _mark_failed(tracker: Any, run_id: str, exc: BaseException) -> None:
    """Mark the run FAILED with the error's one line; if the store itself is away, leave it to resume."""
    import logging

    try:
        tracker.set_status(run_id, "FAILED", error=one_line(exc))
    except Exception as store_error:  # noqa: BLE001  (the run stays RUNNING: resume re-runs it)
        logging.getLogger(__name__).warning("could not mark run %s FAILED: %s", run_id, one_line(store_error))


def one_line(exc: BaseException) -> str:
    """The original error of a (possibly Ray-wrapped) exception, as ``Type: last line``."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    last = text[-1] if text else ""
    return f"{type(cause).__name__}: {last}"[:500]
