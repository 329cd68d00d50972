"""MLflow store resolution, reachability checks and the run layout of a grid."""

from __future__ import annotations

import socket

import pytest

from raygrid.errors import TrackingError
from raygrid.tracking.store import GridTracker, check_tracking, flatten, resolve_tracking


def test_a_folder_becomes_an_absolute_sqlite_store(tmp_path):
    target = resolve_tracking("mlruns", base=tmp_path)
    assert target.uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert target.artifact_root == tmp_path / "mlruns" / "artifacts"
    relative_sqlite = resolve_tracking("sqlite:///db/m.db", base=tmp_path)
    assert relative_sqlite.uri == f"sqlite:///{tmp_path / 'db' / 'm.db'}"
    assert resolve_tracking("http://host:5000/").uri == "http://host:5000"


def test_unsupported_schemes_are_refused():
    with pytest.raises(TrackingError, match="not supported"):
        resolve_tracking("file:///tmp/mlruns")


def test_an_unreachable_server_is_one_clear_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TrackingError, match=rf"127.0.0.1:{port} is unreachable.*start it or fix tracking.uri"):
        check_tracking(resolve_tracking(f"http://127.0.0.1:{port}"), timeout=2)


def test_an_unwritable_folder_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TrackingError, match="cannot write the MLflow store"):
        check_tracking(resolve_tracking(str(blocker / "mlruns")))


def test_flatten_gives_dotted_params():
    assert flatten({"attack": {"name": "pgd", "eps": 8}, "seed": 0}) == {"attack.name": "pgd", "attack.eps": "8", "seed": "0"}


def test_grid_and_trial_runs_are_nested_and_found_by_grid_key(tmp_path):
    target = resolve_tracking(str(tmp_path / "mlruns"))
    check_tracking(target)
    tracker = GridTracker(target)
    experiment = tracker.experiment_id("g")
    assert tracker.experiment_id("g") == experiment
    parent = tracker.start_grid_run(experiment, grid_name="g", grid_hash="h", grid_yaml="name: g\n", path=None)
    run = tracker.create_trial_run(experiment, parent, name="pgd_eps8", tags={"attack": "pgd_eps8"}, params={"attack.eps": "8"})
    tracker.log_trial(run, {"chr_20": 0.25, "skipped": float("nan")}, {"attack/preview.png": b"png"})
    tracker.set_status(run, "FINISHED")
    found = tracker.trial_runs(experiment, parent)
    assert list(found) == ["pgd_eps8"]
    stored = found["pgd_eps8"]
    assert stored.info.status == "FINISHED"
    assert stored.data.metrics == {"chr_20": 0.25}
    assert stored.data.params["attack.eps"] == "8"
    assert tracker.latest_grid_run(experiment).info.run_id == parent
    assert tracker.grid_yaml(parent) == "name: g\n"
    artifacts = [a.path for a in tracker.client.list_artifacts(run, "attack")]
    assert artifacts == ["attack/preview.png"]
