"""Images/second of each built-in transform on a batch of 256x256 inputs, next to a per-sample PIL jigsaw.

    .venv/bin/python benchmarks/transforms.py [--batch 256] [--repeats 5] [--threads 1,2]

The baseline is the same jigsaw recipe done the usual way: per sample in PIL (RandomResizedCrop 255 of scale
0.6-1, 3x3 cells of 85 px, a 64 px patch at a uniform offset per cell, per-patch ColorJitter(0.4, 0.4, 0.4, 0.2),
RandomGrayscale(0.2), horizontal flip, shuffled into a random permutation), fed through a torch DataLoader with
os.cpu_count() workers (a timed pass is two batches per worker), from decoded uint8 PIL images. The batched
transforms start from a float (B, 3, 256, 256) batch on the device, once per intra-op thread count in --threads: on a
busy machine, torch's OpenMP threads wait for each other at every op and one thread can beat two. Each row is the
median of `--repeats` timed passes after one warm-up pass.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from PIL import Image
from timing import median_ms
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from pirl_ablate.console import out
from pirl_ablate.transforms import build_transform


class PILJigsaw(Dataset):
    """Per-sample PIL jigsaw tiles of the PIRL recipe: (9, 3, 64, 64) float tensor and the permutation."""

    def __init__(self, images: list[Image.Image], length: int, crop: int = 255, grid: int = 3, patch: int = 64):
        self.images, self.length = images, length
        self.grid, self.cell, self.patch = grid, crop // grid, patch
        self.crop = T.RandomResizedCrop(crop, scale=(0.6, 1.0))
        self.tile = T.Compose([T.ColorJitter(0.4, 0.4, 0.4, 0.2), T.RandomGrayscale(0.2),
                               T.RandomHorizontalFlip(), T.ToTensor()])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.crop(self.images[i % len(self.images)])
        perm = torch.randperm(self.grid * self.grid)
        tiles = []
        for cell in perm.tolist():
            r, c = divmod(cell, self.grid)
            dx, dy = np.random.randint(0, self.cell - self.patch + 1, size=2)
            x, y = c * self.cell + dx, r * self.cell + dy
            tiles.append(self.tile(image.crop((x, y, x + self.patch, y + self.patch))))
        return torch.stack(tiles), perm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", default=f"1,{torch.get_num_threads()}",
                   help="comma-separated torch.set_num_threads values for the batched rows (default: 1 and torch's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    generator = torch.Generator(device=device).manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size, generator=generator, device=device)
    rows = []

    for threads in sorted({int(t) for t in args.threads.split(",")}):
        torch.set_num_threads(threads)
        for name in ("jigsaw", "rotation", "image", "rotation+jigsaw"):
            transform = build_transform(name)

            def run(transform=transform) -> None:
                transform(images, generator)

            rows.append((f"{name} (batched, {device.type}, {threads} thread{'s' * (threads > 1)})",
                         1000 * args.batch / median_ms(run, args.repeats, device)))

    rng = np.random.default_rng(0)
    pil = [Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
           for _ in range(args.batch)]
    workers = os.cpu_count() or 1
    # each worker builds whole batches, so one pass is two batches per worker
    dataset = PILJigsaw(pil, length=2 * workers * args.batch)
    loader = DataLoader(dataset, batch_size=args.batch, num_workers=workers, persistent_workers=True)
    baseline = 1000 * len(dataset) / median_ms(lambda: sum(1 for _ in loader), args.repeats)
    rows.append((f"jigsaw (per-sample PIL, DataLoader, {workers} workers)", baseline))

    out.print(f"batch {args.batch} of {args.size}x{args.size} images, median of {args.repeats}")
    out.print(f"{'transform':<58} {'images/s':>9} {'vs PIL':>7}")
    for name, rate in rows:
        out.print(f"{name:<58} {rate:9.0f} {rate / baseline:6.2f}x")


if __name__ == "__main__":
    main()
