"""`pirl-ablate export RUN_DIR --out FILE.pth [--format torchvision|detectron2]`: the trunk's state_dict under
torchvision's or Detectron2's names (`pirl_ablate.export`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pirl_ablate.checkpoint import load_method
from pirl_ablate.console import info
from pirl_ablate.errors import UserError
from pirl_ablate.export import write_backbone


def run(args: argparse.Namespace) -> int:
    """Write the run's backbone to --out and say how to load it (Detectron2: the config lines written beside it)."""
    if Path(args.out).is_dir():
        raise UserError(f"--out {args.out}: is a folder; give the file to write, e.g. {Path(args.out) / 'net.pth'}")
    backbone = load_method(args.run_dir).backbone
    fmt = getattr(args, "format", "torchvision")
    path = write_backbone(backbone, args.out, fmt)
    if fmt == "detectron2":
        config_file = path.with_suffix(".yaml")
        info(f"wrote {path} (Detectron2 {backbone.arch} trunk: stem, res2-res5) and {config_file}, the config lines "
             f"that load it (merge them into the fine-tuning config):\n{config_file.read_text()}")
        return 0
    info(f"wrote {path} (torchvision {backbone.arch}; fc is zeros: replace it before fine-tuning"
         + ("; small stem: set conv1 to 3x3 stride 1 and maxpool to Identity" if backbone.small_stem else "")
         + ")")
    return 0
