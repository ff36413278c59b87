"""Reports from run folders written through the project's writer (RunDir): rows, seed aggregates computed here
independently (statistics module), missing/failed/running runs listed, every output format parsed back to the same
numbers, figures written as non-empty PNGs with their numbers as CSV, and a report over a custom sweep file."""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import stat
import statistics
from pathlib import Path

import pytest

from pirl_ablate.cli import main
from pirl_ablate.commands.report import NoResults
from pirl_ablate.commands.report import run as report_command
from pirl_ablate.layers import LAYERS
from pirl_ablate.report import paper
from pirl_ablate.report.registry import TABLES
from pirl_ablate.report.render import to_csv, to_latex, to_markdown
from pirl_ablate.report.results import ExpectedRun, load_results, operative_values
from pirl_ablate.runs import RunDir, atomic_write_json

LAMBDAS = (0.0, 0.5, 1.0)
SEEDS = (0, 1, 2)
# linear res5 top-1 of each (lambda, seed): arbitrary, distinct, known here
LAMBDA_TOP1 = {(lam, s): 50.0 + 20 * lam - 7 * (lam - 0.5) ** 2 * 10 + 1.7 * s - 0.3 * s * s
               for lam in LAMBDAS for s in SEEDS}
VARIANTS = {"PIRL": (61.0, 63.5), "NPID++": (57.25, 58.0), "Jigsaw": (44.0, 47.5), "Rotation": (49.0, 48.0),
            "random_init": (10.5, 11.0), "supervised": (80.0, 81.0)}
HIST_EDGES = [0.0, 0.5, 1.0, 1.5, 2.0]


def _linear(top1: float, dataset: str = "fashion_mnist") -> dict:
    return {"protocol": "linear", "dataset": dataset, "bn": "precise", "wall_s": 1.0,
            "metrics": {"res4": {"top1": top1 - 3.0}, "res5": {"top1": top1, "top5": min(100.0, top1 + 20)}}}


def _run(root: Path, sweep: str, run_id: str, seed: int, bindings: dict | None = None, variant: str | None = None,
         evals: dict | None = None, status: str = "done") -> RunDir:
    run = RunDir(root / sweep / run_id)
    run.start("PIRL.lambda_ = 0.5\n", seed=seed, run_id=run_id, bindings=bindings or {}, sweep=sweep,
              variant=variant)
    run.log_metrics({"epoch": 0, "loss": 1.0})
    for name, result in (evals or {}).items():
        run.write_eval(name, result)
    if status == "done":
        run.finish(epochs=1, final={"loss": 0.5, "knn_top1": 12.0}, wall_s=3.0)
    elif status == "failed":
        run.fail("NaN loss at epoch 2", epochs=2, wall_s=1.0)
    return run


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run folders shared (read-only) by the tests of this module: writing them costs ~2 s (git and package
    provenance per run)."""
    root = tmp_path_factory.mktemp("results") / "runs"
    for (lam, seed), top1 in LAMBDA_TOP1.items():
        _run(root, "lambda", f"lam{lam}-s{seed}", seed, {"PIRL.lambda_": lam},
             evals={"linear-fashion_mnist": _linear(top1)})
    _run(root, "lambda", "lam0.25-s0", 0, {"PIRL.lambda_": 0.25}, status="failed")
    _run(root, "lambda", "lam0.75-s0", 0, {"PIRL.lambda_": 0.75}, status="running")
    _run(root, "lambda", "lam0.9-s0", 0, {"PIRL.lambda_": 0.9})  # done, but never evaluated
    # the sweep record `pirl-ablate sweep` writes (pirl_ablate.sweep.drive.write_sweep_record): every run it
    # expanded, two of which never started: one submitted (its folder exists, job.json only), one not at all
    on_disk = [(f"lam{lam}-s{s}", lam, s) for lam in (*LAMBDAS, 0.25, 0.75, 0.9) for s in SEEDS
               if (root / "lambda" / f"lam{lam}-s{s}").is_dir()]
    atomic_write_json(root / "lambda" / "sweep.json", {"name": "lambda", "axes": ["PIRL.lambda_"], "runs": [
        {"run_id": rid, "variant": None, "bindings": {"PIRL.lambda_": lam}, "seed": s}
        for rid, lam, s in [*on_disk, ("submitted", 2.0, 0), ("never-ran", 3.0, 0)]]})
    atomic_write_json(root / "lambda" / "submitted" / "job.json", {"executor": "local", "job_id": "1"})
    for variant, values in VARIANTS.items():
        for seed, top1 in enumerate(values):
            counts = [40, 30, 20, 10] if variant == "PIRL" else [5, 10, 25, 60]
            _run(root, "loss_variants", f"{variant}-{seed}", seed, variant=variant, evals={
                "linear-fashion_mnist": _linear(top1),
                "linear-digits": _linear(top1 - 10, "digits"),
                "semisup-fashion_mnist": {"protocol": "semisup", "dataset": "fashion_mnist",
                                          "metrics": {"1%": {"top1": top1 / 2, "top5": top1 / 1.5},
                                                      "10%": {"top1": top1, "top5": top1 + 5}}},
                "invariance-fashion_mnist": {"protocol": "invariance", "dataset": "fashion_mnist",
                                             "metrics": {g: {"mean": 0.2 + seed, "std": 0.1,
                                                             "relative": (0.3 if variant == "PIRL" else 1.1)
                                                             + r + 0.1 * seed}
                                                         for g, r in (("heads", 0.0), ("res5", 0.5))},
                                             "histogram": {"edges": HIST_EDGES, "counts": counts}}})
    return root


def _args(**kw) -> argparse.Namespace:
    base = {"table": None, "figure": None, "sweep": None, "results": None, "format": "csv", "out": None}
    return argparse.Namespace(**{**base, **kw})


def _read_csv(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def _csv_cells(text: str) -> dict[tuple[str, str, str], dict]:
    return {(r["block"], r["row"], r["column"]): r for r in csv.DictReader(io.StringIO(text))
            if r["kind"] in ("method", "baseline", "paper", "delta")}


# ----------------------------------------------------------------------------------------------------- loader
def test_loader_has_one_row_per_run_evaluation_group_metric(results: Path):
    frame = load_results(results)
    runs = frame.drop_duplicates(["sweep", "run_id"])
    assert len(runs) == 9 + 3 + 12 + 2  # + the two never started runs of the sweep record
    lam = frame[(frame["sweep"] == "lambda") & (frame["protocol"] == "linear")]
    # each evaluated lambda run: res4 top1, res5 top1, res5 top5
    assert len(lam) == 9 * 3
    assert set(lam["PIRL.lambda_"]) == set(LAMBDAS)
    row = lam[(lam["run_id"] == "lam0.5-s2") & (lam["group"] == "res5") & (lam["metric"] == "top1")]
    assert row["value"].tolist() == [LAMBDA_TOP1[(0.5, 2)]]
    assert row["seed"].tolist() == [2] and row["wall_s"].tolist() == [3.0] and row["status"].tolist() == ["done"]
    final = frame[(frame["run_id"] == "lam0.5-s2") & (frame["protocol"] == "final")]
    assert dict(zip(final["metric"], final["value"])) == {"loss": 0.5, "knn_top1": 12.0}
    # runs without metrics keep exactly one row, with their status and reason
    failed = frame[frame["run_id"] == "lam0.25-s0"]
    assert len(failed) == 1 and failed["status"].item() == "failed"
    assert failed["reason"].item() == "NaN loss at epoch 2" and failed["metric"].isna().all()
    assert frame[frame["run_id"] == "lam0.75-s0"]["status"].tolist() == ["running"]
    assert "PIRL.lambda_" in frame.attrs["bindings"]
    assert set(frame[frame["sweep"] == "loss_variants"]["variant"].unique()) == set(VARIANTS)


def test_expected_runs_without_folders_are_missing_rows(results: Path):
    expected = [ExpectedRun("lam0.5-s0", "lambda", {"PIRL.lambda_": 0.5}, 0),
                ExpectedRun("not-in-record", "lambda", {"PIRL.lambda_": 4.0}, 1)]
    frame = load_results(results, expected)
    status = dict(zip(frame["run_id"], frame["status"]))
    assert status["never-ran"] == "missing" and status["not-in-record"] == "missing"
    assert status["submitted"] == "pending"
    assert frame[frame["run_id"] == "not-in-record"]["PIRL.lambda_"].tolist() == [4.0]
    assert (frame["run_id"] == "lam0.5-s0").sum() == 3 + 2  # 3 linear + 2 final rows; not added as missing


def test_operative_config_values_as_columns(results: Path):
    frame = load_results(results, config_keys=["PIRL.lambda_", "train.epochs"])
    on_disk = frame[frame["path"].notna()]
    assert set(on_disk["config:PIRL.lambda_"]) == {0.5}  # what each config.gin says (written by _run)
    assert frame["config:train.epochs"].isna().all()  # not in any config.gin


def test_operative_values_read_config_gin_as_gin_does(tmp_path: Path):
    """Values gin writes over several lines (a wrapped dict, a continued tuple), the last binding of a key (the
    as-given section after the operative one), references as text; a damaged line costs only itself; an old name
    reads as its current one."""
    path = tmp_path / "config.gin"
    path.write_text("train.epochs = 2\nsweep.variants = {\n    'a': ['x = 1'],\n}\nimage.scale = (0.2, \\\n    1.0)\n"
                    "train.negatives = @MemoryBankNegatives()\n# All bindings as given\ntrain.epochs = 3\n")
    keys = ["train.epochs", "sweep.variants", "image.scale", "train.negatives", "PIRL.tau"]
    assert operative_values(path, keys) == {"config:train.epochs": 3, "config:sweep.variants": '{"a": ["x = 1"]}',
                                            "config:image.scale": "[0.2, 1.0]",
                                            "config:train.negatives": "@MemoryBankNegatives()"}
    path.write_text("train.epochs = 2\nthis is = = not gin\nPIRLLoss.tau = 0.2\n")  # recorded before a rename
    assert operative_values(path, keys) == {"config:train.epochs": 2, "config:PIRL.tau": 0.2}


# ----------------------------------------------------------------------------------------------------- tables
def test_registry_knows_the_papers_tables_and_their_sweeps():
    expected = {"table2": "loss_variants", "table3": "loss_variants", "table5": "pretext", "table7": "layers",
                "figure4": "loss_variants", "figure5": "layers", "figure6": "lambda",
                "figure7": "num_permutations", "figure8": "negatives", "fidelity": "fidelity",
                "table1": "transfer", "table6": "transfer", "negative_source": "negative_source", "recipe": "recipe"}
    assert {name: TABLES.entry(name).params["sweep"] for name in TABLES} == expected
    assert all(TABLES.entry(name).doc.startswith(("Table", "Figure", "Fidelity", "Beyond the paper", "Smoke recipe"))
               for name in TABLES)


def test_negative_source_table_methods_by_source_with_seed_aggregates(tmp_path: Path):
    root = tmp_path / "runs"
    top1 = {("PIRL", "memory_bank"): (60.0, 62.0), ("PIRL", "momentum_queue"): (58.0, 57.0),
            ("PIRL", "in_batch"): (55.5, 56.5), ("NPID", "memory_bank"): (57.0, 59.0),
            ("NPID", "momentum_queue"): (61.0, 61.5), ("NPID", "in_batch"): (50.0, 52.0)}
    for (variant, source), values in top1.items():
        for seed, value in enumerate(values):
            _run(root, "negative_source", f"{variant}-{source}-{seed}", seed, {"train.negatives": source},
                 variant=variant, evals={"linear-fashion_mnist": _linear(value)})
    report = TABLES.get("negative_source")(load_results(root))
    linear = report.blocks[0]
    assert linear.columns == ["memory_bank", "momentum_queue", "in_batch"] and linear.title.startswith("ours: linear")
    assert [r.label for r in linear.rows] == ["PIRL", "NPID"]
    for row in linear.rows:
        for source, cell in row.cells.items():
            values = top1[(row.label, source)]
            assert cell.mean == pytest.approx(statistics.mean(values)) and cell.n == 2
            assert cell.std == pytest.approx(statistics.stdev(values))
    best = {source: [r.label for r in linear.rows if r.cells[source].best] for source in linear.columns}
    assert best == {"memory_bank": ["PIRL"], "momentum_queue": ["NPID"], "in_batch": ["PIRL"]}
    assert report.problems == [] and report.has_results


def test_table2_seed_aggregates_best_mark_and_paper_rows(results: Path):
    report = TABLES.get("table2")(load_results(results))
    ours = report.blocks[0]
    assert ours.columns == ["digits", "fashion_mnist"]
    labels = {r.label: r for r in ours.rows}
    assert set(labels) == {"PIRL", "NPID++", "Jigsaw", "Rotation", "random init", "supervised"}
    for variant, values in VARIANTS.items():
        label = {"random_init": "random init"}.get(variant, variant)
        c = labels[label].cells["fashion_mnist"]
        assert c.mean == pytest.approx(statistics.mean(values))
        assert c.std == pytest.approx(statistics.stdev(values)) and c.n == 2
    assert labels["random init"].kind == "baseline" and labels["supervised"].kind == "baseline"
    best = [r.label for r in ours.rows if r.cells["fashion_mnist"].best]
    assert best == ["PIRL"]  # supervised is higher but a baseline, not ranked
    published = report.blocks[1]
    assert published.title.startswith(paper.PAPER_LABEL)
    assert {r.label: r.cells["ImageNet"].mean for r in published.rows}["PIRL"] == 63.6
    assert all(r.kind == "paper" for r in published.rows)
    assert report.problems == [] and report.has_results


def test_table5_delta_row_and_table3_fractions(results: Path, tmp_path: Path):
    root = tmp_path / "pretext_runs"
    values = {"Rotation": [40.0, 42.0], "PIRL (Rotation)": [50.0, 55.0], "PIRL (Jigsaw)": [53.0, 54.0],
              "PIRL (Rotation+Jigsaw)": [56.0, 57.0]}
    for variant, tops in values.items():
        for seed, top1 in enumerate(tops):
            _run(root, "pretext", f"{variant}-{seed}", seed, variant=variant,
                 evals={"linear-fashion_mnist": _linear(top1)})
    report = TABLES.get("table5")(load_results(root))
    rows = {r.label: r for r in report.blocks[0].rows}
    assert list(rows)[:4] == list(values)
    delta = rows["Δ PIRL (Rotation) − Rotation"]
    assert delta.kind == "delta" and delta.cells["fashion_mnist"].mean == pytest.approx(52.5 - 41.0)
    paper_delta = {r.label: r for r in report.blocks[1].rows}["Δ PIRL (Rotation) − Rotation"]
    assert paper_delta.cells["ImageNet"].mean == pytest.approx(60.2 - 48.9)
    assert any("random-init baseline" in n for n in report.notes)  # no random init anywhere: said so

    table3 = TABLES.get("table3")(load_results(results))
    block = table3.blocks[0]
    assert block.columns == ["1%", "10%"]
    pirl = {r.label: r for r in block.rows}["PIRL"]
    assert pirl.cells["1%"].mean == pytest.approx(statistics.mean(v / 1.5 for v in VARIANTS["PIRL"]))


def test_missing_failed_running_and_unevaluated_runs_are_listed(results: Path):
    report = TABLES.get("figure6")(load_results(results))
    problems = {p.run_id: (p.status, p.reason) for p in report.problems}
    assert problems["never-ran"][0] == "missing" and "PIRL.lambda_=3.0, seed 0" in problems["never-ran"][1]
    assert problems["submitted"][0] == "pending"
    assert problems["lam0.25-s0"] == ("failed", "NaN loss at epoch 2")
    assert problems["lam0.75-s0"][0] == "running"
    assert problems["lam0.9-s0"][0] == "done" and "no linear or knn top-1 evaluation" in problems["lam0.9-s0"][1]
    assert len(problems) == 5
    text = to_markdown(report)
    assert all(run_id in text for run_id in problems)


# ----------------------------------------------------------------------------------------------------- formats
def test_markdown_csv_latex_parse_back_to_the_same_numbers(results: Path):
    report = TABLES.get("figure6")(load_results(results))
    expect = {}
    for lam in LAMBDAS:
        vals = [LAMBDA_TOP1[(lam, s)] for s in SEEDS]
        expect[f"{lam:g}"] = (statistics.mean(vals), statistics.stdev(vals), 3)
    best_lam = max(expect, key=lambda k: expect[k][0])

    cells = _csv_cells(to_csv(report))
    for lam, (mean, std, n) in expect.items():
        r = cells[("linear top-1 (res5) vs lambda", lam, "PIRL")]
        assert float(r["mean"]) == pytest.approx(mean) and float(r["std"]) == pytest.approx(std)
        assert int(r["n"]) == n and r["best"] == str(int(lam == best_lam))
    baseline = cells[("linear top-1 (res5) vs lambda", "random init", "PIRL")]
    assert float(baseline["mean"]) == pytest.approx(statistics.mean(VARIANTS["random_init"]))
    assert baseline["kind"] == "baseline"

    md_rows = {}
    for line in to_markdown(report).splitlines():
        m = re.fullmatch(r"\| ([\w.* ]+) \| (\*\*)?([\d.]+) ± ([\d.]+)(\*\*)? \(n=(\d+)\) \|", line)
        if m:
            md_rows[m.group(1)] = (float(m.group(3)), float(m.group(4)), int(m.group(6)), bool(m.group(2)))
    tex_rows = {}
    for line in to_latex(report).splitlines():
        m = re.fullmatch(r"(.+?) & \$(\\mathbf\{)?([\d.]+) \\pm ([\d.]+)\}?\$ \(\$n\$=(\d+)\) \\\\", line)
        if m:
            tex_rows[m.group(1)] = (float(m.group(3)), float(m.group(4)), int(m.group(5)), bool(m.group(2)))
    for rows in (md_rows, tex_rows):
        for lam, (mean, std, n) in expect.items():
            got = rows[lam]
            assert got[0] == pytest.approx(mean, abs=0.005) and got[1] == pytest.approx(std, abs=0.005)
            assert got[2] == n and got[3] == (lam == best_lam)
    assert r"\toprule" in to_latex(report) and r"\bottomrule" in to_latex(report)


def test_command_writes_files_and_figures(results: Path, tmp_path: Path):
    out = tmp_path / "reports"
    assert report_command(_args(figure="6", results=str(results), out=str(out), format="markdown")) == 0
    assert (out / "figure6.md").read_text().startswith("## Figure 6")
    png = (out / "figure6.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    plotted = _read_csv(out / "figure6_data.csv")
    pirl = {r["x"]: float(r["mean"]) for r in plotted if r["series"] == "PIRL"}
    assert pirl == pytest.approx({str(lam): statistics.mean(LAMBDA_TOP1[(lam, s)] for s in SEEDS)
                                  for lam in LAMBDAS})

    assert report_command(_args(figure="4", results=str(results), out=str(out))) == 0
    assert (out / "figure4.png").stat().st_size > 1000
    hist = [r for r in _read_csv(out / "figure4_data.csv") if r["series"] == "PIRL"]
    assert [float(r["fraction"]) for r in hist] == pytest.approx([0.4, 0.3, 0.2, 0.1])  # two seeds pooled
    assert {r["series"] for r in _read_csv(out / "figure4_data.csv")} == {"PIRL", "Jigsaw"}
    relative = {(r["row"], r["column"]): r for r in _read_csv(out / "figure4.csv")}
    assert float(relative["PIRL", "heads"]["mean"]) == pytest.approx(0.35)  # seeds 0, 1: 0.3 and 0.4
    assert float(relative["PIRL", "res5"]["mean"]) == pytest.approx(0.85)
    assert relative["PIRL", "heads"]["best"] == "1" and relative["Jigsaw", "heads"]["best"] == "0"
    assert float(relative["random init", "res5"]["mean"]) == pytest.approx(1.65)  # the baseline is in the table

    with pytest.raises(NoResults):
        report_command(_args(table="7", results=str(results), out=str(out), format="latex"))
    assert not (out / "table7.tex").exists()


def test_empty_report_is_a_user_error_naming_a_sweep_command_that_works_from_anywhere(tmp_path: Path, capsys,
                                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the repository
    code = main(["report", "--figure", "6", "--results", str(tmp_path / "nothing"), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: no results under") and len(err.splitlines()) == 1
    command = re.search(r"run `pirl-ablate sweep (\S+)`", err).group(1)
    assert command == "sweeps/lambda.gin"
    from pirl_ablate.config import resolve_config_file

    assert resolve_config_file(command).read_text() == (Path(__file__).parent.parent / command).read_text()
    assert main(["report", "--table", "99", "--results", str(tmp_path)]) == 2  # unknown table: a user error


def test_rich_output_shows_ours_paper_and_problems(results: Path, tmp_path: Path, capsys):
    assert main(["report", "--figure", "6", "--results", str(results), "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "runs not in this report (5)" in text and "lam0.25-s0" in text and "NaN loss at epoch 2" in text
    assert "random init" in text and paper.PAPER_LABEL in text
    assert (tmp_path / "figure6.txt").exists()


def test_figure_and_table_read_a_paper_sweeps_results(tmp_path: Path):
    """`report --figure 6 --results runs/paper_lambda` and `--table 2` on paper_loss_variants: each reports the
    paper twin's runs (sweeps/paper/*.gin names them paper_<sweep>), with the values written here."""
    root = tmp_path / "runs"
    for seed, top1 in enumerate((60.0, 62.0)):
        _run(root, "paper_lambda", f"p{seed}", seed, {"PIRL.lambda_": 0.5},
             evals={"linear-imagefolder": _linear(top1)})
    _run(root, "paper_loss_variants", "pirl", 0, variant="PIRL",
         evals={"svm-voc2007": {"protocol": "svm", "dataset": "voc2007", "metrics": {"res5": {"mAP": 81.0}}}})
    out = tmp_path / "reports"
    assert main(["report", "--figure", "6", "--results", str(root / "paper_lambda"), "--out", str(out),
                 "--format", "csv"]) == 0
    cells = _csv_cells((out / "figure6.csv").read_text())
    assert any(r["row"] == "0.5" and float(r["mean"]) == pytest.approx(61.0) for r in cells.values())
    assert main(["report", "--table", "2", "--results", str(root), "--out", str(out), "--format", "csv"]) == 0
    cells = _csv_cells((out / "table2.csv").read_text())
    assert any(r["row"] == "PIRL" and float(r["mean"]) == pytest.approx(81.0) for r in cells.values()
               if r["kind"] == "method")


# -------------------------------------------------------------------------------------------- sweep-file report
@pytest.mark.slow
def test_report_over_a_custom_sweep_file(tmp_path: Path, monkeypatch):
    """A sweep file nobody registered: its expansion (pirl_ablate.sweep) gives the expected runs; two of them are
    written, one is not, and the generic table has the swept axes as rows and the metrics as columns."""
    from pirl_ablate.sweep.spec import load_sweep

    monkeypatch.chdir(tmp_path)
    sweep_file = tmp_path / "tau_sweep.gin"
    sweep_file.write_text("sweep.name = 'tau_sweep'\nsweep.grid = {'PIRL.tau': [0.07, 0.2]}\n"
                          "sweep.seeds = [0, 1]\nsweep.seed_binding = None\n")
    sweep = load_sweep(sweep_file)
    runs = sweep.runs
    top1 = {0.07: [60.0, 62.0], 0.2: [50.0]}
    written = []
    for run in runs:
        tau, seed = run.bindings["PIRL.tau"], run.seed
        if seed < len(top1[tau]):
            _run(tmp_path / "runs", "tau_sweep", run.run_id, seed, run.bindings,
                 evals={"linear-fashion_mnist": _linear(top1[tau][seed])})
            written.append(run.run_id)
    missing = [r.run_id for r in runs if r.run_id not in written]
    assert len(missing) == 1
    out = tmp_path / "reports"
    assert report_command(_args(sweep=str(sweep_file), out=str(out))) == 0
    rows = _read_csv(out / "tau_sweep.csv")
    cells = {(r["row"], r["column"]): r for r in rows if r["kind"] == "method"}
    assert float(cells[("tau=0.07", "linear/res5/top1")]["mean"]) == pytest.approx(61.0)
    assert float(cells[("tau=0.07", "linear/res5/top1")]["std"]) == pytest.approx(statistics.stdev([60.0, 62.0]))
    assert cells[("tau=0.2", "linear/res5/top1")]["n"] == "1"
    assert float(cells[("tau=0.07", "final/loss")]["mean"]) == 0.5
    flagged = [r for r in rows if r["kind"] == "missing"]
    assert [r["row"] for r in flagged] == missing

    # once `pirl-ablate sweep` has written its record, the report takes the expected runs from there
    from pirl_ablate.sweep.drive import write_sweep_record

    write_sweep_record(tmp_path / "runs" / "tau_sweep", sweep, "local")
    frame = load_results(tmp_path / "runs")
    assert frame[frame["run_id"] == missing[0]]["status"].tolist() == ["missing"]
    assert report_command(_args(sweep=str(sweep_file), out=str(out), format="markdown")) == 0
    assert missing[0] in (out / "tau_sweep.md").read_text()


def test_per_layer_table_and_figures_with_log_axis(results: Path, tmp_path: Path):
    frame = load_results(results)
    table7 = TABLES.get("table7")(frame, sweep="loss_variants")
    ours = [b for b in table7.blocks if b.title.endswith("on fashion_mnist")][0]
    assert ours.columns == ["res4", "res5"]  # conv1 .. res5 order, only the layers evaluated
    pirl = {r.label: r for r in ours.rows}["PIRL"]
    assert pirl.cells["res4"].mean == pytest.approx(statistics.mean(VARIANTS["PIRL"]) - 3.0)
    assert table7.blocks[-1].columns == list(LAYERS)

    figure5 = TABLES.get("figure5")(frame, sweep="loss_variants")
    jigsaw = {s.label: s for s in figure5.plot.series}["Jigsaw · fashion_mnist"]
    assert jigsaw.x == ["res4", "res5"]
    assert jigsaw.y == pytest.approx([statistics.mean(VARIANTS["Jigsaw"]) - 3.0, statistics.mean(VARIANTS["Jigsaw"])])
    # every method's two seeds sit tens of points above random init's (10.5, 11.0) at res4 and res5
    assert ("Jigsaw · fashion_mnist above random init · fashion_mnist by more than the seeds' spread at 2 of 2 "
            "layers, below at 0") in figure5.plot.verdict and figure5.plot.verdict in figure5.notes

    root = tmp_path / "perm_runs"
    for variant in ("PIRL", "Jigsaw"):
        for t in (10, 100, 1000):
            _run(root, "num_permutations", f"{variant}-{t}", 0, {"jigsaw.num_permutations": t}, variant=variant,
                 evals={"linear-fashion_mnist": _linear(40.0 + t / 100 + (5 if variant == "PIRL" else 0))})
    figure7 = TABLES.get("figure7")(load_results(root))
    assert figure7.plot.logx and figure7.plot.xlabel.startswith("|T|")
    assert {s.label: s.x for s in figure7.plot.series} == {"PIRL": [10, 100, 1000], "Jigsaw": [10, 100, 1000]}
    assert {s.label: s.y[-1] for s in figure7.plot.series} == pytest.approx({"PIRL": 55.0, "Jigsaw": 50.0})
    from pirl_ablate.report.figures import save_figure

    png, data = save_figure(figure7.plot, figure7.title, tmp_path / "figure7")
    assert png.stat().st_size > 1000 and len(data.read_text().splitlines()) == 1 + 6


def test_a_sweeps_own_random_init_baseline_is_preferred_and_not_a_problem(tmp_path: Path):
    root = tmp_path / "runs"
    for lam, top1 in ((0.0, 60.0), (0.5, 70.0)):
        _run(root, "lambda", f"lam{lam}", 0, {"PIRL.lambda_": lam}, evals={"linear-fashion_mnist": _linear(top1)})
    _run(root, "lambda", "rand", 0, variant="random init", evals={"linear-fashion_mnist": _linear(50.0)})
    _run(root, "loss_variants", "rand-other", 0, variant="random init", evals={"linear-fashion_mnist": _linear(99.0)})
    report = TABLES.get("figure6")(load_results(root))
    cells = _csv_cells(to_csv(report))
    baseline = [c for key, c in cells.items() if key[1] == "random init"]
    assert baseline and all(float(c["mean"]) == 50.0 for c in baseline)  # the sweep's own, not the other sweep's
    assert not report.problems
    assert [(r.label, r.mean, r.n) for r in report.plot.baselines] == [("random init", 50.0, 1)]
    assert {s.label for s in report.plot.series} == {"PIRL"}


# ------------------------------------------------------------------------------------- figure files, captions
SMOKE_CONFIG = """train.dataset = 'fashion_mnist'
train.epochs = 3
train.image_size = 32
Backbone.arch = 'resnet18'
Backbone.width_multiplier = 0.5
fashion_mnist.subset = 3000
"""


def test_figure6_files_caption_rounded_csv_complete_baseline_and_umask(tmp_path: Path):
    root = tmp_path / "runs"
    top1 = {(0.0, 0): 71.35000000000001, (0.0, 1): 70.2, (0.5, 0): 74.125, (0.5, 1): 75.5}
    for (lam, seed), value in top1.items():
        run = _run(root, "lambda", f"lam{lam}-s{seed}", seed, {"PIRL.lambda_": lam},
                   evals={"linear-fashion_mnist": _linear(value)})
        run.write_config(SMOKE_CONFIG)
    for seed, value in ((0, 68.0), (1, 69.5)):
        _run(root, "lambda", f"rand-s{seed}", seed, variant="random init",
             evals={"linear-fashion_mnist": _linear(value)}).write_config(SMOKE_CONFIG)
    previous = os.umask(0o027)
    try:
        assert main(["report", "--figure", "6", "--results", str(root), "--out", str(tmp_path / "reports")]) == 0
    finally:
        os.umask(previous)
    files = sorted((tmp_path / "reports").iterdir())
    assert [f.name for f in files] == ["figure6.png", "figure6.txt", "figure6_data.csv"]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o640 for f in files)  # 0666 less the umask, not mkstemp's 0600

    rows = list(csv.DictReader(io.StringIO((tmp_path / "reports" / "figure6_data.csv").read_text())))
    by_hand = {("PIRL", "0.0"): (70.2, 71.35), ("PIRL", "0.5"): (74.125, 75.5), ("random init", "all"): (68.0, 69.5)}
    assert {(r["series"], r["x"]) for r in rows} == set(by_hand)
    for r in rows:
        pair = by_hand[(r["series"], r["x"])]
        assert r["mean"] == f"{statistics.mean(pair):.2f}" and r["std"] == f"{statistics.stdev(pair):.2f}"
        assert r["n"] == "2"

    report = TABLES.get("figure6")(load_results(root))
    assert report.plot.caption == ("ours: smoke scale · pre-trained on fashion_mnist (3,000 images, 32 px) · "
                                   "resnet18 x0.5 · 3 epochs · evaluated on fashion_mnist · seeds 0, 1 "
                                   "(n = 2 per point, error bars: std over seeds)")
    assert "best at lambda = 0.5" in report.plot.paper and report.plot.paper.startswith(paper.PAPER_LABEL)
    assert report.plot.paper_best_x == 0.5


def _knn(top1: float) -> dict:
    return {"protocol": "knn", "dataset": "fashion_mnist", "bn": "precise", "wall_s": 1.0,
            "metrics": {"res5": {"top1": top1}}}


def test_figure6_panels_say_which_metric_separates_from_random_init(tmp_path: Path):
    """Linear top-1 within or below random init's band, kNN above it by more than the spread, and the transformed
    term's margin per lambda: panels, verdicts and plotted numbers against values worked out by hand."""
    root = tmp_path / "runs"
    linear = {0.0: 72.0, 0.5: 74.5, 1.0: 72.0}  # + (-0.5, 0, +0.5) over seeds: std 0.5
    knn = {0.0: 66.0, 0.5: 71.0, 1.0: 70.5}  # lambda = 0 within random init's spread: not judged
    for lam in linear:
        for seed, jitter in zip(SEEDS, (-0.5, 0.0, 0.5)):
            run = _run(root, "lambda", f"lam{lam}-s{seed}", seed, {"PIRL.lambda_": lam},
                       evals={"linear-fashion_mnist": _linear(linear[lam] + jitter),
                              "knn-fashion_mnist": _knn(knn[lam] + jitter)})
            run.finish(epochs=1, wall_s=3.0, final={"loss": 0.5, "pos_sim_transformed": 0.3 + 0.1 * lam + 0.01 * seed,
                                                    "neg_sim_transformed": 0.1 + 0.005 * seed})
    for seed, (lin, nn) in enumerate(((74.0, 65.0), (75.5, 65.5), (77.0, 66.0))):  # 75.5 +- 1.5, 65.5 +- 0.5
        _run(root, "lambda", f"rand-s{seed}", seed, variant="random init",
             evals={"linear-fashion_mnist": _linear(lin), "knn-fashion_mnist": _knn(nn)})
    report = TABLES.get("figure6")(load_results(root))
    plot = report.plot
    assert plot.ylabel == "linear top-1 (res5)"  # the paper's metric first
    assert [p.ylabel for p in plot.panels] == ["knn top-1 (res5)", "transformed term's alignment margin"]
    # linear: 72 is 3.5 below 75.5, more than 0.5 + 1.5; 74.5 is 1.0 below, within it
    assert plot.verdict == ("linear top-1 (res5) does not separate: of 2 points at lambda > 0, 0 above random init "
                            "and 1 below by more than the seeds' spread")
    knn_panel, margin = plot.panels
    assert knn_panel.verdict.startswith("knn top-1 (res5) separates: every one of 2 points at lambda > 0 above "
                                        "random init")
    assert [(r.mean, r.std, r.n) for r in knn_panel.baselines] == [(65.5, 0.5, 3)]
    # margin of a run: 0.2 + 0.1 lambda + 0.005 seed; mean over seeds 0, 1, 2: 0.205 + 0.1 lambda
    (series,) = margin.series
    assert series.x == [0.0, 0.5, 1.0] and series.y == pytest.approx([0.205, 0.255, 0.305])
    assert series.std == pytest.approx([statistics.stdev([0.0, 0.005, 0.01])] * 3)
    assert margin.verdict.startswith("transformed term's alignment margin above 0 by more than the seeds' spread "
                                     "at 2 of 2 lambda > 0")
    assert all(v in report.notes for v in (plot.verdict, knn_panel.verdict, margin.verdict))
    margins = _csv_cells(to_csv(report))
    assert float(margins[("transformed term's alignment margin (last epoch) vs lambda", "0.5", "PIRL")]["mean"]) \
        == pytest.approx(0.255)

    from pirl_ablate.report.figures import save_figure

    _, data = save_figure(plot, report.title, tmp_path / "figure6")
    rows = list(csv.DictReader(io.StringIO(data.read_text())))
    knn_rows = {(r["series"], r["x"]): float(r["mean"]) for r in rows if r["panel"] == "knn top-1 (res5)"}
    assert knn_rows == {("PIRL", "0.0"): 66.0, ("PIRL", "0.5"): 71.0, ("PIRL", "1.0"): 70.5,
                        ("random init", "all"): 65.5}


def test_figure_draws_the_baseline_band_in_the_legend_and_the_paper_marker_under_the_error_bars():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from pirl_ablate.report.figures import _draw
    from pirl_ablate.report.model import Plot, Reference, Series

    plot = Plot(kind="line", xlabel="lambda", ylabel="top-1", paper_best_x=0.5,
                series=[Series("PIRL", [0.0, 0.5], [70.0, 72.0], [1.0, 1.0], [3, 3])],
                baselines=[Reference("random init", 71.0, 1.5, 3)])
    ax = Figure().add_subplot()
    _draw(ax, plot)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "random init ± std over seeds" in labels and "random init (n = 3)" in labels
    paper_line = next(line for line in ax.get_lines() if line.get_label() == "paper's best: 0.5")
    error_bars = [c for c in ax.collections if c.get_label() != "random init ± std over seeds"]
    assert error_bars and all(paper_line.get_zorder() < c.get_zorder() for c in error_bars)


def test_tables_fit_80_columns_and_saved_text_is_never_cut(results: Path, tmp_path: Path):
    from rich.console import Console

    from pirl_ablate.report.build import sweep_report
    from pirl_ablate.report.render import render_text, to_rich

    report = sweep_report(load_results(results), "loss_variants")  # one column per metric: wide
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(to_rich(report))
    narrow, saved = console.export_text(), render_text(report, "rich")
    assert "…" not in narrow and max(len(line) for line in narrow.splitlines()) <= 80
    assert "…" not in saved and max(len(line) for line in saved.splitlines()) > 160  # the file at full width
    # semi-supervised 10% top-5 of PIRL: (61 + 5, 63.5 + 5) -> 67.25; linear res5 top-1 of Jigsaw: 45.75
    for value in (f"{statistics.mean([66.0, 68.5]):.2f}", f"{statistics.mean(VARIANTS['Jigsaw']):.2f}"):
        assert value in narrow and value in saved


def test_separation_on_the_main_jobs_published_numbers():
    """README's main-job table (2026-12-06, mean +- std over 3 seeds): kNN clears random init by more than the
    spread at every lambda > 0 (e.g. 70.43 - 67.08 = 3.35 > 1.10 + 1.56), linear at none (75.47 vs 75.52)."""
    from pirl_ablate.report.build import separation
    from pirl_ablate.report.model import Plot, Reference, Series

    lambdas = [0.0, 0.25, 0.5, 0.75, 1.0]
    knn = Plot(kind="line", xlabel="lambda", ylabel="kNN", baselines=[Reference("random init", 67.08, 1.56, 3)],
               series=[Series("PIRL", lambdas, [68.92, 70.43, 70.75, 70.85, 70.70], [2.76, 1.10, 1.05, 0.82, 0.65],
                              [3] * 5)])
    linear = Plot(kind="line", xlabel="lambda", ylabel="linear", baselines=[Reference("random init", 75.52, 1.46, 3)],
                  series=[Series("PIRL", lambdas, [73.02, 73.77, 74.77, 75.47, 71.65], [2.24, 0.94, 0.69, 0.58, 0.93],
                                 [3] * 5)])
    assert separation(knn, positive_only=True).startswith("kNN separates: every one of 4 points at lambda > 0")
    assert separation(knn).startswith("kNN does not separate: of 5 points, 4 above")  # lambda = 0 (NPID) within
    assert separation(linear, positive_only=True) == ("linear does not separate: of 4 points at lambda > 0, 0 above "
                                                     "random init and 1 below by more than the seeds' spread")
