"""What state a sweep's run is in: from its folder, and from the scheduler when the folder alone cannot say.

A run folder holds result.json when the run ended (done / failed with a reason), meta.json once it started, and
job.json once the sweep submitted it: {"executor", "job_id", "folder" (submitit's folder, '%j' in it)}. A run
with no result.json whose job no longer exists died without writing one (scancel, time limit without requeue,
out of memory, a killed process): it is failed, with the scheduler's state as the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pirl_ablate.runs import (
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_PENDING,
    STATUS_RUNNING,
    RunDir,
    UnreadableFile,
    atomic_write_json,
    now,
    read_json_object,
)
from pirl_ablate.sweep.spec import eval_targets

JOB_FILE = "job.json"
SLURM_ALIVE = {"PENDING": STATUS_PENDING, "REQUEUED": STATUS_PENDING, "REQUEUE_HOLD": STATUS_PENDING,
               "REQUEUE_FED": STATUS_PENDING, "CONFIGURING": STATUS_PENDING, "RESV_DEL_HOLD": STATUS_PENDING,
               "SUSPENDED": STATUS_RUNNING, "RUNNING": STATUS_RUNNING, "COMPLETING": STATUS_RUNNING,
               "STAGE_OUT": STATUS_RUNNING, "SIGNALING": STATUS_RUNNING, "RESIZING": STATUS_RUNNING}


@dataclass(frozen=True)
class RunState:
    """state: pending | running | done | failed. detail: the failure reason, or where the job is.
    live: a job for this run is queued or running right now (a re-run waits for it instead of resubmitting)."""

    state: str
    detail: str = ""
    live: bool = False


# ----------------------------------------------------------------------------------------------- job records
def write_job_record(run_dir: str | os.PathLike, executor: str, job_id: str, folder: str | os.PathLike) -> None:
    """job.json: which submitit job runs this folder (so `status` can ask the scheduler). A local job (a child
    process, so its pid cannot be reused before the sweep reaps it) also records its process start time."""
    record = {"executor": executor, "job_id": str(job_id), "folder": str(folder), "submitted": now()}
    if executor == "local":
        record["process_start"] = process_start(int(job_id))
    atomic_write_json(Path(run_dir) / JOB_FILE, record)


def read_job_record(run_dir: str | os.PathLike) -> dict | None:
    try:
        return read_json_object(Path(run_dir) / JOB_FILE)
    except (FileNotFoundError, UnreadableFile):
        return None


# ------------------------------------------------------------------------------------------------------ state
def run_states(run_dirs: Sequence[str | os.PathLike], evaluate: Sequence[str] = (),
               extend: Collection[Path] = ()) -> list[RunState]:
    """The state of every run folder; SLURM jobs are looked up with one squeue and one sacct call. A done run in
    `extend` (its sweep now binds a larger train.epochs) is pending: it trains on from its checkpoint."""
    records = [read_job_record(d) for d in run_dirs]
    slurm_ids = [r["job_id"] for r in records if r and r.get("executor") == "slurm"]
    scheduler = slurm_states(slurm_ids) if slurm_ids else {}
    states = [_run_state(Path(d), r, scheduler, evaluate) for d, r in zip(run_dirs, records)]
    return [RunState(STATUS_PENDING, "train.epochs grew: trains on from its checkpoint")
            if s.state == STATUS_DONE and Path(d) in extend else s for d, s in zip(run_dirs, states)]


def run_state(run_dir: str | os.PathLike, evaluate: Sequence[str] = ()) -> RunState:
    return run_states([run_dir], evaluate)[0]


def _run_state(path: Path, record: dict | None, scheduler: dict[str, str], evaluate: Sequence[str]) -> RunState:
    run = RunDir(path)
    try:
        result = run.result()
        run.meta()
    except UnreadableFile as e:  # a re-run retires the result and rewrites meta.json
        return RunState(STATUS_FAILED, str(e))
    if result is not None and result.get("status") != STATUS_DONE:
        return RunState(STATUS_FAILED, str(result.get("reason") or "failed (no reason recorded)"))
    live, detail = _job_view(record, scheduler)
    if result is not None:
        missing = [f"{p}:{d}" if d else p for p, d in eval_targets(evaluate)
                   if not any(run.evals_dir.glob(f"{p}-{d or '*'}.json"))]
        if not missing:
            return RunState(STATUS_DONE)
        if live or live is None:
            return RunState(STATUS_RUNNING, f"evaluating ({detail})", live=True)
        return RunState(STATUS_FAILED, f"trained, but evaluation {', '.join(missing)} missing ({detail})")
    started = run.meta_path.exists()
    if record is None:
        return RunState(STATUS_RUNNING, "started outside a sweep") if started else RunState(STATUS_PENDING,
                                                                                            "not submitted")
    if live is None:  # the scheduler did not answer (yet): say what the folder says, assume the job lives
        return RunState(STATUS_RUNNING if started else STATUS_PENDING, detail, live=True)
    if live:
        state = live if record.get("executor") == "slurm" else STATUS_RUNNING if started else STATUS_PENDING
        return RunState(state, detail, live=True)
    return RunState(STATUS_FAILED, detail)


def _job_view(record: dict | None, scheduler: dict[str, str]) -> tuple[str | None | bool, str]:
    """(pending|running if the job lives, False if it is gone, None if unknown; a one-line detail)."""
    if record is None:
        return False, "no job"
    executor, job_id = record.get("executor"), str(record.get("job_id"))
    if executor == "slurm":
        state = scheduler.get(job_id)
        if state is None and not shutil.which("squeue"):
            return False, f"SLURM job {job_id}: no SLURM client on this machine to ask"
        if state is None:
            return None, f"SLURM job {job_id}: state unknown (is the scheduler reachable?)"
        if state in SLURM_ALIVE:
            return SLURM_ALIVE[state], f"SLURM job {job_id} {state}"
        return False, _with_error(f"SLURM job {job_id} ended {state} without a result", record)
    if executor == "local":
        if local_job_alive(job_id, record.get("process_start")):
            return STATUS_RUNNING, f"local job {job_id}"
        return False, _with_error(f"local job {job_id} ended without a result (killed?)", record)
    return False, _with_error(f"{executor} job {job_id} ended without a result (interrupted?)", record)


def _with_error(reason: str, record: dict) -> str:
    """Point to the job's stderr log (a text file). The job writes its own failure reason into result.json; no
    file of submitit's (its result pickle) is ever read here: unpickling a file from a results folder would run
    whatever code it names."""
    log = Path(str(record.get("folder", "")).replace("%j", str(record.get("job_id")))) / \
        f"{record.get('job_id')}_0_log.err"
    return f"{reason}; its log: {log}" if log.is_file() else reason


def process_start(pid: int) -> int | None:
    """The start time of process `pid` (clock ticks since boot, /proc/PID/stat field 22), None if it is gone.

    With the pid it names one process for good: a pid reused by a later process has another start time. It is
    set when the process is forked, so it reads the same before and after the child's exec.
    """
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat.rpartition(")")[2].split()  # after "pid (comm)": state is field 3, starttime field 22
    if fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent: not running
        return None
    return int(fields[19])


def local_job_alive(job_id: str, start: int | None = None) -> bool:
    """Whether the local executor's controller process `job_id` (a pid) still runs; `start` (job.json's
    "process_start", read when the job was submitted) tells it from a later process that got the same pid."""
    try:
        current = process_start(int(job_id))
    except ValueError:
        return False
    return current is not None and (start is None or current == start)


def slurm_states(job_ids: Iterable[str]) -> dict[str, str]:
    """SLURM state per job id ('12', '12_3'): squeue for live jobs, then sacct for ended ones. Ids neither
    knows (or no SLURM client here) are left out."""
    ids = sorted(set(job_ids))
    states: dict[str, str] = {}
    if not ids or not shutil.which("squeue"):
        return states
    for line in _run(["squeue", "--me", "-r", "-h", "-o", "%i|%T"]):
        job, _, state = line.partition("|")
        if job in ids:
            states[job] = state.split()[0]
    rest = [i for i in ids if i not in states]
    if rest and shutil.which("sacct"):
        for line in _run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(rest)]):
            job, _, state = line.partition("|")
            if job in rest and state:
                states[job] = state.split()[0]  # the last line wins: a requeued job's latest instance
    return states


def _run(cmd: list[str]) -> list[str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return proc.stdout.splitlines() if proc.returncode == 0 else []
