"""The smoke recipe's choices, one at a time (`sweeps/recipe.gin`): what each does to PIRL's mechanism and to kNN.

One row per variant (the sweep's order: the shipped recipe first, then each single change, then NPID, covariant
Jigsaw and random init trained or drawn the same way), mean +- std over seeds:

    kNN                        top-1 of res5 (the sweep's `knn` evaluation)
    rel. invariance res5       the invariance protocol's relative distance for jigsaw views (1: as far as another
    rel. invariance heads      image); heads: f(v_I) against g(v_It), for methods with both heads
    margin transformed         the last epoch's mean positive minus mean negative cosine of g(v_It) (health numbers;
    margin image               above 0: the term scores its own memory entry above its negatives), and of f(v_I)
    uniformity                 the bank's, last epoch (about -4 spread out, 0 collapsed)
    loss / chance              the last epoch's loss over its chance value (above 2: running away)
"""

from __future__ import annotations

import pandas as pd

from pirl_ablate.report.build import kind_of, ordered, pivot_rows, problems, select, with_methods
from pirl_ablate.report.model import Block, Report
from pirl_ablate.report.registry import register_table

SHIPPED = "shipped (NCE, tau 0.1, Z momentum 0.5, warm bank)"
ORDER = (SHIPPED, "tau 0.07 (the paper)", "tau 0.2", "InfoNCE", "fixed Z", "Z momentum 0.99", "random bank",
         "random bank, Z momentum 0.99", "random bank, fixed Z, tau 0.07 (the paper)", "small stem (3x3, no pool)",
         "10 px patches (whole cells)", "64 px images", "5 epochs", "N = 512", "NPID", "Jigsaw", "random init")
# column -> (protocol, group, metric) of the evaluations
EVALUATED = {"kNN": ("knn", "res5", "top1"), "rel. invariance res5": ("invariance", "res5", "relative"),
             "rel. invariance heads": ("invariance", "heads", "relative")}
COLUMNS = (*EVALUATED, "margin transformed", "margin image", "uniformity", "loss / chance")
LOWER_IS_BETTER = frozenset({"rel. invariance res5", "rel. invariance heads", "uniformity", "loss / chance"})


FINAL = ("pos_sim_transformed", "neg_sim_transformed", "pos_sim_image", "neg_sim_image", "uniformity", "loss",
         "loss_chance")


def _derived(frame: pd.DataFrame) -> pd.DataFrame:
    """Per done run: the two margins, uniformity and loss / chance from its last epoch ("final" rows), as (run_id,
    method, column, value) rows."""
    final = pd.concat([select(frame, "final", metric) for metric in FINAL])
    wide = final.pivot_table(index=["run_id", "method"], columns="metric", values="value")
    wide = wide.reindex(columns=list(FINAL))
    values = pd.DataFrame({"margin transformed": wide["pos_sim_transformed"] - wide["neg_sim_transformed"],
                           "margin image": wide["pos_sim_image"] - wide["neg_sim_image"],
                           "uniformity": wide["uniformity"], "loss / chance": wide["loss"] / wide["loss_chance"]})
    rows = values.rename_axis(columns="column").stack().rename("value").reset_index()
    return rows[["run_id", "method", "column", "value"]]


@register_table("recipe", configurable=False)
def recipe(frame: pd.DataFrame, sweep: str = "recipe") -> Report:
    """Smoke recipe ablation (sweeps/recipe.gin): kNN, relative invariance, each term's alignment, uniformity."""
    mine = with_methods(frame[frame["sweep"] == sweep], SHIPPED)
    report = Report(name="recipe", title="The smoke recipe's choices one at a time: kNN, relative invariance, "
                                         "each term's alignment margin, the bank's uniformity")
    parts = [select(mine, protocol, metric, group).assign(column=column)[["run_id", "method", "column", "value"]]
             for column, (protocol, group, metric) in EVALUATED.items()]
    values = pd.concat([*parts, _derived(mine)])
    columns = [c for c in COLUMNS if c in set(values["column"])]
    block = Block(title="ours (mean +- std over seeds)", columns=columns, row_header="variant",
                  rows=pivot_rows(values, "method", "column", ordered(values["method"].dropna().unique(), ORDER),
                                  columns, kind=kind_of),
                  lower_is_better=LOWER_IS_BETTER, ranked=frozenset({"kNN", "rel. invariance res5"}))
    block.mark_best()
    if block.rows:
        report.blocks.append(block)
    used = set(values["run_id"])
    report.problems = problems(mine, used, "knn, invariance")
    report.runs_used = len(used)
    return report
