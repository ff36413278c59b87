"""Figures as PNG (matplotlib, Agg backend: no display needed), always with the plotted numbers beside as CSV."""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path

from pirl_ablate.report.model import Plot
from pirl_ablate.report.render import plot_csv
from pirl_ablate.runs import atomic_write, atomic_write_text

CAPTION_WIDTH = 110  # characters per caption line (fits the 7-inch figure at 8 pt)


def save_figure(plot: Plot, title: str, stem: Path) -> tuple[Path, Path]:
    """Write `<stem>.png` and `<stem>_data.csv` (the plotted numbers) atomically; return both paths.

    The plot and its `panels` side by side. Under the axes: the caption (scale, datasets, backbone, seeds), each
    panel's verdict (which metric separates the runs from random init at this budget) and the paper's values or
    finding. Error bars are the std over seeds where a point has n > 1; the random-init baseline is a dashed line
    with its std as a grey band (both in the legend); the paper's printed values are dashed lines labelled as the
    paper's, its stated best x a dotted line drawn under the error bars.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    panels = [plot, *plot.panels]
    width = 7.0 + 4.6 * (len(panels) - 1)
    per_line = int(CAPTION_WIDTH * width / 7.0)
    texts = [plot.caption, *(p.verdict for p in panels), plot.paper]
    notes = [textwrap.fill(t, per_line) for t in texts if t]
    fig = Figure(figsize=(width, 4.6 + 0.16 * sum(n.count("\n") + 1 for n in notes)), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        _draw(ax, panel)
    fig.suptitle(title, fontsize=11)
    if notes:
        fig.supxlabel("\n".join(notes), fontsize=8, ha="left", x=0.01)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    png = atomic_write(stem.with_suffix(".png"), lambda fh: fh.write(buf.getvalue()))
    csv_path = atomic_write_text(stem.with_name(f"{stem.name}_data.csv"), plot_csv(plot))
    return png, csv_path


def _draw(ax, plot: Plot) -> None:
    """One panel: histogram bars, or lines with error bars over the baselines' bands and the paper's lines."""
    if plot.kind == "hist":
        for s in plot.series:
            widths = [b - a for a, b in zip(s.x, s.x[1:])]
            ax.bar(s.x[:-1], s.y, width=widths, align="edge", alpha=0.5, label=s.label)
    else:
        categorical = any(isinstance(x, str) for s in plot.series for x in s.x)
        for s in plot.series:
            yerr = [0.0 if math.isnan(v) else v for v in s.std] if s.std else None
            ax.errorbar(s.x, s.y, yerr=yerr, marker="o", capsize=3, label=s.label, zorder=3)
        for s in plot.paper_series:
            ax.plot(s.x, s.y, linestyle="--", marker=".", alpha=0.6, label=s.label)
        for ref in plot.baselines:
            ax.axhline(ref.mean, linestyle="--", color="grey", label=f"{ref.label} (n = {ref.n})", zorder=1)
            if ref.n > 1 and not math.isnan(ref.std):
                ax.axhspan(ref.mean - ref.std, ref.mean + ref.std, color="grey", alpha=0.15, zorder=0,
                           label=f"{ref.label} ± std over seeds")
        if plot.zero_line:
            ax.axhline(0.0, linestyle=":", color="grey", label=plot.zero_line, zorder=1)
        if plot.paper_best_x is not None:
            ax.axvline(plot.paper_best_x, linestyle=":", color="black", alpha=0.35, zorder=0,
                       label=f"paper's best: {plot.paper_best_x:g}")
        if plot.logx and not categorical:
            ax.set_xscale("log")
    ax.set_xlabel(plot.xlabel)
    ax.set_ylabel(plot.ylabel)
    ax.grid(alpha=0.3)
    if plot.series or plot.baselines:
        ax.legend(fontsize=8)
