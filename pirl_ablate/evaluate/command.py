"""`pirl-ablate eval RUN_DIR --protocol ... [--layers ...] [--dataset ...] [--bind ...] [--gin ...]`."""

from __future__ import annotations

import argparse
import os

from rich.table import Table

from pirl_ablate import distributed
from pirl_ablate.console import out
from pirl_ablate.evaluate.protocols import run_evaluations


def eval_command(args: argparse.Namespace) -> int:
    """Run one protocol on a run folder; print its metrics as a table (stdout); the JSON lands in RUN_DIR/evals/."""
    layers = [name.strip() for name in args.layers.split(",") if name.strip()]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun: the data-parallel detection protocol uses the ranks
        distributed.setup()
    results = run_evaluations(args.run_dir, [args.protocol], dataset=args.dataset, layers=layers,
                              gin_files=args.gin, bindings=args.bind)
    for name, result in results.items() if distributed.launcher_rank() == 0 else ():
        table = Table(title=name, caption=f"{args.run_dir} | bn: {result['bn']} | {result['wall_s']:.1f} s")
        metric_names = sorted({m for group in result["metrics"].values() for m in group})
        table.add_column("group")
        for m in metric_names:
            table.add_column(m, justify="right")
        for group, values in result["metrics"].items():
            table.add_row(group, *(f"{values[m]:.2f}" if m in values else "-" for m in metric_names))
        out.print(table)
    return 0
