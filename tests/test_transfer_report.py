"""Transfer reports: Tables 1 and 6 (detection), the VOC07 SVM column of Table 2, Figure 7 on VOC07 SVM mAP, each
next to the paper's numbers; seed aggregates checked against the statistics module."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
from test_report import _run

from pirl_ablate.report import paper
from pirl_ablate.report.registry import TABLES
from pirl_ablate.report.results import load_results

DETECTION = {("PIRL", 0): 50.0, ("PIRL", 1): 52.0, ("Jigsaw", 0): 40.0}


def _detection(dataset: str, ap: float) -> dict:
    return {"protocol": "detection", "dataset": dataset, "bn": "train", "wall_s": 1.0,
            "metrics": {"c4": {"AP": ap, "AP50": ap + 25, "AP75": ap + 5, "coco_AP": ap - 1}}}


def _svm(mAP: float) -> dict:
    return {"protocol": "svm", "dataset": "voc2007", "bn": "train", "wall_s": 1.0,
            "metrics": {"res5": {"mAP": mAP}, "res4": {"mAP": mAP - 5}}}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("transfer") / "runs"
    for (variant, seed), ap in DETECTION.items():
        _run(root, "transfer", f"{variant}-{seed}", seed, variant=variant,
             evals={"detection-voc0712": _detection("voc0712", ap), "detection-voc07": _detection("voc07", ap - 9)})
    for variant, mAP in (("PIRL", 70.0), ("Jigsaw", 55.0)):
        _run(root, "loss_variants", variant, 0, variant=variant, evals={"svm-voc2007": _svm(mAP)})
    for variant, base in (("PIRL", 60.0), ("Jigsaw", 50.0)):
        for t in (10, 100):
            _run(root, "num_permutations", f"{variant}-{t}", 0, {"jigsaw.num_permutations": t}, variant=variant,
                 evals={"svm-voc2007": _svm(base + t / 10)})
    return root


def test_table1_detection_seed_means_and_paper_rows(results: Path):
    report = TABLES.get("table1")(load_results(results))
    ours = report.blocks[0]
    assert ours.title.startswith("ours: voc0712 detection (c4)")
    assert ours.columns == ["AP", "AP50", "AP75", "coco_AP"]
    rows = {r.label: r for r in ours.rows}
    pirl = [DETECTION[("PIRL", s)] for s in (0, 1)]
    assert rows["PIRL"].cells["AP"].mean == pytest.approx(statistics.mean(pirl))
    assert rows["PIRL"].cells["AP"].std == pytest.approx(statistics.stdev(pirl)) and rows["PIRL"].cells["AP"].n == 2
    assert rows["Jigsaw"].cells["AP50"].mean == pytest.approx(65.0)
    assert rows["PIRL"].cells["AP"].best and not rows["Jigsaw"].cells["AP"].best
    published = {r.label: r for r in report.blocks[-1].rows}
    assert report.blocks[-1].title.startswith(paper.PAPER_LABEL)
    assert [published["PIRL"].cells[m].mean for m in ("AP", "AP50", "AP75")] == [54.0, 80.7, 59.7]
    assert any(b.title.startswith("ours: voc07 detection") for b in report.blocks)  # other datasets shown apart


def test_table6_puts_voc07_first_with_its_paper_numbers(results: Path):
    report = TABLES.get("table6")(load_results(results))
    assert report.blocks[0].title.startswith("ours: voc07 detection (c4)")
    assert {r.label: r for r in report.blocks[0].rows}["PIRL"].cells["AP"].mean == pytest.approx(42.0)
    published = {r.label: r for r in report.blocks[-1].rows}
    assert [published["supervised"].cells[m].mean for m in ("AP", "AP50", "AP75")] == [43.8, 74.5, 45.9]


def test_table2_has_a_voc07_svm_block(results: Path):
    report = TABLES.get("table2")(load_results(results))
    svm = next(b for b in report.blocks if "SVM" in b.title)
    assert svm.columns == ["voc2007"]
    assert {r.label: r.cells["voc2007"].mean for r in svm.rows} == {"PIRL": 70.0, "Jigsaw": 55.0}


def test_figure7_plots_voc07_svm_map_against_t(results: Path):
    report = TABLES.get("figure7")(load_results(results))
    assert report.plot is not None and report.plot.logx and report.plot.ylabel == "svm mAP (res5)"
    series = {s.label: dict(zip(s.x, s.y)) for s in report.plot.series}
    assert series["PIRL"] == {10: pytest.approx(61.0), 100: pytest.approx(70.0)}
    assert series["Jigsaw"] == {10: pytest.approx(51.0), 100: pytest.approx(60.0)}
