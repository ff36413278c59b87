"""`pirl-ablate`: the command line. It only parses arguments and calls into the package."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pirl_ablate import __version__
from pirl_ablate.commands import COMMANDS, Command


def build_parser() -> argparse.ArgumentParser:
    """The `pirl-ablate` parser: one subparser per `pirl_ablate.commands.COMMANDS` entry."""
    p = argparse.ArgumentParser(
        prog="pirl-ablate",
        description="Reproduce, ablate and extend PIRL: pretext transforms, loss variants, gin-configured runs, "
                    "SLURM sweeps and reports mapped to the paper's tables and figures.",
    )
    p.add_argument("--version", action="version", version=f"pirl-ablate {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or chatter (for scripts)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.arguments(sub.add_parser(command.name, help=command.help, description=command.description))
    return p


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

    command = next(c for c in COMMANDS if c.name == args.command)
    try:
        _check_gin_files(command, args)  # before the handler's import (torch: seconds): a missing file at once
        return int(command.handler()(args) or 0)
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


def _check_gin_files(command: Command, args: argparse.Namespace) -> None:
    """The gin files `train` / `sweep` / `recipe` name exist (ConfigError naming the missing one otherwise)."""
    if command.gin_files is None:
        return
    from pirl_ablate.config import resolve_config_file

    for path in (getattr(args, command.gin_files), *args.gin):
        resolve_config_file(path)


if __name__ == "__main__":
    sys.exit(main())
