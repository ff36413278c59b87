"""Configurables renamed for clarity keep their old gin names: `PIRLLoss` is `PIRL`, `NPIDLoss` `NPID`, `JigsawLoss`
`JigsawMethod`, `RotationLoss` `RotationMethod`, `SupervisedLoss` `Supervised`, `PIRLNet` (the heads' settings)
`heads`. Old gin files, `--bind`, recorded configs, sweep run ids and reports keep working."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import gin
import pytest
from tiny_pirl import TINY

from pirl_ablate import checkpoint, config
from pirl_ablate.cli import main
from pirl_ablate.report.results import operative_values
from pirl_ablate.run_guard import config_changes
from pirl_ablate.runs import RunDir
from pirl_ablate.sweep.spec import run_id


@pytest.fixture
def fresh_warnings(monkeypatch):
    """The once-per-process warnings as in a new process."""
    monkeypatch.setattr(config, "_warned", set())
    yield
    gin.clear_config()


def test_old_names_bind_the_renamed_configurables_with_one_warning_each(tmp_path: Path, capsys, fresh_warnings):
    run_config = tmp_path / "old.gin"
    run_config.write_text(TINY.replace("PIRL.", "PIRLLoss.").replace("NPID.", "NPIDLoss.") + "train.epochs = 0\n"
                          "train.monitor_every = 0\nPIRLNet.embed_dim = 16\n")
    out = tmp_path / "run"
    assert main(["--quiet", "train", str(run_config), "--out", str(out), "--bind", "PIRLLoss.num_negatives = 7",
                 "--bind", "PIRLLoss.lambda_ = 0.25"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert sorted(warnings) == ["warning: `NPIDLoss` is now `NPID` (`NPIDLoss.*` bindings still apply; write "
                                "`NPID.*`)",
                                "warning: `PIRLLoss` is now `PIRL` (`PIRLLoss.*` bindings still apply; write "
                                "`PIRL.*`)",
                                "warning: `PIRLNet` is now `heads` (`PIRLNet.*` bindings still apply; write "
                                "`heads.*`)"], err
    method = checkpoint.run_record(out)["method"]["config"]
    assert (method["num_negatives"], method["lambda_"], method["embed_dim"]) == (7, 0.25, 16)
    recorded = config.bindings_of((out / "config.gin").read_text())
    assert recorded["PIRL.num_negatives"] == 7 and recorded["heads.embed_dim"] == 16


def test_a_recorded_config_with_old_names_parses_resumes_and_reports(tmp_path: Path, fresh_warnings):
    old = "PIRLLoss.tau = 0.3\nPIRLNet.embed_dim = 16\nJigsawLoss.num_patches = 4\ntrain.epochs = 2\n"
    config.parse_text(old, finalize=False)
    assert gin.query_parameter("PIRL.tau") == 0.3 and gin.query_parameter("heads.embed_dim") == 16
    assert gin.query_parameter("JigsawMethod.num_patches") == 4
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.config_path.write_text(old)
    new = "PIRL.tau = 0.3\nheads.embed_dim = 16\nJigsawMethod.num_patches = 4\ntrain.epochs = 2\n"
    assert config_changes(run, new)[0] == ""  # the same config: a resume is allowed
    assert "PIRL.tau: 0.3 -> 0.2" in config_changes(run, new.replace("0.3", "0.2"))[0]
    assert operative_values(run.config_path, ["PIRL.tau"]) == {"config:PIRL.tau": 0.3}


def test_sweep_run_ids_hash_the_first_names(tmp_path: Path) -> None:
    # the id a sweep recorded before the rename: sha1 of its bindings under the old name, its seed and variant
    key = json.dumps({"bindings": [["PIRLLoss.lambda_", "0.5"]], "seed": 0, "variant": None}, sort_keys=True)
    recorded = hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]
    assert run_id({"PIRL.lambda_": 0.5}, 0, None) == recorded
    assert run_id({"PIRLLoss.lambda_": 0.5}, 0, None) == recorded
