"""Figures as PNG (matplotlib, Agg backend: no display needed), always with the plotted numbers beside as CSV."""

from __future__ import annotations

import io
import math
from pathlib import Path

from pirl_ablate.report.model import Plot
from pirl_ablate.report.render import plot_csv
from pirl_ablate.runs import atomic_write, atomic_write_text


def save_figure(plot: Plot, title: str, stem: Path) -> tuple[Path, Path]:
    """Write `<stem>.png` and `<stem>_data.csv` (the plotted numbers) atomically; return both paths."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    if plot.kind == "hist":
        for s in plot.series:
            widths = [b - a for a, b in zip(s.x, s.x[1:])]
            ax.bar(s.x[:-1], s.y, width=widths, align="edge", alpha=0.5, label=s.label)
    else:
        categorical = any(isinstance(x, str) for s in plot.series for x in s.x)
        for s in plot.series:
            yerr = [0.0 if math.isnan(v) else v for v in s.std] if s.std else None
            ax.errorbar(s.x, s.y, yerr=yerr, marker="o", capsize=3, label=s.label)
        for label, y in plot.baselines:
            ax.axhline(y, linestyle="--", color="grey", label=label)
        if plot.logx and not categorical:
            ax.set_xscale("log")
    ax.set_xlabel(plot.xlabel)
    ax.set_ylabel(plot.ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if plot.series or plot.baselines:
        ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    png = atomic_write(stem.with_suffix(".png"), lambda fh: fh.write(buf.getvalue()))
    csv_path = atomic_write_text(stem.with_name(f"{stem.name}_data.csv"), plot_csv(plot))
    return png, csv_path
