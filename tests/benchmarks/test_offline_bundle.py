"""The offline bundle for a GPU machine without internet: what it packs (no downloads here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "offline_bundle.py"


@pytest.fixture(scope="module")
def bundle():
    spec = importlib.util.spec_from_file_location("offline_bundle", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_closure_holds_what_a_grid_imports_and_no_test_tools(bundle):
    packages = bundle.closure("raygrid", "3.12")
    for name in ("ray", "mlflow", "lightfm-next", "torch", "pydantic", "sqlalchemy", "tensorboardx"):
        assert name in packages, name  # tensorboardx: only through ray's `tune` extra
    assert not {"pytest", "moto", "hypothesis", "cornac", "raygrid"} & set(packages)
    import ray

    assert packages["ray"] == ray.__version__  # this environment's versions, the ones CI tests


def test_packages_the_image_has_are_left_out_with_their_requirements(bundle, tmp_path):
    have = tmp_path / "have.txt"
    have.write_text("# the image\ntorch==2.11.0\nMLflow\n")
    assert bundle.read_have(have) == {"torch", "mlflow"}
    packages = bundle.closure("raygrid", "3.12", bundle.read_have(have))
    assert "torch" not in packages and "mlflow" not in packages
    # Reached only through MLflow and torch: their image brings them.
    assert "alembic" not in packages and "sympy" not in packages
    assert "ray" in packages


def test_a_missing_have_file_is_one_line_and_exit_2(bundle, tmp_path, capsys):
    assert bundle.main(["--have", str(tmp_path / "nope.txt"), "--list"]) == 2
    assert "--have file" in capsys.readouterr().err


def test_included_packages_are_packed_even_when_the_image_has_them(bundle, tmp_path, capsys):
    have = tmp_path / "have.txt"
    have.write_text("typing-extensions\n")
    assert bundle.main(["--have", str(have), "--list"]) == 0
    assert "typing-extensions==" in capsys.readouterr().out  # the default --include
    assert bundle.main(["--have", str(have), "--list", "--include", "no-such-package"]) == 2
    assert "--include no-such-package: not installed" in capsys.readouterr().err
