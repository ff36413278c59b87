"""CIFAR-10 and STL-10 in their published formats; torchvision downloads them, only when asked.

`root` defaults to `$PIRL_ABLATE_DATA`, else the user cache (~/.cache/pirl_ablate). The files are read here (not
through torchvision's classes, which insist on checksums of the full archives), so any folder in the published
layout works:

- CIFAR-10: `root/cifar-10-batches-py/{data_batch_1..5,test_batch}`, python pickles of
  {b"data": uint8 (N, 3072) channel-major 32x32, b"labels": [int]}.
- STL-10: `root/stl10_binary/{train,test,unlabeled}_X.bin` (uint8 (N, 3, 96, 96), column-major per channel) and
  `{train,test}_y.bin` (labels 1..10).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from pirl_ablate.cache import cache_dir
from pirl_ablate.data.arrays import ArrayDataset, take
from pirl_ablate.data.registry import register_dataset
from pirl_ablate.errors import DataError

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
STL_FOLDER = "stl10_binary"


def _root(root: str | None) -> Path:
    return Path(root or os.environ.get("PIRL_ABLATE_DATA") or cache_dir())


def _download(cls_name: str, root: Path, split: str) -> None:
    import torchvision.datasets as tvd

    kw = {"train": split == "train"} if cls_name == "CIFAR10" else {"split": split}
    try:
        getattr(tvd, cls_name)(str(root), download=True, **kw)
    except (OSError, RuntimeError) as e:
        raise DataError(f"{cls_name} download into {root} failed: {e}") from None


class _ArraysOnly(pickle.Unpickler):
    """Unpickles containers and numpy arrays only: a planted payload in a dataset folder cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> type:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (a CIFAR batch holds arrays only)")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: images uint8 (N, 3, 32, 32), labels int64 (N,)."""
    try:
        with open(path, "rb") as fh:
            batch = _ArraysOnly(fh, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    return data, labels


@register_dataset("cifar10")
def cifar10(split: str = "train", subset: int | None = None, subset_seed: int | None = None,
            root: str | None = None, download: bool = False) -> ArrayDataset:
    """CIFAR-10, RGB 3x32x32 uint8, 50,000 train / 10,000 test, 10 classes."""
    if split not in CIFAR_FILES:
        raise DataError(f"cifar10: unknown split {split!r} (valid: train, test)")
    base = _root(root)
    folder = base / CIFAR_FOLDER
    missing = [f for f in CIFAR_FILES[split] if not (folder / f).is_file()]
    if missing and download:
        _download("CIFAR10", base, split)
    elif missing:
        raise DataError(f"cifar10: {folder / missing[0]} not found (bind cifar10.root to the folder holding "
                        f"{CIFAR_FOLDER}/, or cifar10.download = True when online)")
    parts = [read_cifar_batch(folder / f) for f in CIFAR_FILES[split]]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    images, labels = take(images, labels, subset, subset_seed, what=f"cifar10 {split}")
    return ArrayDataset(images, labels, name="cifar10", split=split, num_classes=10)


@register_dataset("stl10")
def stl10(split: str = "train", subset: int | None = None, subset_seed: int | None = None,
          root: str | None = None, download: bool = False) -> ArrayDataset:
    """STL-10, RGB 3x96x96 uint8: train 5,000 / test 8,000 labelled (10 classes), unlabeled 100,000."""
    if split not in ("train", "test", "unlabeled"):
        raise DataError(f"stl10: unknown split {split!r} (valid: train, test, unlabeled)")
    base = _root(root)
    x_file = base / STL_FOLDER / f"{split}_X.bin"
    if not x_file.is_file() and download:
        _download("STL10", base, split)
    elif not x_file.is_file():
        raise DataError(f"stl10: {x_file} not found (bind stl10.root to the folder holding {STL_FOLDER}/, "
                        "or stl10.download = True when online)")
    raw = np.fromfile(x_file, dtype=np.uint8)
    if raw.size % (3 * 96 * 96):
        raise DataError(f"{x_file}: {raw.size} bytes is not a whole number of 3x96x96 images")
    images = torch.from_numpy(raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2).copy())
    if split == "unlabeled":
        labels = torch.full((len(images),), -1, dtype=torch.long)
    else:
        labels = torch.from_numpy(np.fromfile(base / STL_FOLDER / f"{split}_y.bin", dtype=np.uint8)).long() - 1
    images, labels = take(images, labels, subset, subset_seed, what=f"stl10 {split}")
    return ArrayDataset(images, labels, name="stl10", split=split,
                        num_classes=None if split == "unlabeled" else 10)
