"""Is CPU bf16 autocast training reproducible here? The same ResNet-18 step, repeated: forward under bf16 autocast,
backward, the sum of |gradient| over all parameters; next to the same steps in fp32. Prints one table.

    python benchmarks/cpu_bf16.py [--repeats 8]

On this project's 2-core AMD EPYC (AVX512-BF16), torch 2.14.1+cu130, 2026-12-05: fp32 gives one gradient sum every
time; bf16 gives a different sum from run to run and sometimes 1e16-1e18 (garbage), which is why a bf16 tiny run
on this CPU ends in a NaN loss at a random step and `benchmarks/gpu_check.py` runs its CPU tiny run in fp32.
"""

from __future__ import annotations

import argparse

import torch
import torchvision
from rich.table import Table

from pirl_ablate.console import out


def gradient_sums(precision: str, repeats: int) -> list[float]:
    """|gradient| summed over a torchvision ResNet-18's parameters after one step on fixed inputs, `repeats` times."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18().train()
    x = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    sums = []
    for _ in range(repeats):
        net.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = net(x).float().pow(2).mean()
        loss.backward()
        sums.append(sum(p.grad.double().abs().sum().item() for p in net.parameters()))
    return sums


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    table = Table(title=f"ResNet-18 step on the CPU, torch {torch.__version__}, "
                        f"{torch.backends.cpu.get_cpu_capability()}")
    for column in ("precision", "distinct gradient sums", "min", "max"):
        table.add_column(column)
    for precision in ("fp32", "bf16"):
        sums = gradient_sums(precision, args.repeats)
        table.add_row(precision, f"{len(set(sums))} of {len(sums)}", f"{min(sums):.6g}", f"{max(sums):.6g}")
    out.print(table)


if __name__ == "__main__":
    main()
