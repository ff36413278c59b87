"""`pirl-ablate`: the command line. It only parses arguments and calls into the package."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pirl_ablate import __version__

# subcommand -> (module, function)
HANDLERS = {
    "train": ("pirl_ablate.build", "train_command"),
    "export": ("pirl_ablate.build", "export_command"),
    "import": ("pirl_ablate.published", "import_command"),
    "sweep": ("pirl_ablate.sweep.command", "sweep_command"),
    "status": ("pirl_ablate.sweep.command", "status_command"),
    "report": ("pirl_ablate.report.command", "report_command"),
    "eval": ("pirl_ablate.evaluate.command", "eval_command"),
    "show-transform": ("pirl_ablate.transforms.show", "show_transform_command"),
    "list": ("pirl_ablate.listing", "list_command"),
    "recipe": ("pirl_ablate.recipe_card", "recipe_command"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pirl-ablate",
        description="Reproduce, ablate and extend PIRL: pretext transforms, loss variants, gin-configured runs, "
                    "SLURM sweeps and reports mapped to the paper's tables and figures.",
    )
    p.add_argument("--version", action="version", version=f"pirl-ablate {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or chatter (for scripts)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("train", help="pre-train one model from a gin config",
                       description="Pre-train one model end to end, configured only through gin. Resumes "
                                   "automatically from the run folder's last checkpoint.")
    s.add_argument("config", metavar="CONFIG.gin", help="gin file (includes resolve against gin/)")
    _bind(s)
    s.add_argument("--out", metavar="DIR", help="run folder (default: runs/<config name>)")

    s = sub.add_parser("sweep", help="expand a sweep file into runs and execute them",
                       description="Expand a sweep gin file into runs (one folder each) and run them through "
                                   "submitit. Complete runs are skipped; failed or missing ones are (re)submitted.")
    s.add_argument("sweep", metavar="SWEEP.gin", help="sweep file, e.g. sweeps/lambda.gin")
    s.add_argument("--executor", choices=("local", "slurm", "debug"), default=None,
                   help="where runs execute (default: the sweep file's, else local)")
    s.add_argument("--out", metavar="DIR", help="sweep folder (default: runs/<sweep name>)")
    s.add_argument("--dry-run", action="store_true", help="print the runs as a table; run nothing")
    _bind(s)

    s = sub.add_parser("status", help="show the state of every run of a sweep",
                       description="Show each run's state (pending, running, done, failed with its reason), epoch, "
                                   "last loss and kNN, health warnings, elapsed time and time left, from the run "
                                   "folders and, for SLURM, from the scheduler.")
    s.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a sweep folder, e.g. runs/lambda")
    s.add_argument("--watch", action="store_true", help="redraw live until no run is queued or running")
    s.add_argument("--interval", type=float, default=2.0, metavar="SECONDS", help="--watch refresh period (2)")

    s = sub.add_parser("report", help="gather results into a paper table or figure",
                       description="Gather run results into the paper's tables and figures, or a generic table "
                                   "for any sweep file.")
    what = s.add_mutually_exclusive_group(required=True)
    what.add_argument("--table", metavar="N", help="paper table number (pirl-ablate list tables)")
    what.add_argument("--figure", metavar="N", help="paper figure number")
    what.add_argument("sweep", nargs="?", metavar="SWEEP.gin", help="a sweep file: its axes against its metrics")
    s.add_argument("--results", metavar="DIR", help="folder holding the run folders (default: runs/)")
    s.add_argument("--format", choices=("rich", "markdown", "csv", "latex"), default="rich")
    s.add_argument("--out", metavar="DIR", help="where files are written (default: reports/)")

    s = sub.add_parser("eval", help="evaluate a pre-trained run",
                       description="Evaluate the frozen features of a pre-trained run; results are written "
                                   "atomically into the run folder's evals/.")
    s.add_argument("run_dir", metavar="RUN_DIR")
    s.add_argument("--protocol", required=True,
                   help="a registered protocol: linear, knn, invariance, semisup, svm, low-shot, detection, or one "
                        "a module imported by a --gin file registers (pirl-ablate list protocols)")
    s.add_argument("--layers", default="res5", help="comma-separated: conv1,res2,res3,res4,res5")
    s.add_argument("--dataset", default=None, help="evaluation dataset (default: the pre-training one)")
    _bind(s)

    s = sub.add_parser("export", help="export a run's backbone as a plain torchvision state_dict",
                       description="Write the backbone as a torchvision ResNet state_dict (heads dropped).")
    s.add_argument("run_dir", metavar="RUN_DIR")
    s.add_argument("--out", metavar="FILE", required=True, help="output .pth file (.pkl for Detectron2's pickle)")
    s.add_argument("--format", choices=("torchvision", "detectron2"), default="torchvision",
                   help="key names: torchvision's ResNet (default) or Detectron2's (res2.0.conv1.weight, ...)")

    s = sub.add_parser("import", help="turn published ResNet weights (VISSL, torchvision) into a run folder",
                       description="Write a run folder holding an external ResNet checkpoint's trunk, which every "
                                   "protocol, `eval` and `report` then treats like a trained run.")
    s.add_argument("checkpoint", metavar="CHECKPOINT")
    s.add_argument("--format", choices=("vissl", "torchvision"), required=True,
                   help="vissl: a VISSL checkpoint (trunk keys _feature_blocks.*); torchvision: a resnet state_dict")
    s.add_argument("--out", metavar="RUN_DIR", required=True, help="the run folder to write (new or empty)")
    s.add_argument("--dataset", required=True,
                   help="the dataset evaluation uses by default, e.g. fashion_mnist (smoke) or imagefolder")
    s.add_argument("--image-size", type=int, required=True, metavar="PX",
                   help="the input size evaluation uses by default, e.g. 32 (smoke) or 224 (the paper)")

    s = sub.add_parser("show-transform", help="draw images next to a transform's views",
                       description="Draw a few images next to their views (patches in permuted order, labels "
                                   "shown) so you see what the network sees.")
    s.add_argument("name", metavar="NAME", help="transform name or composition, e.g. rotation+jigsaw")
    s.add_argument("--images", type=int, default=4, metavar="N")
    s.add_argument("--dataset", default=None,
                   help="where the images come from (default: the --gin files' train.dataset, else fashion_mnist)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", metavar="FILE.png", required=True)
    _bind(s)

    s = sub.add_parser("recipe", help="print a config's operative recipe beside the paper's and VISSL's",
                       description="Print every hyperparameter of a config (method, optimisation, views, negatives, "
                                   "evaluation) beside the paper's value and VISSL's, marking each difference and "
                                   "named deviation; a sweep file gets one card per run, its swept values allowed "
                                   "to differ.")
    s.add_argument("config", metavar="CONFIG.gin", help="gin file or sweep file (includes resolve against gin/)")
    _bind(s)
    s.add_argument("--strict", action="store_true",
                   help="exit 1 when a pre-training row differs from the paper (evaluation rows never fail)")

    s = sub.add_parser("list", help="list registered transforms, methods, negative sources, datasets, protocols or "
                                    "tables")
    s.add_argument("what", choices=("transforms", "methods", "negatives", "datasets", "protocols", "tables"))
    return p


def _bind(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bind", "-b", action="append", default=[], metavar="KEY=VALUE",
                   help="a gin binding, e.g. PIRL.lambda_=0.25 (repeatable)")
    p.add_argument("--gin", action="append", default=[], metavar="FILE.gin",
                   help="an extra gin file parsed after the main one (repeatable)")


def main(argv: Sequence[str] | None = None) -> int:
    from pirl_ablate.console import quiet, set_quiet

    args = build_parser().parse_args(argv)
    was_quiet = quiet()
    if args.quiet:
        set_quiet(True)
    try:
        return _dispatch(args)
    finally:  # main() called in-process (tests, notebooks) leaves the environment as it found it
        set_quiet(was_quiet)


def _dispatch(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from pirl_ablate.console import console
    from pirl_ablate.errors import UserError

    module, func = HANDLERS[args.command]
    try:
        _check_gin_files(args)  # before the handler's import (torch: seconds), so a missing file is said at once
        handler = getattr(importlib.import_module(module), func)
        return int(handler(args) or 0)
    except UserError as e:
        # gin appends "In call to configurable ..." lines to errors raised inside configurables: keep the first
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        console.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
        return 2
    except (TypeError, ValueError) as e:  # raised in a configurable gin called: a binding of the wrong type
        from pirl_ablate.config import configurable_error

        message = configurable_error(e)
        if message is None:
            raise
        console.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
        return 2
    except OSError as e:  # a results folder that cannot be written: read-only, not ours, or under a file
        message = path_error(e)
        if message is None:
            raise
        console.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130


def path_error(e: OSError) -> str | None:
    """One line for an OSError on a path the user chose (a read-only or foreign folder, a file where a folder
    should be), naming the path; None for any other OSError."""
    import errno

    if e.filename is None or e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST):
        return None
    path = e.filename
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"{path}: {e.strerror} (a part of this path is a file, not a folder; give a folder, e.g. --out DIR)"
    return f"{path}: {e.strerror} (give a folder you can write to, e.g. --out DIR, or make it writable)"


def _check_gin_files(args: argparse.Namespace) -> None:
    """The gin files `train` / `sweep` name exist (ConfigError naming the missing one otherwise)."""
    main_file = {"train": "config", "sweep": "sweep", "recipe": "config"}.get(args.command)
    if main_file is None:
        return
    from pirl_ablate.config import resolve_config_file

    for path in (getattr(args, main_file), *args.gin):
        resolve_config_file(path)


if __name__ == "__main__":
    sys.exit(main())
