"""`pirl-ablate list transforms|methods|datasets|tables`: what the registries hold."""

from __future__ import annotations

import argparse
import inspect

from rich.table import Table

from pirl_ablate.config import import_configurables
from pirl_ablate.console import out
from pirl_ablate.registry import Registry

REGISTRIES = {
    "transforms": ("pirl_ablate.transforms.registry", "TRANSFORMS"),
    "methods": ("pirl_ablate.methods.base", "METHODS"),
    "datasets": ("pirl_ablate.data.registry", "DATASETS"),
    "tables": ("pirl_ablate.report.registry", "TABLES"),
}


def registry(what: str) -> Registry:
    import importlib

    module, attr = REGISTRIES[what]
    import_configurables()
    if what == "tables":
        import contextlib

        with contextlib.suppress(ModuleNotFoundError):
            importlib.import_module("pirl_ablate.report")
    return getattr(importlib.import_module(module), attr)


def list_command(args: argparse.Namespace) -> int:
    reg = registry(args.what)
    table = Table(title=f"{args.what} ({len(reg)})", show_lines=False)
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("gin name")
    table.add_column("description")
    table.add_column("parameters (defaults)")
    for e in reg.describe():
        params = ", ".join(
            name if default is inspect.Parameter.empty else f"{name}={default!r}"
            for name, default in e.params.items()
        )
        table.add_row(e.name, e.gin_name or "", e.doc, params)
    out.print(table)
    return 0
