"""Terminal output shared by every command: one rich console, progress bars that `--quiet` turns off."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

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


UNBOUNDED = 100_000  # columns: a width no table reaches, for measuring a table's natural width and for files


class Fit:
    """`table` where its natural width fits the console, else the same cells stacked: per row the first column's
    cell as a heading, then "header value" pairs joined by " · ", as many whole pairs per line as fit. A narrow
    terminal so wraps numbers instead of dropping columns or cutting numbers to "7.…"."""

    def __init__(self, table: Table):
        self.table = table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        natural = Measurement.get(console, options.update(width=UNBOUNDED), self.table).maximum
        if natural <= options.max_width:
            yield self.table
            return
        if self.table.title:
            yield Text(str(self.table.title), style="bold")
        columns = self.table.columns
        for cells in zip(*(column.cells for column in columns)):
            pairs = [Text.assemble((f"{column.header} ", "dim"), _text(cell))
                     for column, cell in zip(columns[1:], cells[1:]) if _text(cell).plain.strip()]
            yield Text.assemble(_text(cells[0], "bold"))
            line = Text("  ")
            for pair in pairs:  # whole pairs per line: a number never breaks away from its header
                if len(line) > 2 and len(line) + 3 + len(pair) > options.max_width:
                    yield line
                    line = Text("  ")
                line.append_text(Text(" · ") if len(line) > 2 else Text()).append_text(pair)
            yield line
        if self.table.caption:
            yield Text(str(self.table.caption), style="dim")


def _text(cell: object, style: str = "") -> Text:
    return cell.copy() if isinstance(cell, Text) else Text(str(cell), style=style)
