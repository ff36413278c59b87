"""Datasets yielding (image uint8 (C, H, W), index, label), loaders, and the device-side uint8 -> float step."""

from pirl_ablate.data import digits, fashion_mnist, imagefolder, synthetic, torchvision_sets, voc  # noqa: F401  (register)
from pirl_ablate.data.arrays import ArrayDataset, ImageDataset, subset_indices
from pirl_ablate.data.loader import DEFAULT_LOADER, EpochLoader, LoaderOptions, make_loader, to_device_batch
from pirl_ablate.data.registry import DATASETS, build_dataset, register_dataset

__all__ = ["DATASETS", "DEFAULT_LOADER", "ArrayDataset", "EpochLoader", "ImageDataset", "LoaderOptions",
           "build_dataset", "make_loader", "register_dataset", "subset_indices", "to_device_batch"]
