"""`pirl-ablate import CHECKPOINT --format vissl|torchvision --out RUN_DIR --dataset NAME --image-size N`:
published weights as a run folder (`pirl_ablate.published`)."""

from __future__ import annotations

import argparse

from pirl_ablate.console import info
from pirl_ablate.published import import_checkpoint


def run(args: argparse.Namespace) -> int:
    """Write the run folder and say how to evaluate it."""
    run = import_checkpoint(args.checkpoint, args.format, args.out, dataset=args.dataset, image_size=args.image_size)
    backbone = run.meta()["record"]["backbone"]
    info(f"wrote {run.path} ({backbone['arch']}, width {backbone['width_multiplier']}); evaluate it like a trained "
         f"run: pirl-ablate eval {run.path} --protocol linear")
    return 0
