"""Regenerate README's result tables from run folders, as Markdown with the command that made the runs and the date.

    python benchmarks/readme_numbers.py                        # runs/lambda (the main job) + runs/smoke_baselines
    python benchmarks/readme_numbers.py --results runs --baselines runs/smoke_baselines

The lambda table comes from the main job's folder (`pirl-ablate sweep sweeps/lambda.gin` -> runs/lambda), read with
the report loader (pirl_ablate.report.results.load_results): linear and kNN top-1 (res5) per lambda and for the
random-init baseline, mean +- std when there are several seeds, and, where the runs logged them, the transformed
term's final positive and negative similarity. The baselines table comes from `python benchmarks/smoke_baselines.py`
(runs/smoke_baselines/<method>-s<seed>). Nothing is copied from an earlier README: a table with no runs behind it is
printed as missing, with the command that produces it.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
from pathlib import Path

from smoke_baselines import table as baselines_table  # (this folder: run as python benchmarks/readme_numbers.py)

from pirl_ablate.report.build import RANDOM_INIT, with_methods
from pirl_ablate.report.results import load_results
from pirl_ablate.runs import STATUS_DONE

LAMBDA_ROWS = {"linear top-1 (res5)": ("linear", "res5", "top1"), "kNN top-1 (res5)": ("knn", "res5", "top1"),
               "g(v_It) . m_I, last epoch": ("final", "", "pos_sim_transformed"),
               "g(v_It) . negatives, last epoch": ("final", "", "neg_sim_transformed")}


def cell(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def transformed_margins(runs):
    """Per run: its column and the last epoch's pos_sim_transformed - neg_sim_transformed (the health warning's
    test: at or below 0 is "not aligned")."""
    final = runs[(runs["protocol"] == "final") & runs["metric"].isin(["pos_sim_transformed", "neg_sim_transformed"])]
    wide = final.pivot_table(index=["run_id", "column"], columns="metric", values="value").reset_index()
    if wide.empty or "neg_sim_transformed" not in wide:
        return wide
    return wide.assign(margin=wide["pos_sim_transformed"] - wide["neg_sim_transformed"])


def margin_cell(values: list[float]) -> str:
    return f"{cell(values, 3)}; {min(values):+.3f}" if values else "-"


def lambda_table(results: Path, sweep: str = "lambda") -> str:
    frame = with_methods(load_results(results), "PIRL")
    runs = frame[(frame["sweep"] == sweep) & (frame["status"] == STATUS_DONE)]
    if runs.empty:
        return f"(no done runs under {results / sweep}: run `pirl-ablate sweep sweeps/{sweep}.gin`)\n"
    column = runs["PIRL.lambda_"].where(runs["method"] != RANDOM_INIT, RANDOM_INIT)
    runs = runs.assign(column=column)
    columns = sorted(c for c in runs["column"].dropna().unique() if c != RANDOM_INIT)
    columns += [RANDOM_INIT] if (runs["column"] == RANDOM_INIT).any() else []
    seeds = sorted(runs["seed"].dropna().astype(int).unique())
    lines = [f"| λ | {' | '.join(f'{c:g}' if isinstance(c, float) else str(c) for c in columns)} |",
             "|---|" + "---|" * len(columns)]
    for label, (protocol, group, metric) in LAMBDA_ROWS.items():
        rows = runs[(runs["protocol"] == protocol) & (runs["group"].fillna("") == group) & (runs["metric"] == metric)]
        if rows.empty:
            continue
        cells = [cell(rows.loc[rows["column"] == c, "value"].tolist(), 2 if protocol != "final" else 3)
                 for c in columns]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    margins = transformed_margins(runs)
    if not margins.empty:
        cells = [margin_cell(margins[margins["column"] == c]["margin"].tolist()) for c in columns]
        lines.append(f"| transformed margin (pos - neg), last epoch; lowest run | {' | '.join(cells)} |")
    return "\n".join(lines) + f"\n\nseeds {', '.join(map(str, seeds))}; `pirl-ablate sweep sweeps/{sweep}.gin`\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="runs", help="the folder holding the sweep folders (runs/lambda)")
    p.add_argument("--baselines", default="runs/smoke_baselines")
    args = p.parse_args()
    print(f"<!-- python benchmarks/readme_numbers.py, {datetime.date.today().isoformat()} -->\n")
    print("Main job (Figure 6), Fashion-MNIST test split:\n")
    print(lambda_table(Path(args.results)))
    print("Smoke baselines, Fashion-MNIST test (top-1 %, relative invariance to jigsaw, alignment margin):\n")
    print(baselines_table(Path(args.baselines)))


if __name__ == "__main__":
    main()
