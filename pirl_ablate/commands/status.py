"""`pirl-ablate status SWEEP_DIR [--watch [--interval S]]`: every run's state, progress and failure reason
(`pirl_ablate.sweep.display`) from the run folders and the scheduler."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from pirl_ablate.console import out
from pirl_ablate.errors import UserError
from pirl_ablate.runs import STATUS_DONE
from pirl_ablate.sweep.display import status_view, watch
from pirl_ablate.sweep.drive import read_sweep_record


def run(args: argparse.Namespace) -> int:
    """Print the status table; with --watch, redraw it until no run is queued or running (exit 0 if all are done,
    else 1)."""
    folder = Path(args.sweep_dir)
    record = read_sweep_record(folder)
    if getattr(args, "watch", False):
        if not math.isfinite(args.interval) or args.interval <= 0:
            raise UserError(f"--interval {args.interval}: give a positive number of seconds")
        states = watch(record, folder, args.interval)
        return 0 if all(s.state == STATUS_DONE for s in states) else 1
    out.print(status_view(record, folder))
    return 0
