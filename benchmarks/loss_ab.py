"""The chunked bank scoring of this checkout against another checkout's, interleaved in one process.

Alternating the two (and this checkout's with the partition-estimate input, `tau` given, which is what PIRL's
training step runs) step by step cancels most of the load of a shared machine, which separate runs of
benchmarks/loss.py do not.

    git archive <commit> | tar -x -C /tmp/old && python benchmarks/loss_ab.py /tmp/old
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

from pirl_ablate.losses import nce


def load_nce(checkout: Path):
    spec = importlib.util.spec_from_file_location("other_nce", checkout / "pirl_ablate" / "losses" / "nce.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["other_nce"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("other", type=Path, help="the other checkout's root")
    p.add_argument("--size", type=int, default=100_000)
    p.add_argument("--negatives", type=int, default=4096)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=12)
    args = p.parse_args()
    other = load_nce(args.other)
    g = torch.Generator().manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(args.size, 128, generator=g), dim=1)
    loss_fn = partial(nce.nce_loss, tau=0.07, log_z=math.log(args.size), dataset_size=args.size)
    variants = {"other": lambda *a: other.bank_contrast(*a, loss_fn), "this": lambda *a: nce.bank_contrast(*a, loss_fn),
                "this, with tau": lambda *a: nce.bank_contrast(*a, loss_fn, 0.07)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, contrast in variants.items():
            index = torch.randint(0, args.size, (args.batch,), generator=g)
            raw = torch.randn(args.batch, 2, 128, generator=g, requires_grad=True)
            queries = torch.nn.functional.normalize(raw, dim=2)
            negatives = torch.randint(0, args.size, (args.batch, args.negatives), generator=g)
            start = time.perf_counter()
            contrast(queries, bank, index, negatives).loss.mean().backward()
            times[name].append(time.perf_counter() - start)
    print(f"bank_contrast fwd+bwd, |D|={args.size:,} N={args.negatives:,} B={args.batch} K=2, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} interleaved steps")
    for name, t in times.items():
        print(f"{name:<16}{1000 * statistics.median(t):>8.0f} ms   (min {1000 * min(t):.0f})")


if __name__ == "__main__":
    main()
