"""Sweeps through a REAL single-node SLURM cluster (scripts/slurm-local.sh): job arrays, requeue + resume, failures.

The session fixture starts the cluster (or uses the one CI started) and exports SLURM_CONF. Without root, apt or
SLURM the tests skip with the reason, unless PIRL_ABLATE_REQUIRE_SLURM=1 (CI), where they fail instead. Each test
uses a fresh tmp folder: submitit keys its files by job id, and job ids restart after a purge.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sweep_jobs import PATIENCE_S, cli_command, starts, worker_env, write_sweep
from tiny_pirl import TINY

from pirl_ablate.runs import RunDir, read_json
from pirl_ablate.sweep import load_sweep
from pirl_ablate.sweep.state import run_state, slurm_states

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "slurm-local.sh"

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _unavailable(reason: str) -> None:
    if os.environ.get("PIRL_ABLATE_REQUIRE_SLURM") == "1":
        pytest.fail(f"SLURM required (PIRL_ABLATE_REQUIRE_SLURM=1) but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[str]:
    """SLURM_CONF of a running cluster; started here (and stopped after the session) unless already up."""
    already_up = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode == 0
    if not already_up:
        if os.geteuid() != 0:
            _unavailable("real SLURM tests need root: scripts/slurm-local.sh runs slurmctld/slurmd as root")
        if not shutil.which("slurmctld") and not shutil.which("apt-get"):
            _unavailable("no SLURM installed and no apt-get to install it (scripts/slurm-local.sh start)")
        proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            _unavailable(f"scripts/slurm-local.sh start failed: {(proc.stdout + proc.stderr).strip()[-400:]}")
    env_file = subprocess.run(["bash", str(SCRIPT), "env-file"], capture_output=True, text=True).stdout.strip()
    conf = Path(env_file).read_text().split("SLURM_CONF=", 1)[1].strip()
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf  # sbatch/squeue/sacct of this process and the CLI subprocesses
    yield conf
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous
    if not already_up:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=300)


def _sweep(path: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(cli_command("sweep", str(path), "--out", str(out), "--executor", "slurm", *extra),
                            cwd=path.parent, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _wait_for(condition, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None or time.time() > deadline:
            output = proc.stdout.read() if proc.poll() is not None and proc.stdout else ""
            pytest.fail(f"gave up waiting for {what} (sweep exit {proc.poll()}): {output[-2000:]}")
        time.sleep(0.3)


@pytest.mark.timeout(3 * PATIENCE_S)
def test_slurm_sweep_runs_as_one_array_and_status_reports_failures(slurm_cluster, tmp_path):
    """Three runs in one job array (2 at a time): one finishes, one raises (reason from result.json), one is
    cancelled with scancel while it runs (reason from the scheduler: CANCELLED)."""
    path = write_sweep(tmp_path, """
sweep.name = 'slurmy'
slurm.partition = 'debug'
slurm.array_parallelism = 2
slurm.time_min = 10
tiny_train.steps = 2
sweep.variants = {'ok': [], 'boom': ['tiny_train.fail_at = 1'],
                  'cancelled': ['tiny_train.steps = 600', 'tiny_train.step_s = 0.5']}
""")
    out = tmp_path / "runs"
    runs = {r.variant: out / r.run_id for r in load_sweep(path).runs}
    proc = _sweep(path, out)
    _wait_for(lambda: (runs["cancelled"] / "checkpoints" / "last.json").exists(), proc, PATIENCE_S, "the long run")
    jobs = {v: read_json(d / "job.json")["job_id"] for v, d in runs.items()}
    assert len({j.split("_")[0] for j in jobs.values()}) == 1  # one array
    assert sorted(j.split("_")[1] for j in jobs.values()) == ["0", "1", "2"]
    subprocess.run(["scancel", jobs["cancelled"]], check=True)
    stdout, _ = proc.communicate(timeout=PATIENCE_S)
    assert proc.returncode == 1, stdout

    assert run_state(runs["ok"]).state == "done"
    assert read_json(runs["ok"] / "result.json")["seen"]["name"] == "tiny"
    boom = run_state(runs["boom"])
    assert (boom.state, boom.detail) == ("failed", "RuntimeError: tiny job failed on purpose at step 1")
    cancelled = run_state(runs["cancelled"])
    assert cancelled.state == "failed" and f"SLURM job {jobs['cancelled']} ended CANCELLED" in cancelled.detail
    assert slurm_states([jobs["ok"]]) == {jobs["ok"]: "COMPLETED"}  # what sacct says, independently

    status = subprocess.run(cli_command("status", str(out)), capture_output=True, text=True, env=worker_env(),
                            timeout=PATIENCE_S)
    assert status.returncode == 0, status.stderr
    rows = {v: next(line for line in status.stdout.splitlines() if d.name in line) for v, d in runs.items()}
    assert "done" in rows["ok"]
    for variant, reason in (("boom", "tiny job failed on purpose"), ("cancelled", "CANCELLED")):
        assert "failed" in rows[variant]
        note = re.search(r"error \[(\d+)\]", rows[variant]).group(1)  # the reason: one line under the table
        footnote = next(line for line in status.stdout.splitlines() if line.startswith(f"[{note}] "))
        assert reason in footnote and runs[variant].name in footnote


@pytest.mark.timeout(3 * PATIENCE_S)
def test_preempted_slurm_job_requeues_and_resumes_from_its_checkpoint(slurm_cluster, tmp_path):
    """submitit's preemption signal mid-run: the Checkpointable job requeues itself (same job id), the new start
    resumes from the last saved step, and the run finishes with every step done once."""
    import submitit

    path = write_sweep(tmp_path, """
sweep.name = 'preempt'
slurm.partition = 'debug'
slurm.time_min = 10
tiny_train.steps = 12
tiny_train.step_s = 0.5
""")
    out = tmp_path / "runs"
    run_dir = out / load_sweep(path).runs[0].run_id
    proc = _sweep(path, out)
    last = run_dir / "checkpoints" / "last.json"
    _wait_for(lambda: last.exists() and read_json(last)["step"] >= 3, proc, PATIENCE_S, "step 3")
    record = read_json(run_dir / "job.json")
    job = submitit.SlurmJob(folder=record["folder"], job_id=record["job_id"])
    job._interrupt()  # what SLURM sends before preemption: the job checkpoints and requeues itself
    stdout, _ = proc.communicate(timeout=PATIENCE_S)
    assert proc.returncode == 0, stdout

    result = read_json(run_dir / "result.json")
    assert result["status"] == "done" and result["steps"] == 12
    first, second = starts(run_dir)
    assert first["job_id"] == second["job_id"]  # requeued under the same SLURM job, not resubmitted
    assert first["from_step"] == 0 and 3 <= second["from_step"] < 12
    rows = RunDir(run_dir).metrics()
    after = [row["step"] for row in rows[rows.index(second) + 1:]]
    assert after == list(range(second["from_step"] + 1, 13))  # the second start continued where the first stopped
    assert read_json(run_dir / "meta.json")["restarts"] == 1


@pytest.mark.timeout(3 * PATIENCE_S)
def test_slurm_job_with_two_tasks_trains_one_ddp_run_and_evaluates_once(slurm_cluster, tmp_path):
    """tasks_per_node = 2: SLURM starts two processes; rank and world size come from submitit's JobEnvironment
    (no torchrun), they train one PIRL run with gloo DDP, and rank 0 alone writes the run folder. The online
    linear protocol then runs data parallel over both tasks, kNN (one process) on rank 0 alone."""
    path = tmp_path / "ddp.gin"
    path.write_text(TINY + """
train.epochs = 1
sweep.name = 'ddp'
sweep.evaluate = ['knn', 'linear']
linear_eval.mode = 'online'
linear_eval.epochs = 1
linear_eval.batch_size = 8
linear_eval.milestones = []
slurm.partition = 'debug'
slurm.time_min = 10
slurm.tasks_per_node = 2
slurm.cpus_per_task = 1
""")
    out = tmp_path / "runs"
    run_dir = out / load_sweep(path).runs[0].run_id
    proc = _sweep(path, out)
    stdout, _ = proc.communicate(timeout=PATIENCE_S)
    assert proc.returncode == 0, stdout
    result = read_json(run_dir / "result.json")
    # 48 images, global batch 16 split over the two tasks: 3 steps, each process 8 images a step
    assert (result["status"], result["world_size"], result["steps"], result["batch_size"]) == ("done", 2, 3, 16)
    assert read_json(run_dir / "meta.json")["restarts"] == 0  # one start recorded, by rank 0
    assert [r["epoch"] for r in RunDir(run_dir).metrics()] == [1]
    knn = read_json(run_dir / "evals" / "knn-synthetic.json")
    assert 0.0 <= knn["metrics"]["res5"]["top1"] <= 100.0
    linear = read_json(run_dir / "evals" / "linear-synthetic.json")
    assert (linear["mode"], linear["world_size"]) == ("online", 2)
    assert 0.0 <= linear["metrics"]["res5"]["top1"] <= 100.0
    job_id = read_json(run_dir / "job.json")["job_id"]
    deadline = time.time() + PATIENCE_S  # rank 0's result ends the sweep; the job ends when both tasks have exited 0
    while (state := slurm_states([job_id])[job_id]) in ("RUNNING", "COMPLETING") and time.time() < deadline:
        time.sleep(1)
    assert state == "COMPLETED"
    logs = [(out / ".submitit" / job_id / f"{job_id}_{task}_log.err").read_text() for task in (0, 1)]
    assert "knn on synthetic" in logs[0] and "knn on synthetic" not in logs[1]  # evaluated by rank 0 only
    assert all("linear on synthetic" in log for log in logs)  # by both tasks
