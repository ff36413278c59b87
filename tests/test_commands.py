"""The command line's layout: every subcommand declared in `pirl_ablate.commands`, handled by one module there,
the parser built without importing torch or any handler."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

from pirl_ablate.commands import COMMANDS

PACKAGE = Path(__file__).resolve().parent.parent / "pirl_ablate"


def test_building_the_parser_imports_no_handler_and_no_torch():
    code = ("import sys; from pirl_ablate.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('pirl_ablate.commands.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_handler_module_is_one_command_and_has_run():
    files = {p.stem for p in (PACKAGE / "commands").glob("*.py")} - {"__init__"}
    assert files == {c.module for c in COMMANDS}
    assert len({c.name for c in COMMANDS}) == len(COMMANDS)
    for command in COMMANDS:
        assert callable(command.handler()), command.name


def test_no_handler_lives_outside_the_commands_package():
    """A handler takes the parsed arguments: no function outside commands/ (and cli.py's dispatch) takes `args`."""
    outside = []
    for path in PACKAGE.rglob("*.py"):
        if "commands" in path.parts or path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and [a.arg for a in node.args.args] == ["args"]:
                outside.append(f"{path.relative_to(PACKAGE).as_posix()}:{node.name}")
    assert outside == []


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices
