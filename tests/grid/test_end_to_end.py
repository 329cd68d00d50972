"""End to end through Ray Tune and MLflow on tiny synthetic data (slow: a minute or two)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raygrid.config.loader import load_grid
from raygrid.grid.runner import resume_grid, run_grid
from raygrid.pipeline import StageCache
from raygrid.studies.var import var_trial_graph
from raygrid.tracking.store import GridTracker, resolve_tracking
from tests.conftest import tiny_grid_document

pytestmark = pytest.mark.slow

TRIALS = ["none", "fgsm_eps8", "pgd_eps8_steps3"]


def write_grid(folder: Path, doc: dict) -> Path:
    path = folder / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def session_runs(folder: Path, name: str):
    tracker = GridTracker(resolve_tracking("mlruns", base=folder))
    experiment = tracker.experiment_id(name, create=False)
    parent = tracker.latest_grid_run(experiment)
    return tracker, parent, tracker.trial_runs(experiment, parent.info.run_id)


def test_grid_runs_tracks_serves_from_cache_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # Fixed categories: with automatic selection a recommender change also re-selects and re-attacks.
    path = write_grid(tmp_path, tiny_grid_document(categories={"origin": "sandal", "target": "running shoe"}))
    grid = load_grid(path)

    first = run_grid(grid)
    assert [row["trial"] for row in first.trials] == TRIALS
    assert first.failed == []
    stages = {row["stage"]: row for row in first.stages}
    # shared products are computed once however many trials need them
    assert {s: stages[s]["computed"] for s in ("dataset", "extractor", "features")} == {
        "dataset": 1,
        "extractor": 1,
        "features": 1,
    }
    assert stages["attack"]["computed"] == 3 and stages["recommender"]["computed"] == 3
    # The upstream starts before the coordinators ask (prefetch); a trial's own product counts once, never as shared.
    assert stages["recommender"]["shared"] == 0
    # The Ray this grid started spills overflowing objects under the storage root.
    assert (tmp_path / ".raygrid" / "ray-spill").is_dir()

    tracker, parent, runs = session_runs(tmp_path, "tiny")
    assert sorted(runs) == sorted(TRIALS)  # exactly one run per grid point
    for name, run in runs.items():
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["raygrid.grid_key"] == name
        assert {"dataset", "extractor", "attack", "recommender", "raygrid.config_hash", "git_commit"} <= set(run.data.tags)
        assert run.data.params["recommender.factors"] == "8"
        for metric in ("recall_20", "ndcg_20", "chr_20", "ncdcg_20", "chr_count_20", "recall_5"):
            assert metric in run.data.metrics
        assert not any("@" in m for m in run.data.metrics)
    attacked = runs["pgd_eps8_steps3"]
    assert attacked.data.metrics["n_attacked"] > 0
    assert 0 <= attacked.data.metrics["success_rate"] <= 1
    assert attacked.data.metrics["feature_loss"] > 0
    assert attacked.data.metrics["linf_realised_max"] <= 8
    artifacts = {a.path for a in tracker.client.list_artifacts(attacked.info.run_id, "attack")}
    assert artifacts == {"attack/preview.png", "attack/realised_distances.csv", "attack/adversarial_images.npz"}
    assert runs["none"].data.metrics["feature_loss"] == 0

    # A second run of the same grid computes nothing: every trial's product is served from the cache.
    second = run_grid(load_grid(path))
    assert second.failed == []
    assert sum(row["computed"] for row in second.stages) == 0
    assert sum(row["cached"] for row in second.stages) == len(TRIALS)
    _, parent2, runs2 = session_runs(tmp_path, "tiny")
    assert parent2.info.run_id != parent.info.run_id
    for name in TRIALS:
        assert runs2[name].info.status == "FINISHED"
        assert runs2[name].data.metrics["chr_20"] == runs[name].data.metrics["chr_20"]

    # Changing only the recommender recomputes only its training and evaluation: Ray tasks load the rest from disk.
    third = run_grid(load_grid(path, ["recommender.epochs=4"]))
    stages = {row["stage"]: row for row in third.stages}
    assert stages["ranking"]["computed"] == 3 and stages["recommender"]["computed"] == 3
    assert sum(row["computed"] for row in third.stages) == 6
    assert stages["attacked_features"]["cached"] == 3

    # Resume re-runs only what did not finish, in the same MLflow run, recomputing a lost product.
    _, parent3, runs3 = session_runs(tmp_path, "tiny")
    broken = runs3["fgsm_eps8"].info.run_id
    tracker.set_status(broken, "FAILED", error="simulated")
    untouched = runs3["none"].info.end_time
    resumed_grid = load_grid(path, ["recommender.epochs=4"])
    lost = StageCache(tmp_path / ".raygrid").path(var_trial_graph(resumed_grid.trial("fgsm_eps8").config))
    lost.unlink()
    resumed = resume_grid("tiny", base=tmp_path)
    assert resumed.skipped == ["none", "pgd_eps8_steps3"]
    assert resumed.failed == []
    assert {row["stage"]: row["computed"] for row in resumed.stages}["recommender"] == 1
    assert lost.is_file()
    _, parent4, runs4 = session_runs(tmp_path, "tiny")
    assert parent4.info.run_id == parent3.info.run_id
    assert sorted(runs4) == sorted(TRIALS)
    assert runs4["fgsm_eps8"].info.run_id == broken and runs4["fgsm_eps8"].info.status == "FINISHED"
    assert runs4["none"].info.end_time == untouched


def test_a_failing_trial_is_recorded_and_the_others_finish(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc = tiny_grid_document(name="broken")
    doc["grid"] = {"categories.origin": ["sandal", "no such category"]}
    outcome = run_grid(load_grid(write_grid(tmp_path, doc)))
    assert outcome.failed == ["nosuchcategory"]
    row = next(r for r in outcome.trials if r["trial"] == "nosuchcategory")
    assert "unknown category 'no such category'" in row["error"]
    _, _, runs = session_runs(tmp_path, "broken")
    assert runs["sandal"].info.status == "FINISHED"
    assert runs["nosuchcategory"].info.status == "FAILED"
    assert "unknown category" in runs["nosuchcategory"].data.tags["raygrid.error"]


def test_resume_refuses_a_changed_grid_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc = tiny_grid_document(name="changed")
    doc["grid"] = {"attack": [{"name": "none"}]}
    path = write_grid(tmp_path, doc)
    run_grid(load_grid(path))
    doc["seed"] = 1
    path.write_text(yaml.safe_dump(doc))
    from raygrid.errors import RaygridError

    with pytest.raises(RaygridError, match="changed since grid 'changed' started"):
        resume_grid("changed", base=tmp_path)
