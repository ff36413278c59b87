"""`pirl-ablate train CONFIG.gin [--gin F] [--bind K=V] [--out DIR]`: pre-train one run (`pirl_ablate.build`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pirl_ablate import config
from pirl_ablate.build import run_training
from pirl_ablate.console import console, info
from pirl_ablate.methods import METHODS


def run(args: argparse.Namespace) -> int:
    """Parse the config, warn about --bind bindings the method does not read, train (or resume) into the run folder
    and print the final loss and kNN accuracy."""
    config_str = config.parse([args.config, *args.gin], args.bind)
    warn_unused_method_bindings(args.bind)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    result = run_training(config_str, out)
    final = result.get("final", {})
    info(f"done: {out} | loss {final.get('loss', float('nan')):.4f}"
         + (f" | kNN top-1 {final['knn_top1']:.3f}" if "knn_top1" in final else ""))
    return 0


def warn_unused_method_bindings(bindings: list[str]) -> None:
    """Say, in one warning line, which `--bind` bindings belong to a method other than the current config's
    `train.method`: the run does not read them (`--bind NPID.tau=0.2` on a PIRL run). Only --bind: gin files
    (gin/scale/*.gin, a config shared by variants) bind several methods' settings on purpose, and a warning for
    each would bury this one."""
    method = config.bound_kwargs("train").get("method", "pirl")
    others = {e.gin_name for e in METHODS.describe() if e.name != method and e.gin_name}
    unused = [k for k in config.bindings_of("\n".join(bindings)) if k.rsplit(".", 1)[0].rsplit("/", 1)[-1] in others]
    if unused:
        console.print(f"[yellow]warning:[/] {', '.join(unused)}: bound, but train.method = {method!r} does not read "
                      f"{'it' if len(unused) == 1 else 'them'}", markup=True, soft_wrap=True)
