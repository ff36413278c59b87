"""Does a change of the cached linear probe separate trained runs from random init at smoke scale?

    python benchmarks/linear_probe_smoke.py runs/lambda                 # every candidate below
    python benchmarks/linear_probe_smoke.py runs/lambda --only default lr0.1

Reads the run folders of a sweep (`pirl-ablate sweep sweeps/lambda.gin`), groups them by variant / lambda, and
trains `pirl_ablate.evaluate.linear.train_linear_probe` on each run's cached features (features/*.pt, written by the
sweep's linear evaluation) once per candidate: the probe's schedule, its batch-norm, L2-normalised features, or
fewer labelled images (a class-balanced subset drawn by `pirl_ablate.evaluate.semisup.balanced_subset`, seed 0; the
test split is always whole). Prints per candidate the top-1 of each group (mean +- sample std over seeds) and
Figure 6's verdict
(`pirl_ablate.report.build.separation`'s rule: every lambda > 0 above random init by more than its std plus the
baseline's). "default" is the sweep's own probe and reproduces evals/linear-*.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pirl_ablate.evaluate.linear import train_linear_probe
from pirl_ablate.evaluate.semisup import balanced_subset

RANDOM_INIT = "random init"
# name -> (fraction of the train labels, L2-normalise the features, train_linear_probe kwargs); all on res5
CANDIDATES: dict[str, tuple[float, bool, dict]] = {
    "default": (1.0, False, {}),
    "lr0.1": (1.0, False, {"lr": 0.1}),
    "ep100-lr0.1": (1.0, False, {"epochs": 100, "lr": 0.1}),
    "wd5e-3": (1.0, False, {"weight_decay": 5e-3}),
    "noBN-lr0.1": (1.0, False, {"feature_bn": False, "lr": 0.1}),
    "noBN-lr0.1-wd0": (1.0, False, {"feature_bn": False, "lr": 0.1, "weight_decay": 0.0}),
    "noBN-lr0.1-ep100-wd0": (1.0, False, {"feature_bn": False, "lr": 0.1, "epochs": 100, "weight_decay": 0.0}),
    "l2-BN": (1.0, True, {}),
    "l2-noBN-lr1": (1.0, True, {"feature_bn": False, "lr": 1.0}),
    "l2-noBN-lr10": (1.0, True, {"feature_bn": False, "lr": 10.0}),
    "l2-noBN-lr1-ep100": (1.0, True, {"feature_bn": False, "lr": 1.0, "epochs": 100}),
    "l2-noBN-lr10-ep100": (1.0, True, {"feature_bn": False, "lr": 10.0, "epochs": 100}),
    "l2-noBN-lr10-ep100-wd0": (1.0, True, {"feature_bn": False, "lr": 10.0, "epochs": 100, "weight_decay": 0.0}),
    "labels10%": (0.1, False, {}),
    "labels10%-lr0.1": (0.1, False, {"lr": 0.1}),
    "labels3%": (0.03, False, {}),
    "labels3%-lr0.1": (0.03, False, {"lr": 0.1}),
    "labels3%-ep100": (0.03, False, {"epochs": 100}),
    "labels1%": (0.01, False, {}),
    "labels1%-ep100": (0.01, False, {"epochs": 100}),
    "labels1%-lr0.1": (0.01, False, {"lr": 0.1}),
    "labels1%-lr0.1-ep100": (0.01, False, {"lr": 0.1, "epochs": 100}),
}


def group_of(run: Path) -> str:
    """"random init" (a baseline's variant) or "lambda <value>" from the run's operative config."""
    meta = json.loads((run / "meta.json").read_text())
    if meta.get("variant"):
        return meta["variant"]
    for line in (run / "config.gin").read_text().splitlines():
        if line.startswith("PIRLLoss.lambda_ ="):
            return f"lambda {float(line.split('=')[1]):g}"
    return "lambda 0"  # NPID runs bind no PIRLLoss


def probe(run: Path, fraction: float, l2: bool, kwargs: dict) -> float | None:
    """Test top-1 (%) of the probe on `run`'s cached res5 features; None when the run has none (yet)."""
    paths = [run / "features" / f"fashion_mnist-{split}-res5.pt" for split in ("train", "test")]
    if not all(p.exists() for p in paths):
        return None
    (train_x, train_y), (test_x, test_y) = [(d["features"].float(), d["labels"]) for d in map(torch.load, paths)]
    if fraction < 1:
        keep = balanced_subset(train_y, fraction, seed=0)
        train_x, train_y = train_x[keep], train_y[keep]
    if l2:
        train_x, test_x = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    return train_linear_probe(train_x, train_y, test_x, test_y, 10, **kwargs)["top1"]


def verdict(stats: dict[str, tuple[float, float, int]]) -> str:
    """Figure 6's rule on {group: (mean, std, n)}: "SEPARATES" when every lambda > 0 clears random init."""
    if RANDOM_INIT not in stats:
        return "no random init"
    ref_mean, ref_sd, _ = stats[RANDOM_INIT]
    gaps = {g: m - ref_mean - (sd + ref_sd) for g, (m, sd, _) in stats.items()
            if g.startswith("lambda") and float(g.split()[1]) > 0}
    if not gaps:
        return "no lambda > 0"
    above = sum(v > 0 for v in gaps.values())
    return "SEPARATES" if above == len(gaps) else f"no ({above} of {len(gaps)} above beyond spread)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep folders (runs/lambda)")
    parser.add_argument("--only", nargs="*", default=list(CANDIDATES), choices=list(CANDIDATES))
    args = parser.parse_args()
    runs = sorted(p.parent for s in args.sweeps for p in s.glob("*/result.json"))
    groups = {run: group_of(run) for run in runs}
    print("| candidate | " + " | ".join(sorted(set(groups.values()))) + " | separates? | probe s |")
    for name in args.only:
        fraction, l2, kwargs = CANDIDATES[name]
        start = time.perf_counter()
        values: dict[str, list[float]] = {}
        for run, group in groups.items():
            top1 = probe(run, fraction, l2, kwargs)
            if top1 is not None:
                values.setdefault(group, []).append(top1)
        stats = {g: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v))
                 for g, v in values.items()}
        cells = [f"{stats[g][0]:.2f} ± {stats[g][1]:.2f} (n={stats[g][2]})" if g in stats else "-"
                 for g in sorted(set(groups.values()))]
        print(f"| {name} | " + " | ".join(cells) + f" | {verdict(stats)} | {time.perf_counter() - start:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
