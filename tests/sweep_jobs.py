"""A tiny stand-in for `run_training`, importable by sweep workers (tests put this folder on PYTHONPATH).

`run_tiny(config_str, run_dir)` follows the training contract: it re-parses the shipped gin text in the worker,
records the start (RunDir.start), "trains" for `steps` steps, saving a checkpoint after every step through the
run-folder writer, resumes from the last checkpoint when restarted, and writes result.json. It can fail on purpose
(an exception, or a hard exit that leaves no result).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import gin

from pirl_ablate import config
from pirl_ablate.runs import RunDir, atomic_write_json, read_json


@gin.configurable
def tiny_train(lr: float = 0.1, name: str = "tiny", seed: int = 0, steps: int = 3, step_s: float = 0.0,
               fail_at: int | None = None, exit_at: int | None = None, hold_at: int | None = None) -> dict:
    """The bound parameters (the job reads them as the worker's gin config sees them). hold_at: after that step
    the job waits until it is stopped (a run that is certainly unfinished when a test interrupts it)."""
    return {"lr": lr, "name": name, "seed": seed, "steps": steps, "step_s": step_s, "fail_at": fail_at,
            "exit_at": exit_at, "hold_at": hold_at}


def parse_light(config_str: str) -> None:
    """`config.parse_text` without importing the package's torch modules first when the text binds only the sweep's
    and tiny_train's configurables (the tiny job's own config): a full import costs every tiny job seconds of CPU
    and tests nothing here. Any other text (a binding of `train`, `knn_eval`, ...) goes through `config.parse_text`."""
    import pirl_ablate.sweep.spec  # noqa: F401  (registers sweep.*, local.*, slurm.*)

    gin.clear_config()
    try:
        gin.parse_config(config_str)
    except config.GIN_ERRORS:
        config.parse_text(config_str)
        return
    gin.finalize()


def run_tiny(config_str: str, run_dir: Path) -> dict:
    parse_light(config_str)
    p = tiny_train()
    run = RunDir(run_dir)
    run.start(config_str, seed=p["seed"])  # like run_training: provenance, restarts counted
    last = run.checkpoint_dir / "last.json"
    step = read_json(last)["step"] if last.exists() else 0
    run.log_metrics({"event": "start", "from_step": step, "pid": os.getpid(), "time": time.time(),
                     "job_id": os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")})
    while step < p["steps"]:
        time.sleep(p["step_s"])
        step += 1
        if step == p["fail_at"]:
            raise RuntimeError(f"tiny job failed on purpose at step {step}")
        if step == p["exit_at"]:
            os._exit(3)
        atomic_write_json(last, {"step": step})
        run.log_metrics({"step": step, "time": time.time()})
        while step == p["hold_at"]:
            time.sleep(0.1)
    return run.finish(steps=step, seen={k: p[k] for k in ("lr", "name", "seed")}, pid=os.getpid())


# ------------------------------------------------------------------------------------------ helpers for tests
TESTS_DIR = Path(__file__).resolve().parent
# How long a test waits on a subprocess (a sweep, a job, a SLURM state) before calling it hung. A hang guard, not a
# speed check: a worker that imports torch on a machine with a CPU hog beside it can take minutes to start.
PATIENCE_S = 1200

HEADER = """import sweep_jobs
sweep.job = 'sweep_jobs.run_tiny'
sweep.seed_binding = 'tiny_train.seed'
"""


def write_sweep(folder: Path, body: str, name: str = "tiny.gin") -> Path:
    """A sweep file over the tiny job: HEADER (import, job, seed binding) then `body`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(HEADER + body)
    return path


def worker_env() -> dict[str, str]:
    """This environment with the tests folder on PYTHONPATH, so that sweep workers can import this module, and a
    wide terminal so that printed lines do not wrap."""
    env = {**os.environ, "COLUMNS": "300"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH", "")) if p)
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pirl_ablate.cli", *args]


def starts(run_dir: Path) -> list[dict]:
    """The tiny job's "start" events of a run (one per process that ran it)."""
    return [row for row in RunDir(run_dir).metrics() if row.get("event") == "start"]
