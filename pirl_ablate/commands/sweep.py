"""`pirl-ablate sweep SWEEP.gin [--executor ...] [--out DIR] [--dry-run]`: expand a sweep file into runs and run
those not done (`pirl_ablate.sweep.drive`); exit 0 when every run is done, 1 otherwise."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from pirl_ablate.console import out
from pirl_ablate.errors import UserError
from pirl_ablate.locks import folder_lock
from pirl_ablate.runs import STATUS_DONE
from pirl_ablate.sweep.display import STATE_STYLE, status_view
from pirl_ablate.sweep.drive import drive, read_sweep_record, runs_to_extend
from pirl_ablate.sweep.preflight import ensure_datasets
from pirl_ablate.sweep.spec import Run, Sweep, eval_targets, load_sweep
from pirl_ablate.sweep.state import RunState, run_states


def run(args: argparse.Namespace) -> int:
    """Expand, skip complete runs, submit the rest, wait, print every run's state; --dry-run prints the runs."""
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
        states = drive(sweep, kind, folder, dirs, runs_to_extend(sweep, folder))
        out.print(status_view(read_sweep_record(folder), folder, states))
    return 0 if all(s.state == STATUS_DONE for s in states) else 1


def evaluation_line(sweep: Sweep) -> str:
    """What each run is evaluated with once trained: "evaluation: svm on voc2007, linear on the pre-training
    dataset (layers res5)", or "evaluation: none"."""
    targets = eval_targets(sweep.settings.evaluate)
    if not targets:
        return "evaluation: none"
    parts = ["detection (its VOC data: detection_eval.*)" if p == "detection" else
             f"{p} on {d or 'the pre-training dataset'}" for p, d in targets]
    return f"evaluation: {', '.join(parts)} (layers {', '.join(sweep.settings.eval_layers)})"


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
