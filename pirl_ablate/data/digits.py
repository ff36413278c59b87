"""scikit-learn's bundled 8x8 digits (1,797 images, 10 classes): offline, for the quickest demos and tests.

Too easy to tell methods apart (a random-init ResNet-18 already reaches ~97% linear), so not the default.
Split: the first 1,497 images are "train", the last 300 "test" (the bundle has no official split).
"""

from __future__ import annotations

import torch

from pirl_ablate.data.arrays import ArrayDataset, take
from pirl_ablate.data.registry import register_dataset
from pirl_ablate.errors import DataError

TEST_SIZE = 300


@register_dataset("digits")
def digits(split: str = "train", subset: int | None = None, subset_seed: int | None = None) -> ArrayDataset:
    """sklearn digits as grey 1x8x8 uint8 (values 0..16 scaled to 0..255)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).mul(255.0 / 16.0).round().to(torch.uint8).unsqueeze(1)
    labels = torch.from_numpy(bunch.target).long()
    if split == "train":
        images, labels = images[:-TEST_SIZE], labels[:-TEST_SIZE]
    elif split == "test":
        images, labels = images[-TEST_SIZE:], labels[-TEST_SIZE:]
    else:
        raise DataError(f"digits: unknown split {split!r} (valid: train, test)")
    images, labels = take(images.contiguous(), labels, subset, subset_seed, what=f"digits {split}")
    return ArrayDataset(images, labels, name="digits", split=split, num_classes=10)
