"""The job submitit runs for one sweep run, in the worker process (a SLURM task, a local subprocess, or in-process
for the debug executor).

The job carries the run's full gin text and re-parses it in the worker (gin bindings do not survive pickling).
It is a `submitit.helpers.Checkpointable`: on preemption or a time limit submitit pickles the job again and requeues
it, and the restarted job resumes from the run folder's last checkpoint (the training function's auto-resume), so
the job itself keeps no state beyond its arguments.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import submitit

from pirl_ablate.locks import folder_lock
from pirl_ablate.runs import RunDir
from pirl_ablate.sweep.spec import Run, eval_targets

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def import_target(path: str) -> Callable[[str, Path], dict]:
    """`package.module.function` -> the function (the sweep's `job`, e.g. pirl_ablate.build.run_training)."""
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise RuntimeError(f"sweep.job {path!r} cannot be imported: {e}") from e


def one_line(e: BaseException) -> str:
    """`Type: first line of the message`, for result.json's "reason"."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


class SweepJob(submitit.helpers.Checkpointable):
    """Train (and evaluate) one run of a sweep into `run_dir`.

    target: dotted path of `fn(config_str, run_dir) -> dict` that parses the config in this process, trains with
    auto-resume from run_dir's last checkpoint, records the start with RunDir.start and writes result.json.
    evaluate, eval_layers: protocols ('protocol' or 'protocol:dataset', `SweepSettings.evaluate`) and linear-probe
    layers for pirl_ablate.evaluate.run_evaluations once training is done (one call per dataset).
    threads: torch/OpenMP threads of this process.
    """

    def __init__(self, run: Run, run_dir: str | os.PathLike, sweep: str, target: str,
                 evaluate: Sequence[str] = (), eval_layers: Sequence[str] = ("res5",), threads: int | None = None):
        self.run = run
        self.run_dir = str(run_dir)
        self.sweep = sweep
        self.target = target
        self.evaluate = list(evaluate)
        self.eval_layers = list(eval_layers)
        self.threads = threads
        self._requeueing = False  # set by `checkpoint`; never pickled

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "_requeueing"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _requeueing=False)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """submitit calls this on preemption or a time limit, just before `scontrol requeue`. From here on an
        exception out of the training (e.g. that requeue's SIGTERM reaching the `scontrol` process before it exits,
        seen as CalledProcessError under load) is the job being requeued, not a failure of the run: a failure the
        target recorded is retired (`RunDir.retire_result`), and the requeued job resumes from its checkpoint."""
        self._requeueing = True
        return super().checkpoint(*args, **kwargs)

    def __call__(self) -> dict[str, Any]:
        env = _job_environment()
        rank0 = env is None or env.global_rank == 0  # DDP (tasks_per_node > 1): rank 0 owns the run folder
        self._limit_threads()
        run_dir = RunDir(self.run_dir)
        # rank 0 holds the run folder for the whole job; while another process writes it (a `train`, or the worker of
        # an interrupted sweep still ending) the job waits for it to end, then resumes from the checkpoint it left
        with folder_lock(run_dir.path, "run", wait=True) if rank0 else contextlib.nullcontext():
            return self._run(run_dir, rank0, env)

    def _run(self, run_dir: RunDir, rank0: bool, env: submitit.JobEnvironment | None) -> dict[str, Any]:
        if rank0:  # the sweep's columns; the target's RunDir.start adds provenance and counts restarts
            run_dir.update_meta(run_id=self.run.run_id, seed=self.run.seed, bindings=self.run.bindings,
                                sweep=self.sweep, variant=self.run.variant,
                                job_id=env.job_id if env is not None else None)
        try:
            target = import_target(self.target)
            self._limit_threads()  # again: the target's import may have loaded torch
            result = target(self.run.config, run_dir.path)
            if self.evaluate:
                self._evaluate(run_dir, rank0, env)
        except Exception as e:
            if rank0 and self._requeueing:  # the run goes on in the requeued job: no failure of its own
                run_dir.retire_result()  # what the target recorded on its way out
                raise
            previous = run_dir.result() or {}
            if rank0 and previous.get("status") != "failed":  # keep the reason the target recorded
                run_dir.fail(one_line(e), **{k: v for k, v in previous.items() if k not in ("status", "end")})
            raise
        return run_dir.result() or result

    def _evaluate(self, run_dir: RunDir, rank0: bool, env: submitit.JobEnvironment | None) -> None:
        """Once training is done, each protocol of `evaluate` under the run's own config (the sweep's bindings of
        the protocols, e.g. detection_eval.*, apply), once per run. In a job of several tasks the protocols that run
        data parallel with their settings (detection, the online linear protocol:
        `pirl_ablate.evaluate.registry.runs_data_parallel`) run over all of them, in a process group of their own;
        then the group ends and rank 0 alone runs the others, so that no rank waits in a collective (and its
        timeout) through a long one-process evaluation."""
        from pirl_ablate import distributed
        from pirl_ablate.gin_edge import data_parallel_protocols

        targets = eval_targets(self.evaluate)
        several_tasks = env is not None and env.num_tasks > 1
        parallel = data_parallel_protocols([p for p, _ in targets], [self.run.config]) if several_tasks else set()
        done = rank0 and (run_dir.result() or {}).get("status") == "done"
        if parallel:
            world = distributed.setup()
            try:
                done = distributed.all_true(done or not rank0, world)  # rank 0's word for every rank
                if done:
                    self._evaluate_group(run_dir, [(p, d) for p, d in targets if p in parallel])
            finally:
                distributed.teardown(world)
        if rank0 and done:
            self._evaluate_group(run_dir, [(p, d) for p, d in targets if p not in parallel])

    def _evaluate_group(self, run_dir: RunDir, targets: list[tuple[str, str | None]]) -> None:
        """`run_evaluations` once per dataset of `targets` ((protocol, dataset or None))."""
        from pirl_ablate.gin_edge import run_evaluations

        by_dataset: dict[str | None, list[str]] = {}
        for protocol, dataset in targets:
            by_dataset.setdefault(dataset, []).append(protocol)
        for dataset, protocols in by_dataset.items():
            run_evaluations(run_dir.path, protocols, dataset=dataset, layers=self.eval_layers,
                            bindings=[self.run.config])

    def _limit_threads(self) -> None:
        if not self.threads:
            return
        for name in THREAD_VARIABLES:
            os.environ[name] = str(self.threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(self.threads)


def _job_environment() -> submitit.JobEnvironment | None:
    """submitit's view of this task (rank, number of tasks), None when not run by submitit (debug executor)."""
    try:
        return submitit.JobEnvironment()
    except RuntimeError:
        return None
