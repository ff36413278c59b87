"""The fidelity study (`sweeps/fidelity.gin`): does the small-scale framework reproduce the paper's orderings?

One table of kNN top-1, linear top-1 (res5) and relative invariance (heads and res5; see
pirl_ablate.evaluate.invariance) per method, mean +- std over seeds, then each ordering the paper reports, with our
two numbers and a verdict:

    holds                       the paper's order, with the two means further apart than the sum of their stds
    does not hold (within noise)  the paper's order, but the seeds' spreads overlap (or one seed only)
    does not hold (reversed)    the opposite order

Orderings, each cited to the table that holds both rows: Table 2 (PIRL above NPID, Jigsaw and Rotation on the
linear probe), Table 7 (PIRL's res5 above a random network's: 63.6 vs 5.6), Table 5 (PIRL (Rotation+Jigsaw)
above PIRL (Jigsaw)), Figure 4 (PIRL more invariant than Jigsaw), and two this framework adds as sanity checks at
every scale: kNN PIRL > NPID > random init, PIRL more invariant than a random network.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pandas as pd

from pirl_ablate.report.build import RANDOM_INIT, kind_of, ordered, pivot_rows, problems, select, with_methods
from pirl_ablate.report.model import Block, Cell, Report, Row, aggregate, cell
from pirl_ablate.report.registry import register_table

PIRL = "PIRL (Jigsaw)"
ORDER = (PIRL, "PIRL (Rotation+Jigsaw)", "NPID", "Jigsaw", "Rotation", RANDOM_INIT)
# column -> (protocol, group, metric)
COLUMNS = {"kNN": ("knn", "res5", "top1"), "linear": ("linear", "res5", "top1"),
           "relative invariance (heads)": ("invariance", "heads", "relative"),
           "relative invariance (res5)": ("invariance", "res5", "relative")}
LOWER_IS_BETTER = frozenset({"relative invariance (heads)", "relative invariance (res5)"})


class Claim(NamedTuple):
    source: str  # where the paper states it
    column: str
    better: str  # the method the paper ranks higher (more invariant for distances)
    worse: str


CLAIMS = (
    Claim("Table 2", "linear", PIRL, "NPID"),
    Claim("Table 2", "linear", PIRL, "Jigsaw"),
    Claim("Table 2", "linear", PIRL, "Rotation"),
    Claim("Table 7", "linear", PIRL, RANDOM_INIT),
    Claim("Table 5", "linear", "PIRL (Rotation+Jigsaw)", PIRL),
    Claim("Figure 4", "relative invariance (heads)", PIRL, "Jigsaw"),
    Claim("Figure 4", "relative invariance (res5)", PIRL, "Jigsaw"),
    Claim("sanity", "relative invariance (heads)", PIRL, RANDOM_INIT),
    Claim("sanity", "kNN", PIRL, "NPID"),
    Claim("sanity", "kNN", "NPID", RANDOM_INIT),
)


def verdict(better: Cell, worse: Cell, lower_is_better: bool) -> str:
    """holds / does not hold (within noise) / does not hold (reversed), for two seed aggregates."""
    gap = (worse.mean - better.mean) if lower_is_better else (better.mean - worse.mean)
    if gap <= 0:
        return "does not hold (reversed)"
    spread = sum(0.0 if math.isnan(c.std) else c.std for c in (better, worse))
    if better.n < 2 or worse.n < 2 or gap <= spread:
        return "does not hold (within noise)"
    return "holds"


@register_table("fidelity", configurable=False)
def fidelity(frame: pd.DataFrame, sweep: str = "fidelity") -> Report:
    """Fidelity study (sweeps/fidelity.gin): kNN, linear, relative invariance; the paper's orderings checked."""
    frame = with_methods(frame, PIRL)
    mine = frame[frame["sweep"] == sweep]
    report = Report(name="fidelity", title="Fidelity: kNN, linear and relative invariance against the paper's "
                                           "orderings (Tables 2, 5 and 7, Figure 4)")
    parts = []
    for column, (protocol, group, metric) in COLUMNS.items():
        parts.append(select(mine, protocol, metric, group).assign(column=column))
    values = pd.concat(parts)
    columns = [c for c in COLUMNS if c in set(values["column"])]
    block = Block(title="ours (mean +- std over seeds)", columns=columns,
                  rows=pivot_rows(values, "method", "column", ordered(values["method"].unique(), ORDER), columns,
                                  kind=kind_of),
                  lower_is_better=LOWER_IS_BETTER)
    block.mark_best()
    if block.rows:
        report.blocks.append(block)
    cells = {(m, c): cell(mean, std, n) for m, c, mean, std, n in
             aggregate(values, ["method", "column"])[["method", "column", "mean", "std", "n"]].itertuples(index=False)}
    claims = []
    for claim in CLAIMS:
        a, b = cells.get((claim.better, claim.column)), cells.get((claim.worse, claim.column))
        if a is None or b is None:
            continue
        relation = "<" if claim.column in LOWER_IS_BETTER else ">"
        label = (f"{claim.source}: {claim.better} {relation} {claim.worse} ({claim.column}): "
                 f"{verdict(a, b, claim.column in LOWER_IS_BETTER)}")
        claims.append(Row(label=label, cells={"first": a, "second": b}, kind="delta"))
    if claims:
        report.blocks.append(Block(title="the paper's orderings", columns=["first", "second"], rows=claims,
                                   row_header="ordering", ranked=frozenset()))
    used = set(values["run_id"])
    report.problems = problems(mine, used, "knn, linear, invariance")
    report.runs_used = len(used)
    return report
