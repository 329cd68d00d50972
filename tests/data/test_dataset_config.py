"""Dataset configs: ${RAYGRID_DATA_ROOT} in grid files, the shipped experiment files, the
``raygrid data`` command, and the dataset stage (no cache entry on bad input)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import yaml
from fabricate import write_var_layout
from typer.testing import CliRunner

from raygrid.cli import app
from raygrid.config.loader import build_grid, load_grid
from raygrid.errors import ConfigError, DataError
from raygrid.pipeline import StageCache
from raygrid.pipeline.resolve import materialize
from raygrid.pipeline.spec import StageSpec

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _grid_document(path: str) -> dict:
    return {
        "name": "real",
        "data": {"name": "var_layout", "path": path, "image_size": 16},
        "extractor": {"name": "smallcnn"},
        "grid": {"attack": [{"name": "none"}, {"name": "fgsm", "eps": 4}]},
    }


def test_data_root_comes_from_the_argument_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    document = _grid_document("${RAYGRID_DATA_ROOT}/amazon_men")
    monkeypatch.delenv("RAYGRID_DATA_ROOT", raising=False)
    with pytest.raises(ConfigError, match=r"data.path uses \$\{RAYGRID_DATA_ROOT\}, which is not set; pass --data-root"):
        build_grid(document)
    monkeypatch.setenv("RAYGRID_DATA_ROOT", "/from/env")
    assert build_grid(document).trials[0].config.data.path == "/from/env/amazon_men"
    grid = build_grid(document, variables={"RAYGRID_DATA_ROOT": "/from/cli"})
    assert grid.trials[0].config.data.path == "/from/cli/amazon_men"
    # The values used travel with the document: the stored grid resolves alone (resume).
    monkeypatch.delenv("RAYGRID_DATA_ROOT")
    assert grid.document["variables"] == {"RAYGRID_DATA_ROOT": "/from/cli"}
    assert grid.document["data"]["path"] == "${RAYGRID_DATA_ROOT}/amazon_men"
    again = build_grid(grid.document)
    assert again.trials[0].config.data.path == "/from/cli/amazon_men" and again.grid_hash == grid.grid_hash
    # Another data root is another grid; trial names do not depend on it.
    other = build_grid(document, variables={"RAYGRID_DATA_ROOT": "/elsewhere"})
    assert other.grid_hash != grid.grid_hash
    assert [t.name for t in other.trials] == [t.name for t in grid.trials]


@pytest.mark.parametrize("name", ["var_amazon_men", "var_amazon_women", "var_tradesy"])
def test_shipped_var_grids_validate_when_the_root_is_set(name: str, tmp_path: Path) -> None:
    grid = load_grid(ROOT / "experiments" / f"{name}.yaml", variables={"RAYGRID_DATA_ROOT": str(tmp_path)})
    assert len(grid.trials) == 54
    data = grid.trials[0].config.data
    assert data.name == "var_layout" and data.path.startswith(str(tmp_path))
    assert data.k_core == {"var_amazon_men": 5, "var_amazon_women": 10, "var_tradesy": 10}[name]
    assert all(str(tmp_path) not in t.name for t in grid.trials)


@pytest.mark.parametrize("path", sorted((ROOT / "experiments" / "datasets").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_dataset_files_validate(path: Path, tmp_path: Path) -> None:
    from raygrid.data.summary import dataset_configs

    (config,) = dataset_configs(path, variables={"RAYGRID_DATA_ROOT": str(tmp_path)})
    assert config.path.startswith(str(tmp_path))
    if config.name == "dvbpr":
        assert config.cold_items == 1000 and config.validation


def test_cli_data_prints_table1(tmp_path: Path) -> None:
    write_var_layout(tmp_path / "amazon_men")
    dataset_file = tmp_path / "men.yaml"
    dataset_file.write_text(
        yaml.safe_dump({"data": {"name": "var_layout", "path": "${RAYGRID_DATA_ROOT}/amazon_men", "title": "Amazon Men",
                                 "k_core": 2, "image_size": 16, "decode_workers": 1}})
    )
    result = runner.invoke(app, ["data", str(dataset_file), "--data-root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "|U|" in result.output and "Amazon Men" in result.output and "density" in result.output
    assert "0.280556" in result.output  # 202 interactions / (30 users x 24 items)


def test_cli_bad_image_is_one_line_and_exit_2(tmp_path: Path) -> None:
    root = write_var_layout(tmp_path / "amazon_men")
    (root / "original/images/3.jpg").write_bytes(b"GIF89a broken")
    dataset_file = tmp_path / "men.yaml"
    dataset_file.write_text(yaml.safe_dump({"data": {"name": "var_layout", "path": str(root), "image_size": 16}}))
    result = runner.invoke(app, ["data", str(dataset_file)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "original/images/3.jpg (item '3')" in lines[0]


def test_dataset_stage_writes_no_entry_for_bad_input(tmp_path: Path) -> None:
    root = write_var_layout(tmp_path / "amazon_men")
    (root / "original/images/3.jpg").unlink()
    spec = StageSpec("dataset", params={"data": {"name": "var_layout", "path": str(root), "image_size": 16}})
    cache = StageCache(tmp_path / "storage")
    with pytest.raises(DataError, match="missing image"):
        materialize(spec, cache, "cpu", {})
    assert not cache.exists(spec)
    write_var_layout(tmp_path / "fixed")
    spec = StageSpec("dataset", params={"data": {"name": "var_layout", "path": str(tmp_path / "fixed"), "image_size": 64}})
    value, _ = materialize(spec, cache, "cpu", {})
    assert cache.exists(spec) and cache.path(spec).stat().st_size < value.images.nbytes / 10
    assert pickle.loads(pickle.dumps(value)).n_items == 24


def test_cli_data_logs_statistics_to_mlflow(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    write_var_layout(tmp_path / "amazon_men")
    dataset_file = tmp_path / "men.yaml"
    dataset_file.write_text(yaml.safe_dump({"data": {"name": "var_layout", "path": str(tmp_path / "amazon_men"),
                                                     "title": "Amazon Men", "image_size": 16}}))
    store = tmp_path / "mlruns"
    result = runner.invoke(app, ["data", str(dataset_file), "--log", str(store)])
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("datasets").experiment_id])
    assert run.info.run_name == "Amazon Men" and run.info.status == "FINISHED"
    assert run.data.metrics["users"] == 30 and run.data.metrics["items"] == 24
    assert run.data.params["name"] == "var_layout"


def test_resume_restores_the_data_root_of_the_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from raygrid.cli import _restore_variables
    from raygrid.tracking.store import GridTracker, resolve_tracking

    grid = build_grid(_grid_document("${RAYGRID_DATA_ROOT}/amazon_men"), variables={"RAYGRID_DATA_ROOT": "/data/v1"})
    tracker = GridTracker(resolve_tracking(str(tmp_path / "mlruns")))
    experiment_id = tracker.experiment_id(grid.name)
    tracker.start_grid_run(experiment_id, grid_name=grid.name, grid_hash=grid.grid_hash,
                           grid_yaml=yaml.safe_dump(grid.document), path=None)
    monkeypatch.setenv("RAYGRID_DATA_ROOT", "/somewhere/else")
    _restore_variables(grid.name, str(tmp_path / "mlruns"))
    import os

    assert os.environ["RAYGRID_DATA_ROOT"] == "/data/v1"
