"""Procedural images with classes, for tests: each class is an oriented colour grating, each image a random phase,
frequency jitter, position and noise. Seeded, so the same (seed, split) gives the same images."""

from __future__ import annotations

import math

import torch

from pirl_ablate.data.arrays import ArrayDataset
from pirl_ablate.data.registry import register_dataset
from pirl_ablate.errors import DataError

SPLIT_OFFSET = {"train": 0, "test": 1, "unlabeled": 2}


@register_dataset("synthetic")
def synthetic(split: str = "train", subset: int | None = None, subset_seed: int | None = None,
              size: int = 512, num_classes: int = 4, image_size: int = 32, channels: int = 3,
              seed: int = 0) -> ArrayDataset:
    """`size` images uint8 (channels, image_size, image_size) in `num_classes` classes (labels i % num_classes).

    Class c: a grating at angle pi*c/num_classes with its own colour; per image: random phase, +-20% frequency,
    a bright blob at a random place, Gaussian noise (sd 0.1). `subset` takes the first N (`subset_seed` unused:
    every image is already an independent draw).
    """
    if split not in SPLIT_OFFSET:
        raise DataError(f"synthetic: unknown split {split!r} (valid: {', '.join(SPLIT_OFFSET)})")
    n = size if subset is None else subset
    if subset is not None and not 0 < subset <= size:
        raise DataError(f"synthetic {split}: subset={subset} but the split has {size} images")
    gen = torch.Generator().manual_seed(seed * 3 + SPLIT_OFFSET[split])
    labels = torch.arange(n) % num_classes
    angle = labels.double() * math.pi / num_classes
    freq = (2 * math.pi * 3 / image_size) * (0.8 + 0.4 * torch.rand(n, generator=gen, dtype=torch.float64))
    phase = 2 * math.pi * torch.rand(n, generator=gen, dtype=torch.float64)
    yy, xx = torch.meshgrid(torch.arange(image_size, dtype=torch.float64),
                            torch.arange(image_size, dtype=torch.float64), indexing="ij")
    proj = xx * torch.cos(angle)[:, None, None] + yy * torch.sin(angle)[:, None, None]
    grating = 0.5 + 0.5 * torch.sin(freq[:, None, None] * proj + phase[:, None, None])  # (n, H, W)
    colour = torch.rand(num_classes, channels, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    images = grating[:, None] * (0.3 + 0.7 * colour[labels])[:, :, None, None]  # (n, C, H, W)
    centre = torch.rand(n, 2, generator=gen, dtype=torch.float64) * image_size
    blob = torch.exp(-((xx - centre[:, 0, None, None]) ** 2 + (yy - centre[:, 1, None, None]) ** 2)
                     / (2 * (image_size / 8) ** 2))
    images = images + 0.5 * blob[:, None] + 0.1 * torch.randn(images.shape, generator=gen, dtype=torch.float64)
    images = images.clamp(0, 1).mul(255).round().to(torch.uint8)
    return ArrayDataset(images, labels, name="synthetic", split=split, num_classes=num_classes)
