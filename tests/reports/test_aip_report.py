"""The AIP report from fabricated MLflow sessions: Tables 3 to 6 and 8, skipped tables, example images, the report run."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from raygrid.errors import RaygridError
from raygrid.reports.aip_report import collect_aip_session, fallback_level, table4, table5, table6, table8
from raygrid.reports.report import REPORT_KIND, STUDY_TAG, make_report, open_session
from raygrid.reports.tables import to_markdown
from raygrid.tracking.store import KIND_TAG
from tests.conftest import tiny_grid_document
from tests.reports.fabricate_var import fabricate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAILED = "alexrank-csema-bits4"

#: Cooperative cold-item HR@5 of each ranker.
COOP = {"vbpr": 0.01, "alexrank": 0.02}
#: Adversarial HR@5 of (attack label, defense label), for VBPR; AlexRank's is half of it (but never below coop).
ADV = {
    ("insa_eps8", "none"): 0.10,
    ("insa_eps32", "none"): 0.30,
    ("insa_eps32", "jpeg90"): 0.20,
    ("insa_eps32", "jpeg50"): 0.005,  # JPEG 50 undoes INSA eps 32
    ("insa_eps32", "bits4"): 0.10,  # 4 bits does not
    ("csema", "none"): 0.02,
    ("csema", "jpeg90"): 0.009,  # c-SEMA falls back at the weakest JPEG already
}


#: HR@5 of a cold item given the hook's exact content, by ranker (logged by c-SEMA trials).
HOOK = {"vbpr": 0.004, "alexrank": 0.03}


def aip_fab_document(name: str = "aipfab", **grid_overrides) -> dict:
    """2 rankers x 3 attacks (INSA eps 8 and 32, c-SEMA) x 4 defenses = 24 trials."""
    doc = tiny_grid_document(
        name=name,
        study="aip",
        metrics={},
        aip={"cold_items": 12, "candidates": 40},
        extractor={"name": "smallcnn", "width": 8, "epochs": 1},
    )
    doc["grid"] = {
        "recommender": [{"label": "vbpr", "name": "vbpr", "epochs": 1}, {"label": "alexrank", "name": "alexrank"}],
        "attack": [
            {"label": "insa_eps8", "name": "insa", "eps": 8},
            {"label": "insa_eps32", "name": "insa", "eps": 32},
            {"label": "csema", "name": "csema"},
        ],
        "defense": [
            {"label": "none", "name": "none"},
            {"label": "jpeg90", "name": "jpeg", "quality": 90, "apply_to": "attacked"},
            {"label": "jpeg50", "name": "jpeg", "quality": 50, "apply_to": "attacked"},
            {"label": "bits4", "name": "bit_depth", "bits": 4, "apply_to": "attacked"},
        ],
    }
    doc["grid"].update(grid_overrides)
    return doc


def aip_metrics(trial) -> dict[str, float]:
    """Known per-trial metrics: cooperative HR@5 by ranker, adversarial by attack and defense."""
    ranker, attack, defense = trial.labels["recommender"], trial.labels["attack"], trial.labels.get("defense", "none")
    coop = COOP[ranker]
    adv = ADV.get((attack, defense), ADV.get((attack, "none"), coop))
    if ranker == "alexrank":
        adv = max(adv / 2, coop) if adv > coop else adv
    return {
        "cold_hr_5_cooperative": coop,
        "cold_hr_5_adversarial": adv,
        "delta_cold_hr_5": adv - coop,
        "ttest_p_cold_hr_5": 0.001 if adv > 2 * coop else 0.4,
        "availability_hr_5_adversarial": 0.2 - adv / 10,
        "delta_availability_hr_5": -adv / 10,
        "ttest_p_availability_hr_5": 0.3,
        "prediction_shift": 10 * (adv - coop),
        "ttest_p_prediction_shift": 0.01,
        "cold_hr_10_cooperative": 2 * coop,
        "cold_hr_10_adversarial": 2 * adv,
        **({"hook_hr_5": HOOK[ranker]} if attack == "csema" else {}),
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """A finished 24-trial AIP session (one trial failed, a preview image on INSA's) and a grid without eps or defense axes."""
    folder = tmp_path_factory.mktemp("aipstore")
    uri = f"sqlite:///{folder}/mlflow.db"
    tracker, experiment_id, grid_run_id, _ = fabricate(
        uri, aip_fab_document(), metrics=aip_metrics, status=lambda t: "FAILED" if t.name == FAILED else "FINISHED"
    )
    runs = tracker.trial_runs(experiment_id, grid_run_id)
    preview = folder / "attack" / "preview.png"
    preview.parent.mkdir()
    preview.write_bytes(PNG_MAGIC + b"fabricated")
    tracker.client.log_artifact(runs["vbpr-insa_eps32-none"].info.run_id, str(preview), "attack")
    plain = aip_fab_document(
        "aipplain", attack=[{"label": "insa", "name": "insa"}, {"label": "csema", "name": "csema"}]
    )
    del plain["grid"]["defense"]
    fabricate(uri, plain, metrics=aip_metrics)
    return {"uri": uri, "base": folder}


@pytest.fixture(scope="module")
def session(store):
    return collect_aip_session(open_session("aipfab", store["uri"], store["base"]))


def test_trials_are_placed_by_ranker_attack_kind_eps_and_defense(session):
    assert session.rankers == ["vbpr", "alexrank"]
    assert session.attacks == ["insa", "csema"]
    assert len(session.trials) == 24 and len(session.finished) == 23
    trial = next(t for t in session.trials if t.name == "vbpr-insa_eps8-jpeg50")
    assert (trial.attack, trial.eps, trial.defense, trial.level) == ("insa", 8.0, "jpeg", 50.0)
    assert (
        session.main_eps(session.datasets[0], "insa") == 32.0 and session.main_eps(session.datasets[0], "csema") is None
    )


def test_table4_shows_cooperative_and_adversarial_hr5_at_the_largest_eps_with_daggers(session):
    table = table4(session)
    row = table.row(session.datasets[0], "insa (ε 32)")
    cells = dict(zip([c.csv_name for c in table.columns], row.cells))
    assert cells["vbpr.cold_hr_5_cooperative"].value == pytest.approx(0.01)
    assert cells["vbpr.cold_hr_5_adversarial"].value == pytest.approx(0.30)
    assert table.significant(cells["vbpr.cold_hr_5_adversarial"])
    assert cells["alexrank.cold_hr_5_adversarial"].value == pytest.approx(0.15)
    csema = dict(zip([c.csv_name for c in table.columns], table.row(session.datasets[0], "csema").cells))
    assert not table.significant(csema["vbpr.cold_hr_5_adversarial"])  # 0.02 against 0.01: p 0.4
    assert "insa (ε 8)" not in to_markdown(table)  # eps 8 belongs to Table 6


def test_table4_notes_the_hook_ceiling_of_each_ranker(session):
    notes = [n for n in table4(session).notes if n.startswith("Hook ceiling")]
    assert notes == [
        (f"Hook ceiling, {session.datasets[0]}: HR@5 of a cold item given the hook item's exact content, the most EXPA "
        "(which matches the hook's features) can reach: vbpr 0.0040, alexrank 0.0300.")
    ]


def test_table5_gives_the_change_and_the_ratio(session):
    table = table5(session)
    cells = dict(zip([c.csv_name for c in table.columns], table.row(session.datasets[0], "insa (ε 32)").cells))
    assert cells["vbpr.delta_cold_hr_5"].value == pytest.approx(0.29)
    assert cells["vbpr.ratio_cold_hr_5"].value == pytest.approx(30.0)
    assert cells["alexrank.ratio_cold_hr_5"].value == pytest.approx(7.5)


def test_table6_lists_hr5_by_eps_with_the_cooperative_as_eps_0(session):
    table = table6(session)
    assert [c.label for c in table.columns] == ["ε 0", "ε 8", "ε 32"]
    values = [c.value for c in table.row(session.datasets[0], "vbpr", "insa").cells]
    assert values == pytest.approx([0.01, 0.10, 0.30])
    assert all(r.index[2] == "insa" for r in table.rows)  # c-SEMA has no eps


def test_table8_finds_the_weakest_defense_that_undoes_each_attack(session):
    table, levels = table8(session)
    assert [c.label for c in table.columns] == ["JPEG quality", "bit depth"]
    insa = [c.value for c in table.row(session.datasets[0], "vbpr", "insa (ε 32)").cells]
    assert insa == [50.0, None]  # JPEG 90 keeps the lift, JPEG 50 undoes it; 4 bits never does
    csema = [c.value for c in table.row(session.datasets[0], "vbpr", "csema").cells]
    assert csema[0] == 90.0
    assert any("vbpr insa under bit depth" in note for note in table.notes)
    # AlexRank's c-SEMA never lifts HR@5 (0.02 against 0.02): nothing to undo, so no level either.
    assert [c.value for c in table.row(session.datasets[0], "alexrank", "csema").cells] == [None, None]
    assert any("nothing to undo" in note and "alexrank csema" in note for note in table.notes)
    detail = dict(
        zip([c.csv_name for c in levels.columns], levels.row(session.datasets[0], "vbpr", "insa (ε 32)").cells)
    )
    assert detail["jpeg90.adv_jpeg90"].value == pytest.approx(0.20)
    assert [c.group for c in levels.columns][::2] == ["none", "jpeg90", "jpeg50", "bits4"]


def test_fallback_ignores_unfinished_trials_and_orders_levels_weakest_first(session):
    bits = [t for t in session.trials if t.ranker == "alexrank" and t.attack == "csema" and t.defense == "bit_depth"]
    assert bits[0].status == "FAILED"
    assert fallback_level(bits) == (None, False)
    jpeg = [t for t in session.trials if t.ranker == "vbpr" and t.eps == 32 and t.defense == "jpeg"]
    assert fallback_level(reversed(jpeg)) == (50.0, True)


def test_report_writes_tables_examples_and_a_report_run(store, tmp_path):
    result = make_report("aipfab", tracking=store["uri"], out=tmp_path / "rep", base=store["base"])
    out = result.out
    for key in ("table3", "table4", "table5", "table6", "table8", "table8_levels"):
        for ext in ("md", "csv", "tex"):
            assert (out / f"{key}.{ext}").is_file(), f"{key}.{ext}"
    assert (out / "examples" / "insa.png").read_bytes().startswith(PNG_MAGIC)
    readme = (out / "README.md").read_text()
    assert "examples/insa.png" in readme and "## Table 8" in readme and FAILED in readme
    assert "vbpr: insa 0.0100 -> 0.3000" in readme
    rows = list(csv.DictReader(io.StringIO((out / "trials.csv").read_text())))
    assert len(rows) == 24 and {r["status"] for r in rows} == {"FINISHED", "FAILED"}
    run = open_session("aipfab", store["uri"], store["base"]).tracker.client.get_run(result.run_id)
    assert run.data.tags[KIND_TAG] == REPORT_KIND and run.data.tags[STUDY_TAG] == "aip"
    assert result.n_trials == 24 and result.n_finished == 23


def test_tables_whose_axis_the_grid_lacks_are_skipped_with_one_line(store, tmp_path):
    result = make_report("aipplain", tracking=store["uri"], out=tmp_path / "plain", base=store["base"])
    names = {p.name for p in result.out.iterdir()}
    assert "table4.md" in names and "table6.md" not in names and "table8.md" not in names
    readme = (result.out / "README.md").read_text()
    assert "Table 6 (HR@5 by eps) is skipped: no attack has two eps values on this grid." in readme
    assert "Table 8 (defense level undoing the attack) is skipped" in readme
    assert not (result.out / "examples").exists()  # no preview logged: no example, no error


def test_a_session_without_finished_trials_is_refused(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    fabricate(
        uri,
        aip_fab_document("aipfailed", attack=[{"label": "csema", "name": "csema"}]),
        metrics=aip_metrics,
        status=lambda t: "FAILED",
    )
    with pytest.raises(RaygridError, match="no finished trial") as info:
        make_report("aipfailed", tracking=uri, out=tmp_path / "r", base=Path(tmp_path))
    assert "\n" not in str(info.value)
