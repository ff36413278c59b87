"""Renderers: a Report as a rich table (terminal), Markdown, CSV (tidy) or LaTeX (booktabs).

Cell text: `63.60 ± 0.50 (n=3)` (n > 1), `63.60 (n=1)`, `63.6` for the paper's numbers, `+11.30` for deltas,
`—` where a row has no value. The best value per column is bold (rich: bold green and `*`). Runs that are not in the
report are listed after the tables with their status and reason (LaTeX: as comments; CSV: rows whose kind is
their status).

CSV layout, one line per cell: block, row, kind, column, mean, std, n, best, note.
"""

from __future__ import annotations

import csv
import io
import math

from rich.console import Group
from rich.table import Table
from rich.text import Text

from pirl_ablate.console import UNBOUNDED, Fit
from pirl_ablate.report.model import Cell, Plot, Report, Row

FORMATS = {"rich": "txt", "markdown": "md", "csv": "csv", "latex": "tex"}


def cell_text(cell: Cell | None, kind: str, pm: str = "±") -> str:
    if cell is None or math.isnan(cell.mean):
        return "—"
    if kind == "delta":
        return f"{cell.mean:+.2f}"
    if cell.n == 0:
        return f"{cell.mean:.1f}"
    text = f"{cell.mean:.2f}"
    if cell.n > 1 and not math.isnan(cell.std):
        text += f" {pm} {cell.std:.2f}"
    return text


def _n_text(cell: Cell | None) -> str:
    return f" (n={cell.n})" if cell is not None and cell.n > 0 else ""


# ------------------------------------------------------------------------------------------------------- rich
def to_rich(report: Report) -> Group:
    parts: list = [Text(report.title, style="bold")]
    for block in report.blocks:
        table = Table(title=block.title, title_justify="left", show_lines=False)
        table.add_column(block.row_header, style="bold")
        for col in block.columns:
            table.add_column(col, justify="right")
        for i, row in enumerate(block.rows):
            if i and row.kind != block.rows[i - 1].kind:
                table.add_section()
            cells = []
            for col in block.columns:
                c = row.cells.get(col)
                style = "bold green" if c is not None and c.best else ("dim" if row.kind == "paper" else "")
                mark = " *" if c is not None and c.best else ""
                cells.append(Text(cell_text(c, row.kind) + _n_text(c) + mark, style=style))
            table.add_row(Text(row.label, style="italic" if row.kind != "method" else ""), *cells)
        if any(c.best for r in block.rows for c in r.cells.values()):
            table.caption = "* best per column among the methods (baselines and paper rows not ranked)"
        parts.append(Fit(table))
    if report.problems:
        table = Table(title=f"runs not in this report ({len(report.problems)})", title_justify="left",
                      title_style="bold yellow")
        for name in ("run", "status", "reason"):
            table.add_column(name)
        for p in report.problems:
            table.add_row(p.run_id, Text(p.status, style="red" if p.status == "failed" else "yellow"), p.reason)
        parts.append(Fit(table))
    parts.extend(Text(f"note: {n}", style="dim") for n in report.notes)
    return Group(*parts)


# --------------------------------------------------------------------------------------------------- markdown
def to_markdown(report: Report) -> str:
    lines = [f"## {report.title}", ""]
    for block in report.blocks:
        lines += [f"### {block.title}", "", _md_row([block.row_header, *block.columns]),
                  _md_row(["---", *["---:"] * len(block.columns)])]
        for row in block.rows:
            cells = []
            for col in block.columns:
                c = row.cells.get(col)
                text = cell_text(c, row.kind)
                cells.append((f"**{text}**" if c is not None and c.best else text) + _n_text(c))
            lines.append(_md_row([row.label if row.kind == "method" else f"*{row.label}*", *cells]))
        if any(c.best for r in block.rows for c in r.cells.values()):
            lines += ["", "**bold**: best per column among the methods (baselines and paper rows not ranked)"]
        lines.append("")
    if report.problems:
        lines += [f"### runs not in this report ({len(report.problems)})", "", "| run | status | reason |",
                  "|---|---|---|"]
        lines += [_md_row([p.run_id, p.status, p.reason]) for p in report.problems]
        lines.append("")
    lines += [f"> note: {n}" for n in report.notes]
    return "\n".join(lines).rstrip() + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


# -------------------------------------------------------------------------------------------------------- csv
def to_csv(report: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["block", "row", "kind", "column", "mean", "std", "n", "best", "note"])
    for block in report.blocks:
        for row in block.rows:
            for col in block.columns:
                c = row.cells.get(col)
                if c is not None:
                    w.writerow([block.title, row.label, row.kind, col, _num(c.mean), _num(c.std), c.n,
                                int(c.best), ""])
    for p in report.problems:
        w.writerow(["runs not in this report", p.run_id, p.status, "", "", "", "", "", p.reason])
    for n in report.notes:
        w.writerow(["notes", "", "note", "", "", "", "", "", n])
    return buf.getvalue()


def _num(v: float) -> str:
    return "" if math.isnan(v) else repr(float(v))


def plot_csv(plot: Plot) -> str:
    """The plotted numbers, two decimals (four for histogram fractions): lines as series, x, mean, std, n, panel
    (the random-init baseline as a row with x "all"; std empty for n = 1; panel: the y label of the panel, one per
    metric plotted side by side); histograms as series, bin_left, bin_right, fraction."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if plot.kind == "hist":
        w.writerow(["series", "bin_left", "bin_right", "fraction"])
        for s in plot.series:
            for left, right, y in zip(s.x, s.x[1:], s.y):
                w.writerow([s.label, _rounded(left, 4), _rounded(right, 4), _rounded(y, 4)])
    else:
        w.writerow(["series", "x", "mean", "std", "n", "panel"])
        for panel in (plot, *plot.panels):
            for s in panel.series:
                for x, y, sd, n in zip(s.x, s.y, s.std, s.n):
                    w.writerow([s.label, x, _rounded(y), _rounded(sd), n, panel.ylabel])
            for ref in panel.baselines:
                w.writerow([ref.label, "all", _rounded(ref.mean), _rounded(ref.std), ref.n, panel.ylabel])
    return buf.getvalue()


def _rounded(v: float, digits: int = 2) -> str:
    return "" if math.isnan(v) else f"{float(v):.{digits}f}"


# ------------------------------------------------------------------------------------------------------ latex
_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "Δ": r"$\Delta$", "−": "--", "±": r"$\pm$", "—": "--"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(report: Report) -> str:
    """One booktabs tabular per block (\\usepackage{booktabs}); best values in bold."""
    lines = [f"% {report.title}"]
    for block in report.blocks:
        lines += [r"\begin{tabular}{l" + "r" * len(block.columns) + "}", r"\toprule",
                  rf"\multicolumn{{{len(block.columns) + 1}}}{{l}}{{\textit{{{latex_escape(block.title)}}}}} \\",
                  r"\midrule",
                  " & ".join(latex_escape(c) for c in [block.row_header, *block.columns]) + r" \\", r"\midrule"]
        for i, row in enumerate(block.rows):
            if i and row.kind != block.rows[i - 1].kind:
                lines.append(r"\midrule")
            cells = [_latex_cell(row, row.cells.get(col)) for col in block.columns]
            label = latex_escape(row.label) if row.kind == "method" else r"\emph{" + latex_escape(row.label) + "}"
            lines.append(" & ".join([label, *cells]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", ""]
    lines += [f"% not in this report: {p.run_id} ({p.status}): {p.reason}" for p in report.problems]
    lines += [f"% note: {n}" for n in report.notes]
    return "\n".join(lines).rstrip() + "\n"


def _latex_cell(row: Row, c: Cell | None) -> str:
    text = cell_text(c, row.kind, pm=r"\pm")
    if c is None or text == "—":
        return "--"
    math_text = f"${text}$"
    if c.best:
        math_text = r"$\mathbf{" + text + "}$"
    return math_text + (f" ($n$={c.n})" if c.n > 0 else "")


def render_text(report: Report, fmt: str) -> str:
    """The report as text in `fmt` (rich: plain text of the terminal rendering at the tables' full width, for the
    file: never cut, never stacked)."""
    if fmt == "markdown":
        return to_markdown(report)
    if fmt == "csv":
        return to_csv(report)
    if fmt == "latex":
        return to_latex(report)
    from rich.console import Console

    console = Console(record=True, width=UNBOUNDED, file=io.StringIO())
    console.print(to_rich(report))
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"
