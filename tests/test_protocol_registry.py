"""A protocol registered in one file with one decorator (tests/user_protocols.py, README's example) is reachable from
`pirl-ablate eval --protocol`, a sweep's `sweep.evaluate`, the sweep's report and `pirl-ablate list protocols`, its
settings from gin."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from tiny_pirl import untrained

from pirl_ablate.cli import main
from pirl_ablate.runs import read_json

SIZE = 24  # synthetic images per split (4 classes)
PROTOCOL = "import user_protocols\ncentroid.layer = 'res4'\n"


def _expect_centroid(result: dict) -> None:
    """The result as the protocol and the config make it: the bound layer, every test image, a whole number of them
    right."""
    assert (result["protocol"], result["dataset"], result["num_test"]) == ("centroid", "synthetic", SIZE)
    (layer, metrics), = result["metrics"].items()
    assert layer == "res4"
    right = metrics["top1"] * SIZE / 100
    assert 0 <= metrics["top1"] <= 100 and abs(right - round(right)) < 1e-9


def test_a_user_protocol_runs_through_eval_and_a_sweep(tmp_path: Path, capsys) -> None:
    run_config = tmp_path / "run.gin"
    run_config.write_text(untrained(SIZE, 16, 8))
    run = tmp_path / "run"
    assert main(["--quiet", "train", str(run_config), "--out", str(run)]) == 0
    protocol_gin = tmp_path / "centroid.gin"
    protocol_gin.write_text(PROTOCOL)
    assert main(["--quiet", "eval", str(run), "--protocol", "centroid", "--gin", str(protocol_gin)]) == 0
    _expect_centroid(read_json(run / "evals" / "centroid-synthetic.json"))

    sweep = tmp_path / "sweep.gin"
    sweep.write_text(untrained(SIZE, 16, 8) + PROTOCOL + "sweep.name = 'centroid'\nsweep.grid = {'train.seed': [0]}\n"
                     "sweep.executor = 'debug'\nsweep.evaluate = ['centroid']\n")
    results = tmp_path / "results"
    assert main(["--quiet", "sweep", str(sweep), "--out", str(results / "centroid")]) == 0
    (evaluated,) = (results / "centroid").glob("*/evals/centroid-synthetic.json")
    _expect_centroid(read_json(evaluated))
    assert main(["--quiet", "report", str(sweep), "--results", str(results), "--format", "csv", "--out",
                 str(tmp_path / "reports")]) == 0
    rows = csv.DictReader((tmp_path / "reports" / "centroid.csv").read_text().splitlines())
    (reported,) = [float(r["mean"]) for r in rows if r["column"] == "centroid/res4/top1"]
    assert reported == pytest.approx(read_json(evaluated)["metrics"]["res4"]["top1"])

    capsys.readouterr()
    assert main(["list", "protocols"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("centroid", "linear", "knn", "svm", "low-shot", "detection"))


def test_an_unknown_protocol_is_one_line_naming_the_registered_ones(tmp_path: Path, capsys) -> None:
    run_config = tmp_path / "run.gin"
    run_config.write_text(untrained(SIZE, 16, 8))
    assert main(["--quiet", "train", str(run_config), "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["--quiet", "eval", str(tmp_path / "run"), "--protocol", "knnn"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown protocol `knnn`") and "`knn`" in err and len(err.splitlines()) == 1, err
