"""Terminal output shared by every command: one rich console, progress bars that `--quiet` turns off."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")

console = Console(stderr=True, highlight=False)
out = Console(highlight=False)  # results (tables) go to stdout


def quiet() -> bool:
    return os.environ.get("PIRL_ABLATE_QUIET", "") not in ("", "0")


def set_quiet(value: bool) -> None:
    """`--quiet`: no progress bars or chatter (inherited by worker processes through the environment)."""
    os.environ["PIRL_ABLATE_QUIET"] = "1" if value else "0"


def info(message: str) -> None:
    if not quiet():
        console.print(message)


def progress(*extra_columns: TextColumn, remaining: bool = True) -> Progress:
    """A rich progress bar (disabled under --quiet or when stderr is not a terminal and CI is set); `remaining`:
    rich's own time-left column (from the bar's rate; off where the caller estimates the time left itself)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        *([TimeRemainingColumn()] if remaining else []),
        console=console,
        disable=quiet(),
        transient=False,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar."""
    with progress() as bar:
        yield from bar.track(items, total=total, description=description)
