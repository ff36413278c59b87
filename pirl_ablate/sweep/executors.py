"""Executors: send a sweep's jobs through submitit and wait for them with a progress bar.

- slurm: one job array (`executor.batch()`), at most `slurm.array_parallelism` runs at a time; jobs requeue
  themselves on preemption / time limit (SweepJob is Checkpointable).
- local: one subprocess per run, at most `local.parallelism` at a time (submitit's LocalExecutor alone would
  start them all at once), each limited to `local.threads_per_job` threads.
- debug: in this process, one after the other (for pdb; gin is re-parsed from the shipped text all the same).

Whatever the executor, a run is finished when its folder says so (run_states): result.json written, or its job
gone without one. Runs whose job is still alive from an earlier, interrupted sweep command are waited for, not
resubmitted.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import submitit
from rich.progress import TextColumn

from pirl_ablate.console import console, progress
from pirl_ablate.errors import UserError
from pirl_ablate.runs import STATUS_DONE, STATUS_FAILED
from pirl_ablate.sweep.display import duration, run_elapsed, sweep_time_left
from pirl_ablate.sweep.job import SweepJob
from pirl_ablate.sweep.spec import Run, SlurmSettings, Sweep
from pirl_ablate.sweep.state import RunState, run_states, write_job_record

POLL_S = {"local": 1.0, "slurm": 2.0}
CONTROLLER_LOG = "controllers.log"  # stderr of submitit's local job controllers, in <sweep folder>/.submitit/
STOP_GRACE_S = 30.0  # after Ctrl-C, seconds a local job has to stop before its processes are killed


def kill_tree(pid: int) -> None:
    """SIGKILL process `pid` and its descendants (children first, read from /proc); gone ones are skipped."""
    for child in _children(pid):
        kill_tree(child)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


@contextlib.contextmanager
def _stderr_to(log: Path) -> Iterator[None]:
    """File descriptor 2 appended to `log` for the block, so that the processes started in it inherit it as their
    stderr. submitit's local job controller writes nothing but its own KeyboardInterrupt traceback there when a
    sweep is stopped (Ctrl-C reaches the terminal's whole process group; a SIGTERM to the sweep cancels each job
    with SIGINT); the job's own output goes to its log files. The console's lock is held meanwhile, so no progress
    bar refresh lands in the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with console._lock:  # rich's writer lock: the only way to keep its refresh thread out
        sys.stderr.flush()
        saved = os.dup(2)
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        try:
            os.dup2(fd, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(fd)


def submitit_folder(out: Path) -> Path:
    """Where submitit keeps its pickles and logs: <sweep folder>/.submitit/<job id>/."""
    return out / ".submitit" / "%j"


def make_executor(kind: str, sweep: Sweep, out: Path) -> submitit.Executor:
    """A submitit executor for `kind`, configured from the sweep's `local.*` / `slurm.*` bindings."""
    folder = submitit_folder(out)
    if kind == "debug":
        return submitit.AutoExecutor(folder=folder, cluster="debug")
    if kind == "local":
        ex = submitit.AutoExecutor(folder=folder, cluster="local")
        ex.update_parameters(timeout_min=sweep.local.timeout_min, name=f"pirl-{sweep.name}")
        return ex
    s = sweep.slurm
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=s.max_num_timeout)
    params: dict[str, Any] = dict(timeout_min=s.time_min, nodes=s.nodes, tasks_per_node=s.tasks_per_node,
                                  cpus_per_task=s.cpus_per_task, mem_gb=s.mem_gb, name=f"pirl-{sweep.name}",
                                  slurm_array_parallelism=s.array_parallelism,
                                  slurm_signal_delay_s=s.signal_delay_s)
    if s.gpus_per_node:
        params["gpus_per_node"] = s.gpus_per_node
    if s.partition:
        params["slurm_partition"] = s.partition
    if s.additional:
        params["slurm_additional_parameters"] = dict(s.additional)
    ex.update_parameters(**params)
    return ex


def make_job(kind: str, sweep: Sweep, run: Run, out: Path) -> SweepJob:
    threads = {"local": sweep.local.threads_per_job, "slurm": sweep.slurm.cpus_per_task}.get(kind)
    s = sweep.settings
    return SweepJob(run, out / run.run_id, sweep.name, s.job, s.evaluate, s.eval_layers, threads)


def execute(kind: str, sweep: Sweep, out: Path, submit: list[Run], watch: list[Run]) -> None:
    """Submit `submit`, wait for them and for `watch` (runs whose job is alive already) to finish."""
    if not submit and not watch:
        return
    executor = make_executor(kind, sweep, out)
    jobs = [make_job(kind, sweep, r, out) for r in submit]
    parallelism = {"local": sweep.local.parallelism, "slurm": sweep.slurm.array_parallelism}.get(kind, 1)
    tracker = _Tracker(sweep, out, len(jobs) + len(watch), parallelism)
    with tracker.bar:
        if kind == "debug":
            for run in watch:
                tracker.watch(run)
            for job in jobs:
                submitted = executor.submit(job)
                write_job_record(job.run_dir, kind, submitted.job_id, submitit_folder(out))
                tracker.watch(job.run)
                with contextlib.suppress(Exception):  # the job recorded why it failed in its folder
                    submitted.result()
                tracker.poll()
            tracker.wait(poll_s=0.0)
        elif kind == "local":
            _run_local(executor, jobs, watch, tracker, sweep.local.parallelism, out)
        else:
            _run_slurm(executor, jobs, watch, tracker, out, sweep.slurm)


def _run_local(executor: submitit.Executor, jobs: list[SweepJob], watch: list[Run], tracker: _Tracker,
               parallelism: int, out: Path) -> None:
    queue = collections.deque(jobs)
    for run in watch:
        tracker.watch(run)
    submitted: list[submitit.Job] = []
    try:
        while queue or tracker.active:
            while queue and len(tracker.active) < max(1, parallelism):
                job = queue.popleft()
                with _stderr_to(out / ".submitit" / CONTROLLER_LOG):
                    handle = executor.submit(job)
                write_job_record(job.run_dir, "local", handle.job_id, submitit_folder(out))
                submitted.append(handle)
                tracker.watch(job.run)
            for handle in submitted:
                handle.done()  # reaps the finished controller process
            tracker.poll()
            if tracker.active:
                time.sleep(POLL_S["local"])
    except KeyboardInterrupt:
        live = [h for h in submitted if not h.done()]
        for handle in live:
            handle.cancel()  # SIGINT to the job's controller, which stops the worker (SIGINT, then SIGKILL)
        began, killed = time.time(), False
        while any(not h.done() for h in live):  # exit only once they ended: a state read then says "failed"
            if not killed and time.time() - began > STOP_GRACE_S:  # a controller that did not stop: kill its tree
                console.print(f"killing {sum(not h.done() for h in live)} local job(s) that did not stop")
                for handle in live:
                    kill_tree(int(handle.job_id))
                killed = True
            time.sleep(0.2)
        console.print(f"stopped {len(live)} local job(s); run the sweep again to finish the missing runs")
        raise


# what sbatch says when it reached no controller (anything else is the controller refusing the job)
UNREACHABLE = ("unable to contact slurm controller", "connection refused", "connect failure", "socket timed out",
               "could not establish a configuration source")


def sbatch_failure(message: str, s: SlurmSettings) -> str:
    """One line for a failed sbatch: its own error text, then, when the controller answered, what the sweep asked
    for and where to change it; when none answered, whether it is up."""
    errors = [x.strip() for x in message.splitlines() if x.strip().startswith("sbatch:")] or \
        [x.strip() for x in message.splitlines() if x.strip()][-1:] or ["no message"]
    said = "; ".join(errors)
    if any(marker in message.lower() for marker in UNREACHABLE):
        return (f"--executor slurm: sbatch failed ({said}); is the SLURM controller up and SLURM_CONF right? (or use "
                "--executor local)")
    return (f"--executor slurm: sbatch refused the job ({said}); the sweep asked for {s.nodes} node(s) x "
            f"{s.tasks_per_node} task(s), {s.gpus_per_node} GPU(s) and {s.cpus_per_task} CPU(s) per task per node, "
            f"{s.mem_gb} GB, {s.time_min} min, partition {s.partition or '(the default)'}: bind slurm.* to what "
            "this cluster has (sinfo shows it)")


def _run_slurm(executor: submitit.Executor, jobs: list[SweepJob], watch: list[Run], tracker: _Tracker,
               out: Path, slurm: SlurmSettings) -> None:
    if jobs:
        try:
            with executor.batch():
                handles = [executor.submit(job) for job in jobs]
        except submitit.core.utils.FailedJobError as e:  # sbatch refused or no controller answered
            raise UserError(sbatch_failure(str(e), slurm)) from None
        for job, handle in zip(jobs, handles):
            write_job_record(job.run_dir, "slurm", handle.job_id, submitit_folder(out))
        console.print(f"submitted {len(handles)} SLURM job(s): array {handles[0].job_id.split('_')[0]}")
    for run in [*(j.run for j in jobs), *watch]:
        tracker.watch(run)
    try:
        tracker.wait(poll_s=POLL_S["slurm"])
    except KeyboardInterrupt:
        console.print(f"the SLURM jobs keep running: `pirl-ablate status {out}` shows them; run the sweep again "
                      "to wait for them")
        raise


class _Tracker:
    """The runs being waited for, and a progress bar over them with the sweep's time left (`sweep_time_left`
    from the durations of the runs finished so far, read from their folders)."""

    def __init__(self, sweep: Sweep, out: Path, total: int, parallelism: int):
        self.sweep, self.out, self.total, self.parallelism = sweep, out, total, parallelism
        self.active: dict[str, Run] = {}
        self.counts = collections.Counter()
        self.finished_s: list[float] = []
        self.bar = progress(TextColumn("{task.fields[left]}"), remaining=False)
        self.task = self.bar.add_task(self._description(), total=total, left="")

    def watch(self, run: Run) -> None:
        self.active[run.run_id] = run
        self._update()

    def poll(self) -> dict[str, RunState]:
        ids = list(self.active)
        states = run_states([self.out / i for i in ids], self.sweep.settings.evaluate)
        for run_id, state in zip(ids, states):
            if not state.live:
                del self.active[run_id]
                elapsed = run_elapsed(self.out / run_id)
                if state.state == STATUS_DONE and elapsed is not None:
                    self.finished_s.append(elapsed)
                self.counts[STATUS_DONE if state.state == STATUS_DONE else STATUS_FAILED] += 1
                self.bar.advance(self.task)
                if state.state != STATUS_DONE:
                    console.print(f"[red]run {run_id} failed:[/] {state.detail}", markup=True, soft_wrap=True)
        self._update()
        return dict(zip(ids, states))

    def wait(self, poll_s: float) -> None:
        while self.active:
            self.poll()
            if self.active:
                time.sleep(poll_s)

    def _description(self) -> str:
        return (f"{self.sweep.name}: {self.counts[STATUS_DONE]} done, {self.counts[STATUS_FAILED]} failed, "
                f"{len(getattr(self, 'active', ()))} running")

    def _update(self) -> None:
        self.bar.update(self.task, description=self._description(), left=self._left())

    def _left(self) -> str:
        """"~12m 30s left", or why there is no estimate yet."""
        queued = self.total - sum(self.counts.values()) - len(self.active)
        running = [run_elapsed(self.out / i) for i in self.active]
        left = sweep_time_left(self.finished_s, [e or 0.0 for e in running], queued, self.parallelism)
        return "time left: once a run has finished" if left is None else f"~{duration(left)} left"

