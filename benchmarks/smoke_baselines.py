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
import time
from pathlib import Path

from pirl_ablate import config
from pirl_ablate.build import run_training
from pirl_ablate.evaluate import run_evaluations
from pirl_ablate.runs import RunDir

METHODS = {"PIRL (jigsaw)": "gin/pirl_jigsaw.gin", "NPID": "gin/npid.gin", "Jigsaw": "gin/jigsaw.gin",
           "random init": "gin/random_init.gin"}
PROTOCOLS = ("linear", "knn", "invariance")


def top1(result: dict) -> float:
    """Top-1 (%) of an evaluation result's res5 group."""
    return result["metrics"]["res5"]["top1"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--bind", action="append", default=[], help="extra gin bindings for every run")
    p.add_argument("--out", default="runs/smoke_baselines")
    args = p.parse_args()
    columns = (*PROTOCOLS, "margin", "heads")
    scores: dict[str, dict[str, list[float]]] = {m: {q: [] for q in columns} for m in METHODS}
    train_s: dict[str, list[float]] = {m: [] for m in METHODS}
    for seed in args.seeds:
        for method, gin_file in METHODS.items():
            run = RunDir(Path(args.out) / f"{Path(gin_file).stem}-s{seed}")
            t0 = time.perf_counter()
            result = run_training(config.parse([gin_file], [*args.bind, f"train.seed = {seed}"]), run.path)
            train_s[method].append(result.get("wall_s", time.perf_counter() - t0))
            evals = run.evals()
            missing = [q for q in PROTOCOLS if f"{q}-fashion_mnist" not in evals]
            if missing:
                evals.update(run_evaluations(run.path, missing))
            for q in ("linear", "knn"):
                scores[method][q].append(top1(evals[f"{q}-fashion_mnist"]))
            scores[method]["invariance"].append(evals["invariance-fashion_mnist"]["metrics"]["res5"]["relative"])
            last = (run.metrics() or [{}])[-1]
            if "pos_sim_transformed" in last:
                scores[method]["margin"].append(last["pos_sim_transformed"] - last["neg_sim_transformed"])
            if "rel_invariance" in last:
                scores[method]["heads"].append(last["rel_invariance"])

    def cell(values: list[float], digits: int = 1) -> str:
        if not values:
            return "—"
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"

    print(f"Fashion-MNIST test, smoke budget, seeds {args.seeds} {' '.join(args.bind)}")
    print("| method | linear (res5) | kNN | rel. invariance res5 | transformed margin | rel. invariance heads "
          "| pre-training (s) |")
    print("|---|---|---|---|---|---|---|")
    for method in METHODS:
        v = scores[method]
        print(f"| {method} | {cell(v['linear'])} | {cell(v['knn'])} | {cell(v['invariance'], 2)} | "
              f"{cell(v['margin'], 2)} | {cell(v['heads'], 2)} | {statistics.mean(train_s[method]):.0f} |")


if __name__ == "__main__":
    main()
