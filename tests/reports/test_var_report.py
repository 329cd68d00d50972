"""The VAR report from fabricated MLflow sessions: table layout and values, marks, files, plots, the report run."""

from __future__ import annotations

import csv
import io
import math
import socket
from pathlib import Path

import pytest
import yaml
from scipy import stats
from typer.testing import CliRunner

from raygrid.errors import RaygridError, TrackingError
from raygrid.grid.runner import GridOutcome, grid_status, latest_session
from raygrid.reports import var_plots, var_report
from raygrid.reports.report import REPORT_KIND, REPORT_OF_TAG, make_report, open_session
from raygrid.reports.tables import latex_escape, to_markdown
from raygrid.reports.var_report import (
    TrialRecord,
    VarSession,
    collect_var_session,
    correlations,
    table3,
    table4,
    table5,
)
from raygrid.tracking.store import GridTracker, resolve_tracking
from tests.conftest import tiny_grid_document
from tests.reports.fabricate_var import ORIGIN, TARGET, fabricate, known_metrics, var_document

FAILED = "adversarial-pgd_eps8-vbpr"
DATASET = "synthetic_sizetiny"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def multi_metrics(trial) -> dict[str, float]:
    """Two datasets: the second's attacks move CHR@20 twice as much."""
    scale = {"men": 1.0, "women": 2.0}[trial.labels["data"]]
    values = known_metrics("standard", trial.labels["attack"], "vbpr")
    values["chr_20"] = 0.05 + scale * 0.01 * values["feature_loss"]
    return values


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """One SQLite store with a finished 12-trial grid (one trial failed), a two-dataset grid and a stalled grid."""
    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder}/mlflow.db"
    tracker, experiment_id, grid_run_id, grid = fabricate(
        uri, var_document("fab"), status=lambda t: "FAILED" if t.name == FAILED else "FINISHED"
    )
    multi = tiny_grid_document(name="multi", categories={"origin": ORIGIN, "target": TARGET})
    multi["metrics"] = {"cutoffs": [20, 50]}
    multi["grid"] = {
        "data": [
            {"label": "men", "name": "synthetic", "size": "tiny"},
            {"label": "women", "name": "synthetic", "size": "tiny"},
        ],
        "attack": [{"name": "none"}, {"name": "fgsm", "eps": 8}, {"name": "pgd", "eps": 8}],
    }
    fabricate(uri, multi, metrics=multi_metrics)
    fabricate(uri, tiny_grid_document(name="stalled"), status=lambda t: "SCHEDULED")
    report = make_report("fab", tracking=uri, out=folder / "report")
    return {
        "uri": uri,
        "folder": folder,
        "tracker": tracker,
        "experiment_id": experiment_id,
        "grid_run_id": grid_run_id,
        "grid": grid,
        "report": report,
    }


@pytest.fixture(scope="module")
def fab(store) -> VarSession:
    return collect_var_session(open_session("fab", store["uri"]))


# --------------------------------------------------------------------------- tables


def test_trials_are_placed_in_grid_order(fab):
    assert fab.datasets == [DATASET]
    assert fab.extractors == ["standard", "adversarial"]
    assert fab.attacks == ["none", "fgsm_eps8", "pgd_eps8"]
    assert fab.recommenders == ["fm", "vbpr"]
    assert fab.setting_axes == [] and fab.settings == [()]
    assert [t.status for t in fab.trials].count("FAILED") == 1
    assert fab.categories() == {DATASET: [(ORIGIN, TARGET)]}


def test_without_a_valid_grid_file_the_run_tags_place_the_trials(store, fab):
    session = open_session("fab", store["uri"])
    session.grid = None  # as when the stored grid file no longer validates
    s = collect_var_session(session)
    assert (s.datasets, s.extractors, s.attacks, s.recommenders) == (
        fab.datasets,
        fab.extractors,
        fab.attacks,
        fab.recommenders,
    )
    assert [t.name for t in s.trials] == [t.name for t in fab.trials]
    assert [t.clean for t in s.trials] == [t.clean for t in fab.trials]
    assert s.notes and "tags" in s.notes[0]


def test_table3_has_sr_and_fl_per_attack_and_extractor(fab):
    t = table3(fab)
    assert t.index == ["dataset", "attack"]
    assert [r.index for r in t.rows] == [(DATASET, "fgsm_eps8"), (DATASET, "pgd_eps8")]  # clean trials left out
    assert [c.csv_name for c in t.columns] == [
        "standard.success_rate",
        "standard.feature_loss",
        "adversarial.success_rate",
        "adversarial.feature_loss",
    ]
    assert [c.value for c in t.row(DATASET, "pgd_eps8").cells] == pytest.approx([0.9, 8.0, 0.99, 0.08])
    # adversarial-pgd_eps8 failed on VBPR: its FM twin still gives SR and FL
    assert any("agree" in note for note in t.notes)


def test_table3_notes_recommenders_that_disagree():
    def record(rec: str, sr: float) -> TrialRecord:
        return TrialRecord(
            f"pgd-{rec}", "FINISHED", "d", "std", "pgd", rec, metrics={"success_rate": sr, "feature_loss": 1.0}
        )

    s = VarSession(
        "g", "r", "-", "", [], [record("fm", 0.5), record("vbpr", 0.7)], ["d"], ["std"], ["pgd"], ["fm", "vbpr"], [()]
    )
    t = table3(s)
    assert t.rows[0].cells[0].value == pytest.approx(0.6)
    assert any("disagree" in note and "SR of d, pgd, std: 0.5 to 0.7" in note for note in t.notes)


def test_table4_layout_values_block_maxima_and_pvalues(fab):
    t, p = table4(fab)
    assert t.index == ["dataset", "recommender", "attack"]
    assert [r.index[1:] for r in t.rows] == [
        ("fm", "none"),
        ("fm", "fgsm_eps8"),
        ("fm", "pgd_eps8"),
        ("vbpr", "none"),
        ("vbpr", "fgsm_eps8"),
        ("vbpr", "pgd_eps8"),
    ]
    assert [c.csv_name for c in t.columns] == [
        f"{e}.{m}" for e in ("standard", "adversarial") for m in ("chr_20", "chr_50", "ncdcg_20", "ncdcg_50")
    ]
    for row in t.rows:
        _, recommender, attack = row.index
        for column, cell in zip(t.columns, row.cells):
            if f"{column.group}-{attack}-{recommender}" == FAILED:
                assert cell.missing
            else:
                assert cell.value == pytest.approx(known_metrics(column.group, attack, recommender)[column.key])
    best = {(r.index[1], r.index[2], c.csv_name) for r in t.rows for c, cell in zip(t.columns, r.cells) if cell.best}
    # the highest value of each dataset x recommender block, per column: PGD, except where it failed
    assert ("fm", "pgd_eps8", "standard.chr_20") in best and ("fm", "pgd_eps8", "adversarial.chr_20") in best
    assert ("vbpr", "fgsm_eps8", "adversarial.chr_20") in best and ("vbpr", "pgd_eps8", "standard.chr_20") in best
    assert len(best) == 4 * 4
    chr20 = t.column("standard.chr_20")
    assert [t.significant(c) for c in chr20] == [False, False, True, False, False, True]  # p 0.01 < 0.05 < 0.2
    assert [r.index[1:] for r in p.rows] == [
        ("fm", "fgsm_eps8"),
        ("fm", "pgd_eps8"),
        ("vbpr", "fgsm_eps8"),
        ("vbpr", "pgd_eps8"),
    ]
    assert [c.value for c in p.column("standard.ttest_p_chr_20")] == pytest.approx([0.2, 0.01, 0.2, 0.01])
    assert all(c.missing for c in p.column("standard.ttest_p_chr_50"))  # not logged: '-'


def test_table5_rows_per_extractor_and_gini_convention(fab):
    t = table5(fab)
    assert t.index == ["dataset", "extractor", "recommender", "attack"]
    assert [r.index[1:3] for r in t.rows[:4]] == [("standard", "fm")] * 3 + [("standard", "vbpr")]
    assert [c.key for c in t.columns] == ["recall_20", "ndcg_20", "efd_20", "gini_diversity_20", "item_coverage_20"]
    assert t.column("gini_diversity_20")[0].value == pytest.approx(0.3)  # 1 - G, the paper's convention
    assert not any(c.best for c in t.column("efd_20"))  # all equal: nothing stands out
    coverage = t.column("item_coverage_20")
    assert [c.best for c in coverage[:3]] == [False, False, True]
    assert "Gini@20: 1 - G" in t.notes[0]


def test_feature_loss_not_success_rate_tracks_the_ranking_change(fab):
    overall = correlations(fab)[0]
    points = var_report.effect_points(fab)
    assert overall.scope == "all" and overall.n == len(points) == 7  # the failed trial has no point
    expected_fl = stats.spearmanr([p[2] for p in points], [p[1] for p in points]).statistic
    expected_sr = stats.spearmanr([p[3] for p in points], [p[1] for p in points]).statistic
    assert overall.fl_rho == pytest.approx(expected_fl) and overall.sr_rho == pytest.approx(expected_sr)
    assert overall.fl_rho > 0.9 > abs(overall.sr_rho)
    assert "feature loss tracks the ranking change more closely" in var_report.finding(overall)
    assert "as in the paper" in var_report.finding(overall)
    assert [c.scope for c in correlations(fab)] == ["all", "recommender: fm", "recommender: vbpr"]


def test_a_significant_negative_feature_loss_correlation_is_not_the_papers_finding():
    opposite = var_report.Correlation("all", 20, fl_rho=-0.8, fl_p=1e-5, sr_rho=-0.1, sr_p=0.6)
    text = var_report.finding(opposite)
    assert "opposite sign to the paper" in text and "as in the paper" not in text


def test_a_data_axis_gives_dataset_blocks_and_missing_axes_one_label(store):
    s = collect_var_session(open_session("multi", store["uri"]))
    assert s.datasets == ["men", "women"]
    assert len(s.extractors) == 1 and len(s.recommenders) == 1  # not grid axes: the component's label
    t, _ = table4(s)
    assert [r.index[0] for r in t.rows] == ["men"] * 3 + ["women"] * 3
    assert [r.index[2] for r in t.rows] == ["none", "fgsm_eps8", "pgd_eps8"] * 2
    rows = correlations(s)
    assert [c.scope for c in rows] == ["all", "dataset: men", "dataset: women"]
    assert rows[0].n == 4 and all(math.isnan(c.fl_rho) for c in rows[1:])  # 2 points each: too few
    assert [r.index for r in table3(s).rows] == [
        ("men", "fgsm_eps8"),
        ("men", "pgd_eps8"),
        ("women", "fgsm_eps8"),
        ("women", "pgd_eps8"),
    ]


# --------------------------------------------------------------------------- files


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text())))


def test_every_table_is_written_as_markdown_csv_and_latex(store):
    out = store["report"].out
    for key in var_report.TABLE_KEYS:
        for ext in ("md", "csv", "tex"):
            assert (out / f"{key}.{ext}").is_file(), f"{key}.{ext}"
    rows = read_csv(out / "table4.csv")
    assert rows[0][:4] == ["dataset", "recommender", "attack", "standard.chr_20"]
    assert rows[3][:4] == [DATASET, "fm", "pgd_eps8", "0.18*"]  # block maximum: '*' suffix, full precision
    assert rows[6][7:] == ["-"] * 4  # the failed trial
    assert float(rows[1][3]) == pytest.approx(0.1)
    md = (out / "table4.md").read_text()
    assert "| dataset | recommender | attack | standard CHR@20 |" in md
    assert "**0.1800**†" in md and "| **0.1300**† |" in md
    tex = (out / "table4.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\multicolumn{4}{c}{standard}" in tex
    assert r"synthetic\_sizetiny" in tex and r"\textbf{0.1800}$^{\dagger}$" in tex and "synthetic_sizetiny" not in tex
    t3 = (out / "table3.md").read_text()
    assert "| synthetic_sizetiny | fgsm_eps8 | 50.0% | 2.0000 | 95.0% | 0.0200 |" in t3
    assert r"50.0\%" in (out / "table3.tex").read_text()
    trials = read_csv(out / "trials.csv")
    assert len(trials) == 13 and trials[0][0] == "trial"
    failed = next(r for r in trials if r[0] == FAILED)
    assert failed[1] == "FAILED" and failed[-1] == "simulated failure"


def test_plots_are_pngs_and_the_readme_ties_it_together(store):
    out = store["report"].out
    for name in (var_report.PLOT_BARS, var_report.PLOT_SCATTER):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    readme = (out / "README.md").read_text()
    assert f"{ORIGIN} → {TARGET}" in readme
    assert "ρ(FL, ΔCHR@20) =" in readme and "ρ(SR, ΔCHR@20) =" in readme
    assert f"`{FAILED}`: failed: simulated failure" in readme
    for name in ("table3.csv", "table4.tex", "table5.md", var_report.PLOT_BARS, var_report.PLOT_SCATTER):
        assert f"({name})" in readme
    assert store["report"].main_file == out / "README.md"


# --------------------------------------------------------------------------- the report run


def test_the_report_run_is_logged_and_never_taken_for_a_session_or_a_trial(store):
    tracker: GridTracker = store["tracker"]
    report = store["report"]
    run = tracker.client.get_run(report.run_id)
    assert run.info.experiment_id == store["experiment_id"] and run.info.status == "FINISHED"
    assert run.data.tags["raygrid.kind"] == REPORT_KIND and run.data.tags[REPORT_OF_TAG] == store["grid_run_id"]
    assert "mlflow.parentRunId" not in run.data.tags
    assert run.data.metrics["spearman_fl_delta_chr_20"] > 0.9 and run.data.metrics["trials_finished"] == 11
    artifacts = {a.path for a in tracker.client.list_artifacts(report.run_id)}
    assert {"README.md", "table4.csv", "table4.tex", var_report.PLOT_BARS, var_report.PLOT_SCATTER} <= artifacts

    # what resume and status read: the latest grid session and its trials, unchanged by the report run
    assert tracker.latest_grid_run(store["experiment_id"]).info.run_id == store["grid_run_id"]
    _, _, parent = latest_session("fab", store["uri"])
    assert parent.info.run_id == store["grid_run_id"]
    trials = tracker.trial_runs(store["experiment_id"], store["grid_run_id"])
    assert sorted(trials) == sorted(t.name for t in store["grid"].trials)
    assert report.run_id not in {r.info.run_id for r in trials.values()}
    assert len(grid_status("fab", store["uri"])) == 12


def test_a_failed_write_leaves_out_and_mlflow_as_they_were(store, monkeypatch, tmp_path):
    out = tmp_path / "out"
    first = make_report("fab", tracking=store["uri"], out=out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(var_plots, "plot_effect", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        make_report("fab", tracking=store["uri"], out=out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left
    tracker: GridTracker = store["tracker"]
    reports = tracker.client.search_runs([store["experiment_id"]], filter_string="tags.`raygrid.kind` = 'report'")
    assert first.run_id in {r.info.run_id for r in reports}
    assert all(r.info.status == "FINISHED" for r in reports)  # the broken one was removed


def test_refusals_name_the_problem_and_write_nothing(store, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RaygridError, match="no grid named 'nothing'"):
        make_report("nothing", tracking=store["uri"], out=out)
    with pytest.raises(RaygridError, match=r"no finished trial in its latest session \(0 of 3\); finish it first"):
        make_report("stalled", tracking=store["uri"], out=out)
    tracker = GridTracker(resolve_tracking(store["uri"]))
    experiment = tracker.experiment_id("aipgrid")
    tracker.start_grid_run(
        experiment,
        grid_name="aipgrid",
        grid_hash="x",
        grid_yaml=yaml.safe_dump({"name": "aipgrid", "study": "future"}),
        path=None,
    )
    with pytest.raises(RaygridError, match="study 'future', which has no report yet"):
        make_report("aipgrid", tracking=store["uri"], out=out)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TrackingError, match="unreachable"):
        make_report("fab", tracking=f"http://127.0.0.1:{port}", out=out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- rendering details


def test_latex_escapes_specials_and_markdown_groups_repeated_index_values(fab):
    assert (
        latex_escape("a_b & 50% #1 {x} ~ ^ \\")
        == r"a\_b \& 50\% \#1 \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{}"
    )
    md = to_markdown(table4(fab)[0]).splitlines()
    assert md[4].startswith(f"| {DATASET} | fm | none |") and md[5].startswith("|  |  | fgsm_eps8 |")
    assert md[7].startswith("|  | vbpr | none |")


# --------------------------------------------------------------------------- command line

runner = CliRunner()


def test_cli_report_prints_the_main_tables_and_where_the_report_is(store, tmp_path):
    result = runner.invoke(app(), ["report", "fab", "--tracking", store["uri"], "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "Table 3" in result.output and "Table 4" in result.output and "Spearman" in result.output
    assert "11 of 12 trials finished" in result.output and "Report:" in result.output
    assert (tmp_path / "r" / "README.md").is_file()


def test_cli_report_of_an_unknown_grid_is_one_line_and_exit_2(store, tmp_path):
    result = runner.invoke(app(), ["report", "nothing", "--tracking", store["uri"], "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "no grid named 'nothing'" in lines[0]
    assert not (tmp_path / "r").exists()


def test_cli_run_ends_with_the_report_unless_told_not_to(store, tmp_path, monkeypatch):
    """``raygrid run`` of a var grid writes the report at the end (the grid itself is fabricated: no Ray)."""
    import raygrid.grid.runner as runner_module

    monkeypatch.chdir(tmp_path)
    uri = store["uri"]
    doc = var_document("ran", tracking={"uri": uri})
    path = tmp_path / "ran.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    sessions: list[str] = []

    def fake_run_grid(grid, **kwargs):
        if not sessions:  # the second run finds the same session: fabricating is the slow part
            sessions.append(fabricate(uri, doc)[2])
        rows = [{"trial": t.name, "status": "FINISHED"} for t in grid.trials]
        return GridOutcome(grid=grid, target=resolve_tracking(uri), grid_run_id=sessions[0], trials=rows)

    monkeypatch.setattr(runner_module, "run_grid", fake_run_grid)
    result = runner.invoke(app(), ["run", str(path)])
    assert result.exit_code == 0, result.output
    assert "Report: .raygrid/reports/ran/README.md" in result.output
    assert (tmp_path / ".raygrid" / "reports" / "ran" / "table4.tex").is_file()

    result = runner.invoke(app(), ["run", str(path), "--no-report"])
    assert result.exit_code == 0, result.output
    assert "Report:" not in result.output


def app():
    from raygrid.cli import app as typer_app

    return typer_app


@pytest.mark.slow
def test_a_tiny_real_grid_ends_with_its_report(tmp_path, monkeypatch):
    """Through Ray, the stages and MLflow: ``raygrid run`` writes the report of what it ran."""
    monkeypatch.chdir(tmp_path)
    doc = tiny_grid_document(name="tinyreport", categories={"origin": ORIGIN, "target": TARGET})
    path = tmp_path / "tinyreport.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = runner.invoke(app(), ["run", str(path)])
    assert result.exit_code == 0, result.output
    assert "Report: .raygrid/reports/tinyreport/README.md" in result.output
    out = tmp_path / ".raygrid" / "reports" / "tinyreport"
    rows = read_csv(out / "table4.csv")
    assert [r[2] for r in rows[1:]] == ["none", "fgsm_eps8", "pgd_eps8_steps3"]
    assert all(cell != "-" for cell in rows[1][3:])
    assert (out / var_report.PLOT_SCATTER).read_bytes()[:8] == PNG_MAGIC
