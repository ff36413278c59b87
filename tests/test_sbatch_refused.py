"""A job the SLURM controller refuses (gin/cluster/paper.gin's 4 nodes x 8 GPUs on a cluster without them) is
reported with sbatch's own error text and what the sweep asked for, not as an unreachable controller: against the
real local cluster (scripts/slurm-local.sh), skipped when it is not up."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pirl_ablate.cli import main

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "slurm-local.sh"

pytestmark = pytest.mark.slurm


@pytest.fixture
def slurm_conf(monkeypatch) -> str:
    if subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode != 0:
        pytest.skip("the local SLURM cluster is not up (bash scripts/slurm-local.sh start)")
    env_file = subprocess.run(["bash", str(SCRIPT), "env-file"], capture_output=True, text=True).stdout.strip()
    conf = Path(env_file).read_text().split("SLURM_CONF=", 1)[1].strip()
    monkeypatch.setenv("SLURM_CONF", conf)
    return conf


def test_a_refused_paper_job_shows_sbatchs_own_error(slurm_conf, tmp_path, capsys):
    sinfo = subprocess.run(["sinfo", "-h", "-o", "%D %G"], capture_output=True, text=True, env=os.environ).stdout
    nodes = sum(int(line.split()[0]) for line in sinfo.splitlines() if line.split())
    if nodes >= 4 and "gpu" in sinfo:
        pytest.skip(f"this cluster could run gin/cluster/paper.gin's job ({sinfo.strip()})")
    sweep = tmp_path / "paper_cluster.gin"
    sweep.write_text("include 'pirl_jigsaw.gin'\ninclude 'cluster/paper.gin'\nsweep.name = 'refused'\n")
    assert main(["--quiet", "sweep", str(sweep), "--executor", "slurm", "--out", str(tmp_path / "runs")]) == 2
    last = [line for line in capsys.readouterr().err.splitlines() if line.strip()][-1]
    assert last.startswith("error: --executor slurm: sbatch refused the job (sbatch: error: ")
    assert "4 node(s) x 8 task(s), 8 GPU(s)" in last and "controller up" not in last
