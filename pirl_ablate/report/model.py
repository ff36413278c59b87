"""What a report is, independent of how it is rendered: blocks of rows of cells (mean +- std over n seeds),
the runs that could not be reported and why, and, for figures, the plotted series.

Conventions used by every renderer:
- a cell is `mean +- std (n=...)` over seeds; std is the sample standard deviation (ddof=1), absent for n = 1;
  n = 0 marks a number that is not a seed mean (the paper's published numbers, delta rows);
- the best value of each column is marked among the rows of kind "method" (baselines such as random init and
  supervised, delta rows and the paper's rows are shown but never marked);
- kinds: "method" (a self-supervised result), "baseline" (random init, supervised), "delta", "paper".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

KINDS = ("method", "baseline", "delta", "paper")


@dataclass
class Cell:
    mean: float
    std: float = math.nan
    n: int = 0
    best: bool = False


@dataclass
class Row:
    label: str
    cells: dict[str, Cell]
    kind: str = "method"


@dataclass
class Block:
    """One table: `columns` in display order; `lower_is_better` names columns where smaller wins (distances);
    `ranked` the columns whose best is marked (None: all)."""

    title: str
    columns: list[str]
    rows: list[Row]
    row_header: str = "method"
    lower_is_better: frozenset[str] = frozenset()
    ranked: frozenset[str] | None = None

    def mark_best(self) -> None:
        for col in self.columns if self.ranked is None else [c for c in self.columns if c in self.ranked]:
            cells = [r.cells[col] for r in self.rows if r.kind == "method" and col in r.cells
                     and not math.isnan(r.cells[col].mean)]
            if not cells:
                continue
            pick = min if col in self.lower_is_better else max
            best = pick(c.mean for c in cells)
            for c in cells:
                c.best = c.mean == best


@dataclass
class Problem:
    """A run that is not in the report: missing, running, failed, or done without the needed evaluation."""

    run_id: str
    status: str
    reason: str


@dataclass
class Series:
    """One plotted line (x, mean, std, n) or histogram (x = bin edges, y = counts)."""

    label: str
    x: list[float | str]
    y: list[float]
    std: list[float] = field(default_factory=list)
    n: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Reference:
    """A horizontal reference line (the random-init baseline): its mean, sample std (NaN for n = 1) and n."""

    label: str
    mean: float
    std: float
    n: int


@dataclass
class Plot:
    kind: str  # "line" | "hist"
    xlabel: str
    ylabel: str
    series: list[Series]
    logx: bool = False
    baselines: list[Reference] = field(default_factory=list)
    caption: str = ""  # what the numbers are: scale, datasets, backbone, seeds (under the figure)
    paper: str = ""  # the paper's values or stated finding, labelled as such (under the caption)
    paper_best_x: float | None = None  # where the paper says the curve peaks: a dotted vertical line
    paper_series: list[Series] = field(default_factory=list)  # the paper's printed values, drawn dashed
    verdict: str = ""  # whether the points differ from the baseline by more than the seeds' spread (`separation`)
    zero_line: str = ""  # label of a dotted y = 0 reference (a margin's "no alignment"), none when empty
    panels: list[Plot] = field(default_factory=list)  # more panels drawn beside this one (other metrics)


@dataclass
class Report:
    name: str  # file stem: "table5", "figure6", or the sweep's name
    title: str
    blocks: list[Block] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plot: Plot | None = None
    runs_used: int = 0  # runs of the report's own sweep that contributed a value

    @property
    def has_results(self) -> bool:
        return self.runs_used > 0


def aggregate(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean, sample std (ddof=1) and n of `value` over the rows (seeds) of each `by` group; missing keys kept."""
    g = frame.groupby(by, dropna=False, sort=False)["value"]
    return g.agg(mean="mean", std="std", n="count").reset_index()


def cell(mean: float, std: float, n: int) -> Cell:
    return Cell(mean=float(mean), std=float(std) if n > 1 else math.nan, n=int(n))
