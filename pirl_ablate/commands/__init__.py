"""Every `pirl-ablate` subcommand: its arguments here, its handler in `pirl_ablate.commands.<module>.run`.

A handler parses nothing and computes nothing of its own: it reads the parsed arguments, calls the library (`build`,
`sweep/`, `report/`, `evaluate/`, ...) and prints. The arguments are declared here, apart from the handlers, so that
`pirl-ablate --help` and a missing gin file answer without importing torch: a handler's module is imported only when
its command runs (`pirl_ablate.cli`).

A new command is one `Command` in `COMMANDS` and one module holding `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One subcommand: its name on the command line, its one-line help, its description (`pirl-ablate NAME --help`),
    the function that declares its arguments and the module under `pirl_ablate.commands` whose `run` handles it.
    `gin_files`: the attribute holding its main gin file, checked before the handler's import (None: no gin file)."""

    name: str
    help: str
    description: str | None
    arguments: Callable[[argparse.ArgumentParser], None]
    module: str
    gin_files: str | None = None

    def handler(self) -> Callable[[argparse.Namespace], int]:
        return importlib.import_module(f"pirl_ablate.commands.{self.module}").run


def bind_arguments(p: argparse.ArgumentParser) -> None:
    """--bind KEY=VALUE and --gin FILE.gin, both repeatable."""
    p.add_argument("--bind", "-b", action="append", default=[], metavar="KEY=VALUE",
                   help="a gin binding, e.g. PIRL.lambda_=0.25 (repeatable)")
    p.add_argument("--gin", action="append", default=[], metavar="FILE.gin",
                   help="an extra gin file parsed after the main one (repeatable)")


def _train(s: argparse.ArgumentParser) -> None:
    s.add_argument("config", metavar="CONFIG.gin", help="gin file (includes resolve against gin/)")
    bind_arguments(s)
    s.add_argument("--out", metavar="DIR", help="run folder (default: runs/<config name>)")


def _sweep(s: argparse.ArgumentParser) -> None:
    s.add_argument("sweep", metavar="SWEEP.gin", help="sweep file, e.g. sweeps/lambda.gin")
    s.add_argument("--executor", choices=("local", "slurm", "debug"), default=None,
                   help="where runs execute (default: the sweep file's, else local)")
    s.add_argument("--out", metavar="DIR", help="sweep folder (default: runs/<sweep name>)")
    s.add_argument("--dry-run", action="store_true", help="print the runs as a table; run nothing")
    bind_arguments(s)


def _status(s: argparse.ArgumentParser) -> None:
    s.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a sweep folder, e.g. runs/lambda")
    s.add_argument("--watch", action="store_true", help="redraw live until no run is queued or running")
    s.add_argument("--interval", type=float, default=2.0, metavar="SECONDS", help="--watch refresh period (2)")


def _report(s: argparse.ArgumentParser) -> None:
    what = s.add_mutually_exclusive_group(required=True)
    what.add_argument("--table", metavar="N", help="paper table number (pirl-ablate list tables)")
    what.add_argument("--figure", metavar="N", help="paper figure number")
    what.add_argument("sweep", nargs="?", metavar="SWEEP.gin", help="a sweep file: its axes against its metrics")
    s.add_argument("--results", metavar="DIR", help="folder holding the run folders (default: runs/)")
    s.add_argument("--format", choices=("rich", "markdown", "csv", "latex"), default="rich")
    s.add_argument("--out", metavar="DIR", help="where files are written (default: reports/)")


def _eval(s: argparse.ArgumentParser) -> None:
    s.add_argument("run_dir", metavar="RUN_DIR")
    s.add_argument("--protocol", required=True, metavar="PROTOCOL",
                   help="a registered protocol: linear, knn, invariance, semisup, svm, low-shot, detection, or one "
                        "a module imported by a --gin file registers (pirl-ablate list protocols)")
    s.add_argument("--layers", default="res5", help="comma-separated: conv1,res2,res3,res4,res5")
    s.add_argument("--dataset", default=None, help="evaluation dataset (default: the pre-training one)")
    bind_arguments(s)


def _export(s: argparse.ArgumentParser) -> None:
    s.add_argument("run_dir", metavar="RUN_DIR")
    s.add_argument("--out", metavar="FILE", required=True, help="output .pth file (.pkl for Detectron2's pickle)")
    s.add_argument("--format", choices=("torchvision", "detectron2"), default="torchvision",
                   help="key names: torchvision's ResNet (default) or Detectron2's (res2.0.conv1.weight, ...)")


def _import(s: argparse.ArgumentParser) -> None:
    s.add_argument("checkpoint", metavar="CHECKPOINT")
    s.add_argument("--format", choices=("vissl", "torchvision"), required=True,
                   help="vissl: a VISSL checkpoint (trunk keys _feature_blocks.*); torchvision: a resnet state_dict")
    s.add_argument("--out", metavar="RUN_DIR", required=True, help="the run folder to write (new or empty)")
    s.add_argument("--dataset", required=True,
                   help="the dataset evaluation uses by default, e.g. fashion_mnist (smoke) or imagefolder")
    s.add_argument("--image-size", type=int, required=True, metavar="PX",
                   help="the input size evaluation uses by default, e.g. 32 (smoke) or 224 (the paper)")


def _show_transform(s: argparse.ArgumentParser) -> None:
    s.add_argument("name", metavar="NAME", help="transform name or composition, e.g. rotation+jigsaw")
    s.add_argument("--images", type=int, default=4, metavar="N")
    s.add_argument("--dataset", default=None,
                   help="where the images come from (default: the --gin files' train.dataset, else fashion_mnist)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", metavar="FILE.png", required=True)
    bind_arguments(s)


def _recipe(s: argparse.ArgumentParser) -> None:
    s.add_argument("config", metavar="CONFIG.gin", help="gin file or sweep file (includes resolve against gin/)")
    bind_arguments(s)
    s.add_argument("--strict", action="store_true",
                   help="exit 1 when a pre-training row differs from the paper (evaluation rows never fail)")


def _list(s: argparse.ArgumentParser) -> None:
    s.add_argument("what", choices=("transforms", "methods", "negatives", "datasets", "protocols", "tables"))


COMMANDS = (
    Command("train", "pre-train one model from a gin config",
            "Pre-train one model end to end, configured only through gin. Resumes automatically from the run "
            "folder's last checkpoint.", _train, "train", gin_files="config"),
    Command("sweep", "expand a sweep file into runs and execute them",
            "Expand a sweep gin file into runs (one folder each) and run them through submitit. Complete runs are "
            "skipped; failed or missing ones are (re)submitted.", _sweep, "sweep", gin_files="sweep"),
    Command("status", "show the state of every run of a sweep",
            "Show each run's state (pending, running, done, failed with its reason), epoch, last loss and kNN, "
            "health warnings, elapsed time and time left, from the run folders and, for SLURM, from the "
            "scheduler.", _status, "status"),
    Command("report", "gather results into a paper table or figure",
            "Gather run results into the paper's tables and figures, or a generic table for any sweep file.",
            _report, "report"),
    Command("eval", "evaluate a pre-trained run",
            "Evaluate the frozen features of a pre-trained run; results are written atomically into the run "
            "folder's evals/.", _eval, "evaluate"),
    Command("export", "export a run's backbone as a plain torchvision state_dict",
            "Write the backbone as a torchvision ResNet state_dict (heads dropped).", _export, "export"),
    Command("import", "turn published ResNet weights (VISSL, torchvision) into a run folder",
            "Write a run folder holding an external ResNet checkpoint's trunk, which every protocol, `eval` and "
            "`report` then treats like a trained run.", _import, "import_weights"),
    Command("show-transform", "draw images next to a transform's views",
            "Draw a few images next to their views (patches in permuted order, labels shown) so you see what the "
            "network sees.", _show_transform, "show_transform"),
    Command("recipe", "print a config's operative recipe beside the paper's and VISSL's",
            "Print every hyperparameter of a config (method, optimisation, views, negatives, evaluation) beside the "
            "paper's value and VISSL's, marking each difference and named deviation; a sweep file gets one card "
            "per run, its swept values allowed to differ.", _recipe, "recipe", gin_files="config"),
    Command("list", "list registered transforms, methods, negative sources, datasets, protocols or tables", None, _list,
            "listing"),
)
