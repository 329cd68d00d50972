"""The Tune trainable: one grid point's coordinator.

It holds no CPU of its own: it asks the session's broker for the trial's final
stage (whose task carries the trial's resources), waits, logs the outcome to the
trial's MLflow run and reports to Tune. Every failure marks the run FAILED with
a one-line reason before the trial errors, so resume knows what to re-run.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def run_trial(config: dict[str, Any]) -> None:
    """Tune function trainable; ``config["trial"]`` is the payload built by the driver."""
    import ray
    from ray import tune

    from raygrid.config.schema import trial_model
    from raygrid.config.sections import ResourcesConfig
    from raygrid.studies import STUDIES
    from raygrid.tracking.store import GridTracker, TrackingTarget

    payload = config["trial"]
    target = TrackingTarget(payload["tracking_uri"], None)
    tracker = GridTracker(target)
    run_id = payload["run_id"]
    tracker.set_status(run_id, "RUNNING")
    try:
        trial_config = trial_model().model_validate(payload["config"])
        resources = ResourcesConfig.model_validate(payload["resources"])
        graph = STUDIES[trial_config.study](trial_config, resources)
        broker = ray.get_actor(payload["broker"])
        [ref] = ray.get(broker.request_ref.remote(graph))
        outcome = ray.get(ref)
        tracker.log_trial(run_id, outcome.metrics, outcome.artifacts, tags={f"raygrid.{k}": v for k, v in outcome.info.items()})
    except BaseException as exc:
        tracker.set_status(run_id, "FAILED", error=_one_line(exc))
        raise
    tracker.set_status(run_id, "FINISHED")
    tune.report({k: v for k, v in outcome.metrics.items() if isinstance(v, (int, float))})


def _one_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc  # Ray wraps task errors; show the original
    text = str(cause).strip().splitlines()
    last = text[-1] if text else ""
    return f"{type(cause).__name__}: {last}"[:500]
