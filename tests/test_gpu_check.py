"""benchmarks/gpu_check.sh at tiny sizes on the CPU: every timing row of the table it prints (the device parity
tests it runs first are tests/test_device_parity.py, run by the suite itself)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sweep_jobs import PATIENCE_S

REPO = Path(__file__).resolve().parents[1]


def table_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert lines[0] == "| section | check | result | target | status |" and lines[1] == "|---|---|---|---|---|"
    return [[cell.strip().replace("\\|", "|") for cell in line[2:-2].split(" | ")] for line in lines[2:]]


def test_cpu_tiny_run_prints_every_row(tmp_path):
    out = tmp_path / "table.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PIRL_ABLATE_CACHE": str(tmp_path / "cache"), "PYTHON": sys.executable,
           "GPU_CHECK_TESTS": "0"}
    env.pop("OUT", None)
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--tiny", "--out",
                           str(out)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=PATIENCE_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = table_rows(out.read_text())
    assert out.read_text() in proc.stdout  # printed, and written to --out
    assert all(len(r) == 5 for r in rows)
    speed = {what: result for section, what, result, *_ in rows if section == "speed"}
    for prefix in ("bare backbone step", "PIRL step, chunked", "PIRL step, dense", "transforms", "loss + bank, chunked",
                   "loss + bank, dense"):
        (result,) = [r for what, r in speed.items() if what.startswith(prefix)]
        assert float(result.split(" ms")[0].split()[-1].rstrip("x,")) > 0
    assert len([r for r in rows if r[0] == "input" and r[2].endswith(" img/s")]) == 2
    assert all(r[4] == "-" for r in rows)  # the speed targets are for a GPU
