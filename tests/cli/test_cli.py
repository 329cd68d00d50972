"""The command line: each mistake is one line naming the problem and the fix, a non-zero exit, nothing written."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from raygrid.cli import app
from tests.conftest import tiny_grid_document

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.strip()]


def test_validate_lists_every_trial():
    result = invoke("validate", str(ROOT / "experiments" / "demo.yaml"))
    assert result.exit_code == 0, result.output
    assert "demo: 54 trials, all valid" in result.output
    assert "standard-pgd_eps8-vbpr" in result.output and "free_adversarial-none-vbpr" in result.output


def test_a_config_typo_is_one_line_and_exit_2(tmp_path):
    doc = tiny_grid_document()
    doc["recommender"]["epohcs"] = 3
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = invoke("validate", str(path))
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and "recommender.epohcs: unknown key" in lines[0]
    assert "Traceback" not in result.output


def test_a_missing_file_is_one_line_and_exit_2(tmp_path):
    result = invoke("run", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2
    assert "not found" in result.output and len(error_lines(result)) == 1


def test_an_unreachable_tracking_server_stops_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(tiny_grid_document(tracking={"uri": f"http://127.0.0.1:{port}"})))
    result = invoke("run", str(path))
    assert result.exit_code == 2
    assert "unreachable" in result.output and "fix tracking.uri" in result.output
    assert not (tmp_path / ".raygrid").exists()


def test_status_of_an_unknown_grid(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("status", "nothing-here")
    assert result.exit_code == 2 and "no grid named 'nothing-here'" in result.output


def test_list_shows_registered_components():
    result = invoke("list")
    assert result.exit_code == 0
    assert "attack: csema, cw, expa, fgsm, insa, none, pgd, taamr" in result.output and "recommender: alexrank, amr, bprmf, dvbpr, fm, pop, vbpr" in result.output


@pytest.mark.slow
def test_an_impossible_resource_request_is_refused_and_writes_no_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(tiny_grid_document(resources={"trial": {"cpu": 512}})))
    result = invoke("run", str(path))
    assert result.exit_code == 2, result.output
    assert "resources.trial.cpu=512 exceeds the largest node's" in result.output
    from raygrid.tracking.store import GridTracker, resolve_tracking

    tracker = GridTracker(resolve_tracking("mlruns", base=tmp_path))
    assert tracker.experiment_id("tiny", create=False) is None
