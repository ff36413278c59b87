"""`pirl-ablate eval RUN_DIR --protocol ... [--layers ...] [--dataset ...] [--bind ...] [--gin ...]`.

Under a launcher with several processes (torchrun, SLURM tasks: `pirl_ablate.distributed`) the online linear
protocol and detection run data parallel, e.g. on the 8 GPUs of one node:

    torchrun --nproc_per_node 8 $(which pirl-ablate) eval RUN --protocol linear --layers conv1,res2,res3,res4,res5 \
        --gin gin/eval/paper.gin

Rank 0 writes the result and prints it; the other protocols run in one process.
"""

from __future__ import annotations

import argparse

from rich.table import Table

from pirl_ablate import distributed
from pirl_ablate.console import out
from pirl_ablate.errors import ConfigError
from pirl_ablate.evaluate.registry import DATA_PARALLEL
from pirl_ablate.gin_edge import run_evaluations


def run(args: argparse.Namespace) -> int:
    """Run one protocol on a run folder; print its metrics as a table (stdout); the JSON lands in RUN_DIR/evals/."""
    layers = [name.strip() for name in args.layers.split(",") if name.strip()]
    env = distributed.setup()
    try:
        if env.distributed and args.protocol not in DATA_PARALLEL:
            raise ConfigError(f"--protocol {args.protocol} runs in one process; only "
                              f"{' and '.join(sorted(DATA_PARALLEL))} run over the launcher's {env.world_size} "
                              "processes")
        results = run_evaluations(args.run_dir, [args.protocol], dataset=args.dataset, layers=layers,
                                  gin_files=args.gin, bindings=args.bind)
    finally:
        distributed.teardown(env)
    if not env.is_main:
        return 0
    for name, result in results.items():
        table = Table(title=name, caption=f"{args.run_dir} | bn: {result['bn']} | {result['wall_s']:.1f} s")
        metric_names = sorted({m for group in result["metrics"].values() for m in group})
        table.add_column("group")
        for m in metric_names:
            table.add_column(m, justify="right")
        for group, values in result["metrics"].items():
            table.add_row(group, *(f"{values[m]:.2f}" if m in values else "-" for m in metric_names))
        out.print(table)
    return 0
