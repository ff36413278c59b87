"""PIRL, NPID, covariant Jigsaw and the random-init network at the smoke budget, 3 seeds: kNN and linear top-1 on
Fashion-MNIST's test split, relative invariance to jigsaw, and PIRL's transformed-term alignment.

Each (method, seed) is one run folder under --out (default runs/smoke_baselines/<method>-s<seed>), pre-trained with
`run_training` from its base gin file plus `train.seed = <seed>` and evaluated with `run_evaluations(run,
["linear", "knn", "invariance"])` (the evaluation protocols, on res5). Finished runs and evaluations are reused, so
the script can be stopped and started again. Prints one table, mean +- std over the seeds: linear and kNN top-1 in
%, the invariance protocol's relative distance of pooled res5 between an image and its jigsaw view (1: as far as
another image), and from the last epoch's metrics row the transformed term's alignment margin (mean positive minus
mean negative cosine) and the heads' relative invariance (PIRL only).

    python benchmarks/smoke_baselines.py                 # ~3 x (2 trainings + 3 evaluations); long on 2 CPU cores
    python benchmarks/smoke_baselines.py --seeds 0 --bind train.epochs=3   # quicker / longer variants
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from pirl_ablate import config
from pirl_ablate.build import run_training
from pirl_ablate.gin_edge import run_evaluations
from pirl_ablate.runs import STATUS_DONE, RunDir

METHODS = {"PIRL (jigsaw)": "gin/pirl_jigsaw.gin", "NPID": "gin/npid.gin", "Jigsaw": "gin/jigsaw.gin",
           "random init": "gin/random_init.gin"}
PROTOCOLS = ("linear", "knn", "invariance")
COLUMNS = ("linear", "knn", "invariance", "margin", "heads", "wall_s")


def run_folder(out: Path, gin_file: str, seed: int) -> Path:
    return out / f"{Path(gin_file).stem}-s{seed}"


def scores_of(run: RunDir) -> dict[str, float] | None:
    """The table's numbers of one finished, evaluated run folder (None if it is not both)."""
    result, evals = run.result() or {}, run.evals()
    if result.get("status") != STATUS_DONE or any(f"{q}-fashion_mnist" not in evals for q in PROTOCOLS):
        return None
    out = {q: evals[f"{q}-fashion_mnist"]["metrics"]["res5"]["top1"] for q in ("linear", "knn")}
    out["invariance"] = evals["invariance-fashion_mnist"]["metrics"]["res5"]["relative"]
    out["wall_s"] = result.get("wall_s", 0.0)
    last = (run.metrics() or [{}])[-1]
    if "pos_sim_transformed" in last:
        out["margin"] = last["pos_sim_transformed"] - last["neg_sim_transformed"]
    if "rel_invariance" in last:
        out["heads"] = last["rel_invariance"]
    return out


def cell(values: list[float], digits: int = 1) -> str:
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def table(out: Path) -> str:
    """The Markdown table of every finished run folder under `out`, mean ± std over the seeds found."""
    lines = ["| method | linear (res5) | kNN | rel. invariance res5 | transformed margin | rel. invariance heads "
             "| pre-training (s) |", "|---|---|---|---|---|---|---|"]
    seeds: set[int] = set()
    for method, gin_file in METHODS.items():
        values: dict[str, list[float]] = {c: [] for c in COLUMNS}
        for path in sorted(out.glob(f"{Path(gin_file).stem}-s*")):
            if (scores := scores_of(RunDir(path))) is not None:
                seeds.add(int(path.name.rsplit("-s", 1)[1]))
                for c, v in scores.items():
                    values[c].append(v)
        if values["linear"]:
            lines.append(f"| {method} | {cell(values['linear'])} | {cell(values['knn'])} | "
                         f"{cell(values['invariance'], 2)} | {cell(values['margin'], 2)} | "
                         f"{cell(values['heads'], 2)} | {statistics.mean(values['wall_s']):.0f} |")
    if len(lines) == 2:
        return f"(no done runs under {out}: run `python benchmarks/smoke_baselines.py`)\n"
    used = ", ".join(map(str, sorted(seeds)))
    return "\n".join(lines) + f"\n\nseeds {used}; `python benchmarks/smoke_baselines.py`\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--bind", action="append", default=[], help="extra gin bindings for every run")
    p.add_argument("--out", default="runs/smoke_baselines")
    args = p.parse_args()
    for seed in args.seeds:
        for gin_file in METHODS.values():
            run = RunDir(run_folder(Path(args.out), gin_file, seed))
            run_training(config.parse([gin_file], [*args.bind, f"train.seed = {seed}"]), run.path)
            if missing := [q for q in PROTOCOLS if f"{q}-fashion_mnist" not in run.evals()]:
                run_evaluations(run.path, missing)
    print(f"Fashion-MNIST test, smoke budget, seeds {args.seeds} {' '.join(args.bind)}")
    print(table(Path(args.out)))


if __name__ == "__main__":
    main()
