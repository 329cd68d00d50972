"""Grid files: strict validation with key paths, Cartesian expansion, trial names, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raygrid.config.loader import axis_label, build_grid, load_grid
from raygrid.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def grid_doc(**extra):
    doc = {
        "name": "g",
        "data": {"name": "synthetic", "size": "tiny"},
        "grid": {"attack": [{"name": "none"}, {"name": "pgd", "eps": 8}], "recommender.epochs": [1, 2]},
    }
    doc.update(extra)
    return doc


def test_demo_grid_expands_to_extractors_x_attacks_x_recommender():
    grid = load_grid(ROOT / "experiments" / "demo.yaml")
    assert grid.name == "demo"
    attacks = ["none", "fgsm_eps4", "fgsm_eps8", "pgd_eps4", "pgd_eps8", "cw"]
    recommenders = ["fm", "vbpr", "amr"]  # the axis values' labels
    assert [t.name for t in grid.trials] == [
        f"{training}-{attack}-{rec}"
        for training in ("standard", "adversarial", "free_adversarial")
        for attack in attacks
        for rec in recommenders
    ]
    assert grid.trial("standard-none-fm").config.recommender.name == "fm"
    pgd8 = grid.trial("free_adversarial-pgd_eps8-vbpr").config
    assert pgd8.attack.name == "pgd" and pgd8.attack.eps == 8 and pgd8.attack.steps == 10
    assert pgd8.extractor.training == "free_adversarial" and pgd8.extractor.replays == 4
    assert len(grid.trials) == 54  # the VAR study's 3 extractors x 6 attacks x 3 recommenders


def test_cartesian_product_in_axis_order_with_whole_section_replacement():
    grid = build_grid(grid_doc(attack={"name": "pgd", "eps": 4, "steps": 3}))
    assert [t.name for t in grid.trials] == ["none-1", "none-2", "pgd_eps8-1", "pgd_eps8-2"]
    # an axis value that is a section replaces the section: steps does not leak from the base
    assert grid.trial("pgd_eps8-1").config.attack.steps == 10
    assert grid.trial("none-2").config.recommender.epochs == 2
    assert grid.trial("none-2").axes == {"attack": {"name": "none"}, "recommender.epochs": 2}


def test_a_labelled_axis_value_names_the_trial_and_is_not_a_setting():
    doc = grid_doc()
    doc["grid"]["attack"] = [{"label": "clean", "name": "none"}, {"label": "strong pgd", "name": "pgd", "eps": 8}]
    grid = build_grid(doc)
    assert [t.name for t in grid.trials] == ["clean-1", "clean-2", "strongpgd-1", "strongpgd-2"]
    assert grid.trial("strongpgd-1").config.attack.eps == 8
    assert grid.trial("clean-1").axes["attack"] == {"name": "none"}  # the label is not part of the setting
    doc["grid"]["attack"] = [{"label": "/", "name": "none"}]
    with pytest.raises(ConfigError, match="grid axis 'attack': label '/' gives no name"):
        build_grid(doc)


def test_unknown_key_names_its_path():
    with pytest.raises(ConfigError, match=r"recommender\.factrs: unknown key"):
        build_grid(grid_doc(recommender={"name": "vbpr", "factrs": 3}))


def test_out_of_range_value_names_path_and_value():
    doc = grid_doc()
    doc["grid"]["attack"] = [{"name": "fgsm", "eps": 300}]
    with pytest.raises(ConfigError, match=r"trial 'fgsm_eps300-1': attack\.eps: .*255 \(got 300\)"):
        build_grid(doc)


def test_unknown_component_lists_the_choices():
    with pytest.raises(ConfigError, match=r"attack: unknown component 'pgdd'; choose one of: .*'pgd'"):
        build_grid({"name": "g", "attack": {"name": "pgdd"}})


def test_grid_axis_must_be_a_trial_setting_and_non_empty():
    with pytest.raises(ConfigError, match="'resources' is not a trial setting"):
        build_grid({"name": "g", "grid": {"resources.trial.cpu": [1, 2]}})
    with pytest.raises(ConfigError, match="has no values"):
        build_grid({"name": "g", "grid": {"seed": []}})


def test_run_settings_are_validated_too():
    with pytest.raises(ConfigError, match=r"resources\.trial\.gpu: .*greater than or equal to 0"):
        build_grid({"name": "g", "resources": {"trial": {"gpu": -1}}})


def test_overrides_beat_the_file_and_axes_cannot_be_overridden_silently():
    grid = build_grid(grid_doc(), overrides=["seed=7", "recommender.factors=8"])
    assert {t.config.seed for t in grid.trials} == {7}
    assert {t.config.recommender.factors for t in grid.trials} == {8}
    with pytest.raises(ConfigError, match="grid axis 'attack'"):
        build_grid(grid_doc(), overrides=["attack.eps=4"])
    with pytest.raises(ConfigError, match="section.key=value"):
        build_grid(grid_doc(), overrides=["seed"])


def test_duplicate_trial_names_are_refused():
    doc = {"name": "g", "grid": {"seed": [1, 1]}}
    with pytest.raises(ConfigError, match="both named '1'"):
        build_grid(doc)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_grid(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngrid: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_grid(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_grid(scalar)


def test_name_defaults_to_file_stem_and_hash_tracks_content(tmp_path):
    path = tmp_path / "my grid.yaml"
    path.write_text(yaml.safe_dump({"data": {"size": "tiny"}}))
    first = load_grid(path)
    assert first.name == "my_grid" and len(first.trials) == 1
    path.write_text(yaml.safe_dump({"data": {"size": "tiny"}, "seed": 1}))
    assert load_grid(path).grid_hash != first.grid_hash


def test_config_hash_changes_with_any_setting():
    a = build_grid({"name": "g"}).trials[0]
    b = build_grid({"name": "g", "recommender": {"epochs": 3}}).trials[0]
    assert a.config_hash != b.config_hash


@pytest.mark.parametrize(
    ("value", "label"),
    [({"name": "pgd", "eps": 8}, "pgd_eps8"), ({"name": "pgd", "eps": 2.5}, "pgd_eps2.5"), ("running shoe", "runningshoe"), (4.0, "4")],
)
def test_axis_labels_are_short_and_path_safe(value, label):
    assert axis_label(value) == label
