"""`pirl-ablate report --table N | --figure N | SWEEP.gin`: results gathered into a paper table or figure.

Exit status: 0 when the report holds at least one result (missing, running and failed runs are listed in it);
1 when it holds none: an empty report is not a mistake in the user's input (so not a UserError, exit 2), but a
script must not take it for a result; the message names the sweep command that produces the results.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pirl_ablate.console import console, info, out
from pirl_ablate.errors import UserError
from pirl_ablate.report.build import sweep_report
from pirl_ablate.report.model import Report
from pirl_ablate.report.registry import TABLES
from pirl_ablate.report.render import FORMATS, render_text, to_rich
from pirl_ablate.report.results import ExpectedRun, load_results
from pirl_ablate.runs import atomic_write_text

REPO_SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"


def report_command(args: argparse.Namespace) -> int:
    results = Path(args.results or "runs")
    out_dir = Path(args.out or "reports")
    if args.sweep:
        sweep_file = Path(args.sweep)
        if not sweep_file.is_file():
            raise UserError(f"{sweep_file}: no such sweep file (the shipped ones are sweeps/*.gin)")
        sweep, expected = expected_runs(sweep_file)
        report = sweep_report(load_results(results, expected), sweep)
    else:
        name = f"table{args.table}" if args.table else f"figure{args.figure}"
        entry = TABLES.entry(name)
        sweep = entry.params["sweep"]
        sweep_file = shipped_sweep(sweep)
        expected: list[ExpectedRun] = []
        if sweep_file.is_file():
            sweep, expected = expected_runs(sweep_file)  # its `sweep.name` may differ from the file name
        report = entry.obj(load_results(results, expected), sweep=sweep)
        if not sweep_file.is_file():
            report.notes.append(f"{sweep_file} not found: runs that were never started cannot be listed")
    return emit(report, args.format, out_dir, results / sweep, f"pirl-ablate sweep {sweep_file}")


def shipped_sweep(sweep: str) -> Path:
    """sweeps/<sweep>.gin in the current directory, else in the repository's sweeps/ folder."""
    here = Path("sweeps") / f"{sweep}.gin"
    return here if here.is_file() or not (REPO_SWEEPS / f"{sweep}.gin").is_file() else REPO_SWEEPS / f"{sweep}.gin"


def emit(report: Report, fmt: str, out_dir: Path, sweep_dir: Path, sweep_cmd: str) -> int:
    """Print `report` in `fmt`, write it (and its figure) under `out_dir`; 1 if it holds no result."""
    if not report.has_results:
        if report.problems:
            out.print(to_rich(Report(name=report.name, title=report.title, problems=report.problems)))
        console.print(f"no results under {sweep_dir}: run `{sweep_cmd}`", soft_wrap=True)
        return 1
    text = render_text(report, fmt)
    if fmt == "rich":
        out.print(to_rich(report))
    else:
        out.print(text, markup=False, highlight=False, soft_wrap=True, end="")
    path = atomic_write_text(out_dir / f"{report.name}.{FORMATS[fmt]}", text)
    info(f"wrote {path}")
    if report.plot is not None:
        from pirl_ablate.report.figures import save_figure

        for p in save_figure(report.plot, report.title, out_dir / report.name):
            info(f"wrote {p}")
    if report.problems:
        console.print(f"{len(report.problems)} run(s) not in the report (listed above)")
    return 0


def expected_runs(sweep_file: Path) -> tuple[str, list[ExpectedRun]]:
    """The sweep's name and every run it asks for (pirl_ablate.sweep.spec.load_sweep), so that runs without a
    folder are listed as missing. A sweep file that does not expand raises its ConfigError (file:line: reason)."""
    from pirl_ablate.sweep.spec import load_sweep

    sweep = load_sweep(sweep_file)
    return sweep.name, [ExpectedRun(run_id=r.run_id, sweep=sweep.name, bindings=r.bindings, seed=r.seed,
                                    variant=r.variant) for r in sweep.runs]
