"""`pirl-ablate sweep SWEEP.gin` and `pirl-ablate status SWEEP_DIR`.

The sweep folder (default runs/<sweep name>/) holds sweep.json (the expanded runs, written before anything is
submitted), one run folder per run id, and .submitit/ (submitit's pickles and logs).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from pirl_ablate import checkpoint
from pirl_ablate.console import info, out
from pirl_ablate.errors import ConfigError, UserError
from pirl_ablate.locks import folder_lock
from pirl_ablate.run_guard import GROWABLE, config_changes
from pirl_ablate.runs import STATUS_DONE, RunDir, atomic_write_json, now, read_json_object
from pirl_ablate.sweep.display import STATE_STYLE, status_view, watch
from pirl_ablate.sweep.preflight import ensure_datasets
from pirl_ablate.sweep.spec import Run, Sweep, eval_targets, load_sweep
from pirl_ablate.sweep.state import RunState, run_states

SWEEP_FILE = "sweep.json"


def sweep_command(args: argparse.Namespace) -> int:
    """Expand, skip complete runs, submit the rest, wait; exit 0 when every run is done, 1 otherwise."""
    sweep = load_sweep(args.sweep, bindings=args.bind, gin_files=args.gin)
    kind = args.executor or sweep.settings.executor
    folder = Path(args.out) if args.out else Path("runs") / sweep.name
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder}: is a file, not a folder; give a folder for the sweep's run folders")
    dirs = [folder / r.run_id for r in sweep.runs]
    extend = runs_to_extend(sweep, folder)  # refuses a run folder trained under another recipe
    if args.dry_run:
        states = run_states(dirs, sweep.settings.evaluate, extend)
        out.print(runs_table(f"{sweep.name}: {len(sweep.runs)} runs (dry run, executor {kind})", sweep.axes,
                             [_row(r, s) for r, s in zip(sweep.runs, states)]))
        out.print(evaluation_line(sweep), markup=False, soft_wrap=True)
        return 0
    pending = [r for r, s in zip(sweep.runs, run_states(dirs, sweep.settings.evaluate, extend))
               if s.state != STATUS_DONE]
    ensure_datasets(pending, sweep.settings.job)  # before anything is written: a missing dataset is one line
    with folder_lock(folder, "sweep"):  # a second sweep command on this folder is refused, naming this one
        return _drive(sweep, kind, folder, dirs, runs_to_extend(sweep, folder))


def evaluation_line(sweep: Sweep) -> str:
    """What each run is evaluated with once trained: "evaluation: svm on voc2007, linear on the pre-training
    dataset (layers res5)", or "evaluation: none"."""
    targets = eval_targets(sweep.settings.evaluate)
    if not targets:
        return "evaluation: none"
    parts = ["detection (its VOC data: detection_eval.*)" if p == "detection" else
             f"{p} on {d or 'the pre-training dataset'}" for p, d in targets]
    return f"evaluation: {', '.join(parts)} (layers {', '.join(sweep.settings.eval_layers)})"


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


def _drive(sweep: Sweep, kind: str, folder: Path, dirs: list[Path], extend: set[Path]) -> int:
    """Submit what is neither done nor alive (or must train on), wait for it and for the runs still alive, print
    the table."""
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
    states = run_states(dirs, sweep.settings.evaluate)
    out.print(status_view(read_sweep_record(folder), folder, states))
    return 0 if all(s.state == STATUS_DONE for s in states) else 1


def status_command(args: argparse.Namespace) -> int:
    """Print every run's state, progress and failure reason (pirl_ablate.sweep.display) from the folders and the
    scheduler; with --watch, redraw it until no run is queued or running (exit 0 if all are done, else 1)."""
    folder = Path(args.sweep_dir)
    record = read_sweep_record(folder)
    if getattr(args, "watch", False):
        if not math.isfinite(args.interval) or args.interval <= 0:
            raise UserError(f"--interval {args.interval}: give a positive number of seconds")
        states = watch(record, folder, args.interval)
        return 0 if all(s.state == STATUS_DONE for s in states) else 1
    out.print(status_view(record, folder))
    return 0


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


# ----------------------------------------------------------------------------------------------------- tables
def _row(run: Run, state: RunState) -> tuple:
    return run.run_id, run.variant, run.bindings, run.seed, state


def runs_table(title: str, axes: Sequence[str], rows: Sequence[tuple]) -> Table:
    """Run id, variant, one column per swept binding, seed, state and detail."""
    table = Table(title=title, title_justify="left")
    table.add_column("run id", style="cyan", no_wrap=True)
    has_variants = any(r[1] is not None for r in rows)
    if has_variants:
        table.add_column("variant")
    for axis in axes:
        table.add_column(axis, justify="right")
    table.add_column("seed", justify="right")
    table.add_column("state")
    table.add_column("detail", overflow="fold")
    for run_id, variant, bindings, seed, state in rows:
        cells = [run_id, *([variant or ""] if has_variants else []),
                 *(repr(bindings[a]) if a in bindings else "" for a in axes), str(seed),
                 f"[{STATE_STYLE.get(state.state, '')}]{state.state}[/]", state.detail]
        table.add_row(*cells)
    return table


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

