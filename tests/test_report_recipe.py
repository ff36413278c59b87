"""`pirl-ablate report sweeps/recipe.gin`: per variant, kNN, relative invariance and the last epoch's alignment
margins, uniformity and loss over chance, from run folders with known numbers (means by hand)."""

from __future__ import annotations

import argparse
import csv
import io
import re
from pathlib import Path

import pytest

from pirl_ablate.commands.report import run as report_command
from pirl_ablate.report.recipe import ORDER
from pirl_ablate.runs import RunDir
from pirl_ablate.sweep.spec import load_sweep

REPO = Path(__file__).resolve().parent.parent
# variant -> per seed: (kNN, rel. inv. res5, pos_t, neg_t, pos_i, neg_i, uniformity, loss, loss_chance)
NUMBERS = {
    "shipped (NCE, tau 0.1, Z momentum 0.5, warm bank)": [(72.0, 1.00, 0.50, 0.35, 0.60, 0.40, -2.0, 9.0, 8.0),
                                                          (74.0, 1.10, 0.48, 0.38, 0.62, 0.40, -2.2, 9.2, 8.0)],
    "InfoNCE": [(70.0, 1.02, -0.40, -0.50, 0.80, 0.70, -1.0, 5.0, 7.6),
                (71.0, 0.98, -0.46, -0.52, 0.82, 0.66, -1.2, 5.2, 7.6)],
}
RANDOM = [(67.0, 2.5), (68.0, 2.9)]  # random init: evaluations only (no training, no health numbers)


def _evals(knn: float, res5: float) -> dict:
    ds = {"dataset": "fashion_mnist", "bn": "train", "wall_s": 1.0}
    return {"knn-fashion_mnist": {"protocol": "knn", **ds, "metrics": {"res5": {"top1": knn}}},
            "invariance-fashion_mnist": {"protocol": "invariance", **ds, "metrics": {
                "res5": {"mean": 1.0, "std": 0.1, "relative": res5}}}}


def _run(root: Path, variant: str, seed: int, evals: dict, final: dict) -> None:
    run_id = f"{re.sub(r'[^a-z]', '', variant.lower())}-{seed}"
    run = RunDir(root / "recipe" / run_id)
    run.start("PIRL.lambda_ = 0.5\n", seed=seed, run_id=run_id, bindings={}, sweep="recipe", variant=variant)
    for name, result in evals.items():
        run.write_eval(name, result)
    run.finish(epochs=3, final=final, wall_s=3.0)


def test_recipe_variants_follow_the_sweep_file():
    runs = load_sweep(REPO / "sweeps" / "recipe.gin").runs
    assert tuple(dict.fromkeys(r.variant for r in runs)) == ORDER


@pytest.mark.slow  # 6 run folders, each with its git and package provenance
def test_recipe_report_gives_each_variants_mechanism_numbers(tmp_path: Path):
    root = tmp_path / "runs"
    for variant, seeds in NUMBERS.items():
        for seed, (knn, res5, pt, nt, pi, ni, unif, loss, chance) in enumerate(seeds):
            _run(root, variant, seed, _evals(knn, res5), {
                "loss": loss, "loss_chance": chance, "uniformity": unif, "pos_sim_transformed": pt,
                "neg_sim_transformed": nt, "pos_sim_image": pi, "neg_sim_image": ni})
    for seed, (knn, res5) in enumerate(RANDOM):
        _run(root, "random init", seed, _evals(knn, res5), {"loss": 0.0})
    args = argparse.Namespace(table=None, figure=None, sweep=str(REPO / "sweeps" / "recipe.gin"),
                              results=str(root), format="csv", out=str(tmp_path / "reports"))
    assert report_command(args) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "reports" / "recipe.csv").read_text())))
    rows = [r for r in rows if r["kind"] in ("method", "baseline")]
    table = {(r["row"], r["column"]): float(r["mean"]) for r in rows}
    shipped = "shipped (NCE, tau 0.1, Z momentum 0.5, warm bank)"
    # by hand: margins (0.15 + 0.10) / 2 and (0.20 + 0.22) / 2; loss / chance (1.125 + 1.15) / 2
    assert table[shipped, "kNN"] == pytest.approx(73.0)
    assert table[shipped, "margin transformed"] == pytest.approx(0.125)
    assert table[shipped, "margin image"] == pytest.approx(0.21)
    assert table[shipped, "uniformity"] == pytest.approx(-2.1)
    assert table[shipped, "loss / chance"] == pytest.approx(1.1375)
    # InfoNCE: both transformed cosines negative, yet the margin (0.10 + 0.06) / 2 is positive
    assert table["InfoNCE", "margin transformed"] == pytest.approx(0.08)
    assert table["InfoNCE", "rel. invariance res5"] == pytest.approx(1.0)
    assert table["random init", "rel. invariance res5"] == pytest.approx(2.7)
    assert ("random init", "margin transformed") not in table
    assert [r["row"] for r in rows if r["column"] == "kNN"] == [shipped, "InfoNCE", "random init"]
