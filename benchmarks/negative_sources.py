"""One PIRL step (`PIRL.forward` + backward) with each negative source at paper settings: time and peak memory.

Paper settings: batch B = 256, embedding d = 128 on a 2,048-wide trunk, lambda 0.5 (both terms), NCE with a fixed Z,
then each source's update, through the method layer (`pirl_ablate.methods.PIRL` with `negatives=`):

    memory_bank      |D| = 1,281,167 entries, N = 32,000 drawn per sample (paper Section 4): today's bank and its
                     chunked scoring (`bank_contrast`), as benchmarks/loss.py measures it
    memory_bank+m    the same, entries written by a momentum encoder of f
    momentum_queue   K = 65,536 keys shared by all queries (MoCo), from a momentum encoder of f
    in_batch         the other G - 1 = 255 keys of the batch (one process), with gradient into the keys

The trunk is a stand-in (`StandIn`: pool the image, one linear map to 2,048 channels) and the views are tiny images
(--image-size, 8 px), so the table measures the sources, the heads and the loss, not a ResNet-50: on the real trunk a
momentum encoder adds one no-gradient trunk forward per step (queue, memory_bank+m) and in-batch one forward +
backward of the second view. Each source runs in its own subprocess; peak memory is measured as in
benchmarks/loss.py (VmHWM on the CPU, max_memory_allocated on CUDA) above the usage once the method is built; time
is the median of --repeats steps after one warm-up step.

    python benchmarks/negative_sources.py                # paper settings
    python benchmarks/negative_sources.py --size 100000 --negatives 4096 --queue 16384 --batch 64
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch
from loss import peak_bytes, reset_peak
from rich.table import Table
from timing import median_ms
from torch import Tensor, nn

from pirl_ablate.console import out
from pirl_ablate.losses import MemoryBank, build_negatives
from pirl_ablate.methods import PIRL
from pirl_ablate.transforms import build_transform

SOURCES = {
    "memory_bank": ("memory_bank", {}),
    "memory_bank+m": ("memory_bank", {"momentum_encoder": True}),
    "momentum_queue": ("momentum_queue", {}),
    "in_batch": ("in_batch", {}),
}


class StandIn(nn.Module):
    """The trunk's surface (`feature_dim`, `forward(x, layers)["res5"]`) at almost no cost: res5 = W pool(x)."""

    feature_dim = 2048

    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, self.feature_dim, 1)

    def forward(self, x: Tensor, layers) -> dict[str, Tensor]:
        return {"res5": self.proj(x.mean(dim=(2, 3), keepdim=True))}


def run_source(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    g = torch.Generator(device=device).manual_seed(0)
    name, kwargs = SOURCES[args.source]
    if name == "momentum_queue":
        kwargs = {"size": args.queue}
    source = build_negatives(name, **kwargs)
    bank = MemoryBank(args.size, args.dim, g, device=device) if source.uses_memory_bank else None
    method = PIRL(StandIn().to(device), bank, build_transform("rotation"),
                  build_transform("image", size=args.image_size), generator=g, negatives=source,
                  num_negatives=args.negatives, embed_dim=args.dim).to(device)
    views = torch.Generator(device=device).manual_seed(1)

    def step() -> None:
        index = torch.randint(0, args.size, (args.batch,), generator=g, device=device)
        x = torch.rand(args.batch, 3, args.image_size, args.image_size, generator=g, device=device)
        loss, _ = method(x, index, index, views)
        loss.backward()

    base = reset_peak(device)
    ms = median_ms(step, args.repeats, device)
    state = sum(t.numel() * t.element_size() for k, t in method.state_dict().items()
                if k.startswith(("memory_bank.", "negatives.")))
    negatives = {"memory_bank": args.negatives, "momentum_queue": args.queue, "in_batch": args.batch - 1}[name]
    return {"ms": ms, "peak_mb": (peak_bytes(device) - base) / 2**20,
            "state_mb": state / 2**20, "negatives": negatives, "shared": name != "memory_bank"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_281_167, help="|D| (ImageNet's training images)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--negatives", type=int, default=32_000, help="memory bank: N per sample")
    parser.add_argument("--queue", type=int, default=65_536, help="momentum queue: K")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--source", choices=list(SOURCES), help="internal: run one source in this process")
    args = parser.parse_args()
    if args.source:
        print(json.dumps(run_source(args)))
        return
    rows = {}
    for source in SOURCES:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--source", source]
        rows[source] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    table = Table(title=f"PIRL.forward + backward per negative source (stand-in trunk): |D|={args.size:,} "
                        f"d={args.dim} B={args.batch} on {args.device} ({torch.get_num_threads()} threads)")
    for col in ("source", "negatives per query", "ms (median)", "peak MB above the method", "source state MB"):
        table.add_column(col, justify="right")
    bank = rows["memory_bank"]
    for source, r in rows.items():
        table.add_row(source, f"{r['negatives']:,} {'shared' if r['shared'] else 'drawn per sample'}",
                      f"{r['ms']:.0f} ({r['ms'] / bank['ms']:.2f}x)", f"{r['peak_mb']:.0f}", f"{r['state_mb']:.0f}")
    out.print(table)


if __name__ == "__main__":
    main()
