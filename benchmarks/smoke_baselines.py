"""PIRL, NPID and the random-init network at the smoke budget, 3 seeds, kNN and linear on Fashion-MNIST's test split.

Each (method, seed) is one run folder under --out (default runs/smoke_baselines/<method>-s<seed>), pre-trained with
`run_training` from its base gin file plus `train.seed = <seed>` and evaluated with `run_evaluations(run,
["linear", "knn"])` (the evaluation helper's protocols, on res5). Finished runs and evaluations are reused, so the
script can be stopped and started again. Prints one table: mean +- std over the seeds, top-1 in %.

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

METHODS = {"PIRL (jigsaw)": "gin/pirl_jigsaw.gin", "NPID": "gin/npid.gin", "random init": "gin/random_init.gin"}
PROTOCOLS = ("linear", "knn")


def top1(result: dict) -> float:
    """Top-1 (%) of an evaluation result's res5 group."""
    return result["metrics"]["res5"]["top1"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--bind", action="append", default=[], help="extra gin bindings for every run")
    p.add_argument("--out", default="runs/smoke_baselines")
    args = p.parse_args()
    scores: dict[str, dict[str, list[float]]] = {m: {q: [] for q in PROTOCOLS} for m in METHODS}
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
            for q in PROTOCOLS:
                scores[method][q].append(top1(evals[f"{q}-fashion_mnist"]))

    def cell(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):5.1f} +- {sd:3.1f}"

    print(f"Fashion-MNIST test top-1 (%), smoke budget, seeds {args.seeds} {' '.join(args.bind)}")
    print(f"| {'method':<14} | {'linear':>12} | {'kNN':>12} | {'pre-train s':>11} |")
    print(f"|{'-' * 16}|{'-' * 14}|{'-' * 14}|{'-' * 13}|")
    for method in METHODS:
        print(f"| {method:<14} | {cell(scores[method]['linear']):>12} | {cell(scores[method]['knn']):>12} | "
              f"{statistics.mean(train_s[method]):>11.0f} |")


if __name__ == "__main__":
    main()
