"""One forward + backward of the PIRL loss against a paper-scale memory bank: ours next to the straightforward form.

Paper scale (Section 4): |D| = 1,281,167 entries of d = 128, N = 32,000 negatives per sample, batch 256; two query
terms (g(v_It) and f(v_I)) per sample, NCE with a fixed Z, then the bank update.

    straightforward: negatives = bank[idx] as one (B, N, d) tensor (4.2 GB), scores by bmm, autograd keeps it.
    ours:            pirl_ablate.losses.pirl_loss, what PIRL trains with: `bank_contrast` walks chunks of a few
                     samples, loss and gradient per chunk, and also returns the logged parts (similarities, mean
                     exp score).

Each variant runs in its own subprocess; peak memory is the rise of the process's peak RSS (VmHWM, reset through
/proc/self/clear_refs once the bank exists) over its RSS at that point (on CUDA: torch.cuda.max_memory_allocated
over memory_allocated). Time is
the median of --repeats steps after one warm-up step. Run it once; it needs about 6 GB free for the baseline.

The same step per source of negatives (memory bank, the bank written by a momentum encoder, momentum queue,
in-batch), through `PIRL.forward` at these settings: benchmarks/negative_sources.py.

    .venv/bin/python benchmarks/loss.py                      # paper scale
    .venv/bin/python benchmarks/loss.py --size 100000 --negatives 4096 --batch 64
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from functools import partial
from pathlib import Path

import torch
from rich.table import Table
from timing import median_ms

from pirl_ablate.console import out
from pirl_ablate.losses import MemoryBank, nce_loss, pirl_loss

VARIANTS = ("straightforward", "ours")


def straightforward_terms(queries, bank, positive, negatives, loss_fn):
    """(B, K) losses through a materialised (B, N, d) tensor of negatives."""
    neg = bank[negatives]  # (B, N, d)
    s_pos = (queries * bank[positive].unsqueeze(1)).sum(-1)  # (B, K)
    s_neg = torch.bmm(queries, neg.transpose(1, 2))  # (B, K, N)
    return loss_fn(s_pos, s_neg)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(device: torch.device) -> int:
    """Forget the peak so far (the bank's initialisation temporaries) and return the current usage in bytes."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM (peak RSS) to the current RSS
    return _status_kb("VmRSS") * 1024


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return _status_kb("VmHWM") * 1024


def run_variant(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    g = torch.Generator(device=device).manual_seed(0)
    bank = MemoryBank(args.size, args.dim, g, device=device)
    loss_fn = partial(nce_loss, tau=0.07, log_z=math.log(args.size), dataset_size=args.size)

    def step() -> None:
        index = torch.randint(0, args.size, (args.batch,), generator=g, device=device)
        raw = torch.randn(args.batch, 2, args.dim, generator=g, device=device, requires_grad=True)
        queries = torch.nn.functional.normalize(raw, dim=2)  # stand-ins for g(v_It), f(v_I)
        negatives = bank.sample_negatives(index, args.negatives, g)
        if args.variant == "ours":
            total, _ = pirl_loss(queries[:, 1], queries[:, 0], bank.bank, index, negatives, 0.5, loss_fn, 0.07)
        else:
            terms = straightforward_terms(queries, bank.bank, index, negatives, loss_fn)
            total = 0.5 * terms[:, 0].mean() + 0.5 * terms[:, 1].mean()
        bank.update(index, queries[:, 1].detach())
        total.backward()

    base = reset_peak(device)
    ms = median_ms(step, args.repeats, device)
    return {"ms": ms, "peak_mb": (peak_bytes(device) - base) / 2**20,
            "bank_mb": bank.bank.numel() * bank.bank.element_size() / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_281_167)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--negatives", type=int, default=32_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variant", choices=VARIANTS, help="internal: run one variant in this process")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    rows = {}
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--variant", variant]
        rows[variant] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    table = Table(title=f"PIRL loss fwd+bwd+update: |D|={args.size:,} d={args.dim} N={args.negatives:,} "
                        f"B={args.batch} on {args.device} ({torch.get_num_threads()} threads)")
    for col in ("variant", "ms (median)", "peak MB above the bank", "bank MB"):
        table.add_column(col, justify="right")
    for variant, r in rows.items():
        table.add_row(variant, f"{r['ms']:.0f}", f"{r['peak_mb']:.0f}", f"{r['bank_mb']:.0f}")
    base, ours = rows["straightforward"], rows["ours"]
    table.add_row("ours / straightforward", f"{ours['ms'] / base['ms']:.2f}x",
                  f"{ours['peak_mb'] / base['peak_mb']:.3f}x", "")
    out.print(table)


if __name__ == "__main__":
    main()
