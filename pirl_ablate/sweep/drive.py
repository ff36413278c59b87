"""Driving a sweep (`pirl-ablate sweep`): which runs must train on, submitting and waiting for the rest, sweep.json.

The sweep folder (default runs/<sweep name>/) holds sweep.json (the expanded runs, written before anything is
submitted), one run folder per run id, and .submitit/ (submitit's pickles and logs).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pirl_ablate import checkpoint
from pirl_ablate.console import info
from pirl_ablate.errors import ConfigError, UserError
from pirl_ablate.run_guard import GROWABLE, config_changes
from pirl_ablate.runs import STATUS_DONE, RunDir, atomic_write_json, now, read_json_object
from pirl_ablate.sweep.spec import Sweep
from pirl_ablate.sweep.state import RunState, run_states

SWEEP_FILE = "sweep.json"


def runs_to_extend(sweep: Sweep, folder: Path) -> set[Path]:
    """The run folders of `sweep` under `folder` that must train on because the sweep now binds a larger
    `train.epochs`; ConfigError, naming the run and the keys, if a run folder was trained under another recipe
    (any other binding of the sweep file, its --gin files or --bind differs: the comparison `train` makes before it
    resumes, `pirl_ablate.run_guard.config_changes`). The sweep's notion of the same run is thus its whole config:
    reports never mix two recipes under one run id."""
    extend = set()
    for run in sweep.runs:
        path = RunDir(folder / run.run_id)
        if not path.config_path.is_file() or checkpoint.last(path.checkpoint_dir) is None:
            continue  # nothing trained: the run (re)starts under the sweep's config
        changes, before, after = config_changes(path, run.config)
        epochs, trained = after.get(GROWABLE), before.get(GROWABLE)
        if isinstance(epochs, int) and isinstance(trained, int) and epochs < trained:
            changes = "; ".join(filter(None, [changes, f"{GROWABLE}: {trained} -> {epochs}"]))
        if changes:
            raise ConfigError(f"{path.path}: this sweep run was trained under another config ({changes}); give the "
                              "changed recipe its own sweep folder (sweep.name or --out), or restore its bindings "
                              f"(only {GROWABLE} may grow: the run then trains on)")
        if isinstance(epochs, int) and isinstance(trained, int) and epochs > trained:
            extend.add(path.path)
    return extend


def drive(sweep: Sweep, kind: str, folder: Path, dirs: list[Path], extend: set[Path]) -> list[RunState]:
    """Submit what is neither done nor alive (or must train on), wait for it and for the runs still alive; the
    runs' states then."""
    states = run_states(dirs, sweep.settings.evaluate, extend)
    submit = [r for r, s in zip(sweep.runs, states) if s.state != STATUS_DONE and not s.live]
    watch = [r for r, s in zip(sweep.runs, states) if s.state != STATUS_DONE and s.live]
    skipped = len(sweep.runs) - len(submit) - len(watch)
    if kind == "slurm" and submit and not shutil.which("sbatch"):
        raise UserError("--executor slurm: no `sbatch` on PATH (on one machine: `scripts/slurm-local.sh start` and "
                        "export SLURM_CONF; or use --executor local)")
    for run in submit:
        RunDir(folder / run.run_id).retire_result()  # a failed run runs again
    write_sweep_record(folder, sweep, kind)
    info(f"sweep {sweep.name}: {len(sweep.runs)} runs -> {folder}  ({skipped} done already, {len(submit)} to run "
         f"on {kind}{f', waiting for {len(watch)} still running' if watch else ''})")
    from pirl_ablate.sweep.executors import execute

    with _sigterm_as_interrupt():
        execute(kind, sweep, folder.resolve(), submit, watch)
    return run_states(dirs, sweep.settings.evaluate)


# ------------------------------------------------------------------------------------------------ sweep.json
def write_sweep_record(folder: Path, sweep: Sweep, executor: str) -> None:
    """sweep.json: the expanded runs, so that `status` (and reports) know every run, started or not."""
    atomic_write_json(folder / SWEEP_FILE, {
        "name": sweep.name, "sweep_file": str(sweep.path), "executor": executor, "axes": sweep.axes,
        "evaluate": list(sweep.settings.evaluate), "written": now(),
        "runs": [{"run_id": r.run_id, "variant": r.variant, "bindings": r.bindings, "seed": r.seed}
                 for r in sweep.runs],
    })


def read_sweep_record(folder: Path) -> dict[str, Any]:
    try:
        record = read_json_object(folder / SWEEP_FILE)
    except FileNotFoundError:
        hint = "" if folder.is_dir() else " (no such folder)"
        raise UserError(f"{folder}: not a sweep folder, no {SWEEP_FILE}{hint}; run `pirl-ablate sweep` first"
                        ) from None
    runs = record.get("runs")
    if not isinstance(runs, list) or not all(isinstance(r, dict) and "run_id" in r for r in runs):
        raise UserError(f"{folder / SWEEP_FILE}: unreadable (no list of runs with a run_id each); "
                        "`pirl-ablate sweep` writes it again")
    return record


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """`kill PID` stops the sweep like Ctrl-C: local jobs are stopped, SLURM jobs keep running. Ctrl-C works even
    when the sweep was started with SIGINT ignored (in the background of a non-interactive shell, as CI does): the
    handler is Python's again, and the jobs it starts get the default disposition, so they can be stopped too."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # children: SIG_DFL, not SIG_IGN
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)

