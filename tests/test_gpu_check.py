"""benchmarks/gpu_check.sh at tiny sizes on the CPU: the table it prints, and checks that fail on a perturbed input."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sweep_jobs import PATIENCE_S

REPO = Path(__file__).resolve().parents[1]


def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def table_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert lines[0] == "| section | check | result | target | status |" and lines[1] == "|---|---|---|---|---|"
    return [[cell.strip().replace("\\|", "|") for cell in line[2:-2].split(" | ")] for line in lines[2:]]


def test_cpu_tiny_run_prints_every_row_and_every_check_passes(tmp_path):
    out = tmp_path / "table.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PIRL_ABLATE_CACHE": str(tmp_path / "cache"), "PYTHON": sys.executable}
    env.pop("OUT", None)
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--tiny", "--out",
                           str(out)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=PATIENCE_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = table_rows(out.read_text())
    assert out.read_text() in proc.stdout  # printed, and written to --out
    assert all(len(r) == 5 for r in rows)
    checks = [what for section, what, *_ in rows if section == "correctness"]
    for name in ("image", "jigsaw", "rotation", "rotation+jigsaw", "jigsaw, |T| = 10"):
        assert f"transform `{name}`: cpu view = cpu view, same draws" in checks
    for scoring in ("chunked", "dense bf16"):
        assert f"PIRL loss, {scoring} scoring on cpu = cpu float64" in checks
        assert f"PIRL loss gradient, {scoring} scoring = cpu float64" in checks
    assert any(c.startswith("memory bank update") for c in checks)
    assert any(c.startswith("tiny run, fp32 + channels_last") for c in checks)  # bf16 autocast on CUDA only
    assert [r[4] for r in rows if r[0] == "correctness"] == ["ok"] * len(checks)
    speed = {what: result for section, what, result, *_ in rows if section == "speed"}
    for prefix in ("bare backbone step", "PIRL step, chunked", "PIRL step, dense", "transforms", "loss + bank, chunked",
                   "loss + bank, dense"):
        (result,) = [r for what, r in speed.items() if what.startswith(prefix)]
        assert float(result.split(" ms")[0].split()[-1].rstrip("x,")) > 0
    assert len([r for r in rows if r[0] == "input" and r[2].endswith(" img/s")]) == 2
    assert all(r[4] == "-" for r in rows if r[0] != "correctness")  # the speed targets are for a GPU


@pytest.mark.parametrize("rows", ["transform_rows", "loss_rows"])
def test_a_perturbed_device_input_fails_every_comparison(rows):
    module = gpu_check()
    checked = getattr(module, rows)(torch.device("cpu"), module.TINY, perturb=1e-2)
    assert checked and [r.status for r in checked] == ["FAIL"] * len(checked)
