"""`pirl-ablate report --table N | --figure N | SWEEP.gin`: results gathered into a paper table or figure.

Which runs a report expects: those of the sweep records (`runs/<sweep>/sweep.json`, written by `pirl-ablate sweep`
before it submits anything); for `report SWEEP.gin` without a record, those of the file's expansion. Runs expected
but never started are listed as missing (or pending), beside failed and running ones.

Exit status: 0 when the report holds at least one result (missing, running and failed runs are listed in it);
2 when it holds none (NoResults, a UserError: one `error:` line naming the sweep command that produces them, whose
sweep file resolves from any folder).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pirl_ablate.config import resolve_config_file
from pirl_ablate.console import console, info, out
from pirl_ablate.errors import UserError
from pirl_ablate.report.build import sweep_report
from pirl_ablate.report.model import Problem, Report
from pirl_ablate.report.registry import TABLES
from pirl_ablate.report.render import FORMATS, render_text, to_rich
from pirl_ablate.report.results import SWEEP_RECORD, ExpectedRun, load_results
from pirl_ablate.runs import atomic_write_text


class NoResults(UserError):
    """The report has no result yet: its sweep has not run (or not finished) under the results folder."""


def run(args: argparse.Namespace) -> int:
    """Build the report (a paper table or figure, or a sweep file's generic table), print it, write it."""
    results = Path(args.results or "runs")
    out_dir = Path(args.out or "reports")
    if args.sweep:
        try:
            sweep_file = resolve_config_file(args.sweep)
        except UserError:
            raise UserError(f"{args.sweep}: no such sweep file (the shipped ones are sweeps/*.gin)") from None
        sweep, expected = expected_runs(sweep_file)
        if (results / sweep / SWEEP_RECORD).is_file():
            expected = []  # the sweep record lists the runs as submitted (with any --bind), the loader reads it
        frame = load_results(results, expected)
        table = sweep.removeprefix("paper_")  # a sweep with a table of its own name (fidelity) gets that table
        report = TABLES.get(table)(frame, sweep=sweep) if table in TABLES else sweep_report(frame, sweep)
    else:
        name = f"table{args.table}" if args.table else f"figure{args.figure}"
        entry = TABLES.entry(name)
        frame = load_results(results)
        sweep = feeding_sweep(entry.params["sweep"], set(frame["sweep"].dropna()) if len(frame) else set())
        sweep_file = Path("sweeps") / ("paper" if sweep.startswith("paper_") else "") / \
            f"{sweep.removeprefix('paper_')}.gin"
        report = entry.obj(frame, sweep=sweep)
    report.problems.extend(Problem(run_id=run_id, status="left out", reason=why)  # unreadable files, copies
                           for run_id, why in frame.attrs.get("left_out", []))
    return emit(report, args.format, out_dir, results / sweep, f"pirl-ablate sweep {sweep_file}")


def feeding_sweep(smoke: str, present: set[str]) -> str:
    """The sweep whose results feed a paper table or figure: its smoke sweep (`smoke`, e.g. "lambda"), or its paper
    twin ("paper_lambda", sweeps/paper/) when only that one is among the results; both present: the smoke one,
    with a line saying how to report the other (`--results runs/paper_lambda`)."""
    paper = f"paper_{smoke}"
    if paper in present and smoke not in present:
        return paper
    if paper in present:
        info(f"results of both {smoke} and {paper}: reporting {smoke}; pass --results runs/{paper} for the other")
    return smoke


def emit(report: Report, fmt: str, out_dir: Path, sweep_dir: Path, sweep_cmd: str) -> int:
    """Print `report` in `fmt`, write it (and its figure) under `out_dir`; NoResults if it holds no result."""
    if not report.has_results:
        if report.problems:
            out.print(to_rich(Report(name=report.name, title=report.title, problems=report.problems)))
        raise NoResults(f"no results under {sweep_dir}: run `{sweep_cmd}`")
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
    """The sweep's name and every run its file asks for (pirl_ablate.sweep.spec.load_sweep: this imports every
    configurable, torch included, so only `report SWEEP.gin` pays for it). A sweep file that does not expand raises
    its ConfigError (file:line: reason)."""
    from pirl_ablate.sweep.spec import load_sweep

    sweep = load_sweep(sweep_file)
    return sweep.name, [ExpectedRun(run_id=r.run_id, sweep=sweep.name, bindings=r.bindings, seed=r.seed,
                                    variant=r.variant) for r in sweep.runs]
