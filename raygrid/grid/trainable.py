"""The Tune trainable: one grid point's coordinator.

It holds no CPU of its own: it hands the trial's stage graph (built on the
driver) to the session's broker, waits for the final stage (whose task carries
the trial's resources), logs the outcome to the trial's MLflow run and reports
to Tune. Every failure marks the run FAILED with a one-line reason before the
trial errors, so resume knows what to re-run. It imports nothing heavy (no
torch), so a coordinator process starts quickly.
"""

from __future__ import annotations

from typing import Any


def run_trial(config: dict[str, Any], payloads: dict[str, dict[str, Any]] | None = None) -> None:
    """Tune function trainable: ``config["trial"]`` names the trial, ``payloads`` come from the driver."""
    import ray
    from ray import tune

    from raygrid.tracking.store import GridTracker, TrackingTarget

    assert payloads is not None
    payload = payloads[config["trial"]]
    run_id = payload["run_id"]
    # Ask for the trial's product first: its stages run while MLflow imports here.
    broker = ray.get_actor(payload["broker"])
    request = broker.request_ref.remote(payload["graph"])
    tracker = GridTracker(TrackingTarget(payload["tracking_uri"], None))
    tracker.set_status(run_id, "RUNNING")
    try:
        [ref] = ray.get(request)
        outcome = ray.get(ref)
        tracker.log_outcome(run_id, outcome)
    except BaseException as exc:
        tracker.set_status(run_id, "FAILED", error=one_line(exc))
        raise
    tracker.set_status(run_id, "FINISHED")
    tune.report({k: v for k, v in outcome.metrics.items() if isinstance(v, (int, float))})


def one_line(exc: BaseException) -> str:
    """The original error of a (possibly Ray-wrapped) exception, as ``Type: last line``."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    last = text[-1] if text else ""
    return f"{type(cause).__name__}: {last}"[:500]
