"""Datasets held in memory as one uint8 tensor, and the subset rule every dataset shares.

Every dataset yields `(image, index, label)`: image uint8 (C, H, W), index int in [0, len) (the memory-bank
address), label int (-1 when the dataset has no labels).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from pirl_ablate.errors import DataError

Item = tuple[Tensor, int, int]


class ImageDataset(Dataset):
    """Base class: `num_classes` (None when unlabeled), `labels` (N,) long (-1 = none), `name`, `split`."""

    name: str
    split: str
    num_classes: int | None
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Item:
        raise NotImplementedError


class ArrayDataset(ImageDataset):
    """Images held in memory: `images` uint8 (N, C, H, W), `labels` long (N,).

    The loader indexes `images` with whole batches of indices instead of going through worker processes.
    """

    def __init__(self, images: Tensor, labels: Tensor, *, name: str, split: str, num_classes: int | None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.long()
        self.name, self.split, self.num_classes = name, split, num_classes

    def __getitem__(self, index: int) -> Item:
        return self.images[index], index, int(self.labels[index])


def subset_indices(total: int, subset: int | None, subset_seed: int | None, *, what: str) -> Tensor | None:
    """Which of `total` items a run uses: None (all), the first `subset`, or a seeded random `subset`.

    `subset` larger than `total` raises DataError naming both numbers. The returned indices are sorted, so item i
    of the subset is always the same image for a given (subset, subset_seed).
    """
    if subset is None:
        return None
    if subset <= 0 or subset > total:
        raise DataError(f"{what}: subset={subset} but the split has {total} images (use 1..{total} or None)")
    if subset_seed is None:
        return torch.arange(subset)
    gen = torch.Generator().manual_seed(subset_seed)
    return torch.randperm(total, generator=gen)[:subset].sort().values


def take(images: Tensor, labels: Tensor, subset: int | None, subset_seed: int | None, *, what: str
         ) -> tuple[Tensor, Tensor]:
    """`images`, `labels` restricted to `subset_indices(...)`."""
    idx = subset_indices(len(labels), subset, subset_seed, what=what)
    if idx is None:
        return images, labels
    return images[idx].contiguous(), labels[idx]
