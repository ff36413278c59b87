"""`pirl-ablate list transforms|methods|negatives|datasets|protocols|tables`: what the registries hold."""

from __future__ import annotations

import argparse
import inspect
from typing import Any

from rich.table import Table

from pirl_ablate.config import import_configurables
from pirl_ablate.console import out
from pirl_ablate.registry import Entry, Registry

REGISTRIES = {
    "transforms": ("pirl_ablate.transforms.registry", "TRANSFORMS"),
    "methods": ("pirl_ablate.methods.base", "METHODS"),
    "negatives": ("pirl_ablate.losses.negatives", "NEGATIVES"),
    "datasets": ("pirl_ablate.data.registry", "DATASETS"),
    "protocols": ("pirl_ablate.evaluate.registry", "PROTOCOLS"),
    "tables": ("pirl_ablate.report.registry", "TABLES"),
}


def registry(what: str) -> Registry:
    """The registry `pirl-ablate list WHAT` shows, every configurable (and the report tables) imported."""
    import importlib

    module, attr = REGISTRIES[what]
    import_configurables()
    if what == "tables":
        import contextlib

        with contextlib.suppress(ModuleNotFoundError):
            importlib.import_module("pirl_ablate.report")
    return getattr(importlib.import_module(module), attr)


def run(args: argparse.Namespace) -> int:
    out.print(registry_table(args.what, registry(args.what)))
    return 0


def registry_table(what: str, reg: Registry) -> Table:
    """Name, gin name (when any entry has one), the whole docstring summary (wrapped, never cut) and the public
    parameters with their defaults."""
    entries = reg.describe()
    table = Table(title=f"{what} ({len(reg)})", show_lines=False)
    table.add_column("name", style="bold cyan", no_wrap=True)
    with_gin = any(e.gin_name for e in entries)
    if with_gin:
        table.add_column("gin name", overflow="fold")
    table.add_column("description", overflow="fold", ratio=3)
    table.add_column("parameters (defaults)", overflow="fold", ratio=2)
    families: dict[str, list[str]] = {}  # "kornia:RandomSolarize", ... -> one row per prefix
    for e in entries:
        if ":" in e.name:
            families.setdefault(e.name.split(":", 1)[0], []).append(e.name.split(":", 1)[1])
            continue
        params = ", ".join(name if default is inspect.Parameter.empty else f"{name}={default!r}"
                           for name, default in public_params(e).items())
        table.add_row(e.name, *([e.gin_name or ""] if with_gin else []), e.doc, params)
    for prefix, names in families.items():
        table.add_row(f"{prefix}:NAME", *([f"{prefix}.NAME"] if with_gin else []),
                      f"{prefix}'s {len(names)} augmentations as transforms, e.g. {prefix}:{names[0]}: "
                      + ", ".join(names), f"{prefix}.augmentation.NAME's own")
    return table


def public_params(entry: Entry) -> dict[str, Any]:
    """The parameters a user sets: not `_private` ones, and for an entry gin does not configure (a table, called
    with the results DataFrame) not the required inputs the code passes in."""
    return {name: default for name, default in entry.params.items()
            if not name.startswith("_") and (entry.gin_name or default is not inspect.Parameter.empty)}
