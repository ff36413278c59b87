"""One step of PIRL's two contrastive terms with each negative source at paper settings: time and peak memory.

Paper settings: batch B = 256, two queries per sample (g(v_It), f(v_I)), d = 128, NCE with a fixed Z, then each
source's update.

    memory_bank      |D| = 1,281,167 entries, N = 32,000 drawn per sample (paper Section 4): today's bank and its
                     chunked scoring (`bank_contrast`), as benchmarks/loss.py measures it
    momentum_queue   K = 65,536 keys shared by all queries (MoCo), keys enqueued after the step
    in_batch         the G = B = 256 keys of the batch (one process), with gradient into the keys

The network is a stand-in that L2-normalises its (B, d) input, so the table measures the sources, not a trunk: a
momentum encoder adds one no-gradient forward of the trunk per step (the memory bank's `momentum_encoder` and the
queue), and in-batch one forward + backward of the key view. Each source runs in its own subprocess; peak memory is
measured as in benchmarks/loss.py (VmHWM on the CPU, max_memory_allocated on CUDA) above the usage once the source
is allocated; time is the median of --repeats steps after one warm-up step.

    .venv/bin/python benchmarks/negative_sources.py                # paper settings
    .venv/bin/python benchmarks/negative_sources.py --size 100000 --negatives 4096 --queue 16384 --batch 64
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from functools import partial

import torch
import torch.nn.functional as F
from loss import peak_bytes, reset_peak
from rich.table import Table
from torch import nn

from pirl_ablate.console import out
from pirl_ablate.losses import nce_loss
from pirl_ablate.losses.negatives import InBatchNegatives, MemoryBankNegatives, MomentumQueue

SOURCES = ("memory_bank", "momentum_queue", "in_batch")


class StandIn(nn.Module):
    """embed_image(x) = normalise(x) for x (B, d): a network of no cost with the PIRLNet surface."""

    def __init__(self, dim: int, device: torch.device):
        super().__init__()
        self.embed_dim = dim
        self.scale = nn.Parameter(torch.ones((), device=device))

    def embed_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.scale * x, dim=1)


def build(args: argparse.Namespace) -> nn.Module:
    if args.source == "memory_bank":
        return MemoryBankNegatives(num_negatives=args.negatives)
    if args.source == "momentum_queue":
        return MomentumQueue(size=args.queue)
    return InBatchNegatives()


def run_source(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    g = torch.Generator(device=device).manual_seed(0)
    net = StandIn(args.dim, device)
    source = build(args)
    source.bind(args.size, net, g)
    negatives = {"memory_bank": args.negatives, "momentum_queue": args.queue, "in_batch": args.batch - 1}
    loss_fn = partial(nce_loss, tau=0.07, log_z=math.log(args.size), dataset_size=args.size)

    def step() -> None:
        index = torch.randint(0, args.size, (args.batch,), generator=g, device=device)
        raw = torch.randn(args.batch, 2, args.dim, generator=g, device=device, requires_grad=True)
        queries = F.normalize(raw, dim=2)  # stand-ins for g(v_It), f(v_I)
        key_images = torch.randn(args.batch, args.dim, generator=g, device=device)
        keys = source.keys(net, key_images, index)
        terms = source.contrast(queries, keys, loss_fn).loss
        total = 0.5 * terms[:, 0].mean() + 0.5 * terms[:, 1].mean()
        source.update(keys, queries[:, 1].detach())
        total.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    base = reset_peak(device)
    times = []
    for _ in range(args.repeats + 1):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    state = sum(t.numel() * t.element_size() for t in source.state_dict().values())
    return {"ms": 1000 * statistics.median(times[1:]), "peak_mb": (peak_bytes(device) - base) / 2**20,
            "state_mb": state / 2**20, "negatives": negatives[args.source]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_281_167)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--negatives", type=int, default=32_000, help="memory bank: N per sample")
    parser.add_argument("--queue", type=int, default=65_536, help="momentum queue: K")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--source", choices=SOURCES, help="internal: run one source in this process")
    args = parser.parse_args()
    if args.source:
        print(json.dumps(run_source(args)))
        return
    rows = {}
    for source in SOURCES:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--source", source]
        rows[source] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    table = Table(title=f"PIRL's two terms, fwd+bwd+update per source: |D|={args.size:,} d={args.dim} "
                        f"B={args.batch} on {args.device} ({torch.get_num_threads()} threads)")
    for col in ("source", "negatives per query", "ms (median)", "peak MB above the state", "state MB"):
        table.add_column(col, justify="right")
    bank = rows["memory_bank"]
    for source, r in rows.items():
        table.add_row(source, f"{r['negatives']:,}", f"{r['ms']:.0f} ({r['ms'] / bank['ms']:.2f}x)",
                      f"{r['peak_mb']:.0f}", f"{r['state_mb']:.0f}")
    out.print(table)


if __name__ == "__main__":
    main()
