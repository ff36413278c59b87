"""Fashion-MNIST (Xiao et al. 2017): 60,000 train + 10,000 test grey 28x28 images, 10 classes, from IDX files.

The files are looked up in this order (the first folder holding all four wins):

1. `root` bound in gin (`fashion_mnist.root = "/data/fmnist"`), else `$PIRL_ABLATE_DATA` (the folder itself or its
   `fashion-mnist/` subfolder);
2. Debian's `dataset-fashion-mnist` package: /usr/share/datasets/fashion-mnist;
3. torchvision's download into the user's cache (~/.cache/pirl_ablate/FashionMNIST/raw), only with `download=True`.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pirl_ablate.data.arrays import ArrayDataset, take
from pirl_ablate.data.registry import register_dataset
from pirl_ablate.errors import DataError

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_IDX_DTYPE = {0x08: np.uint8}


def cache_dir() -> Path:
    """torchvision's download target: <user cache>/pirl_ablate (its FashionMNIST/raw subfolder holds the files)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pirl_ablate"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (optionally gzipped) as an array: magic 0x0000 <dtype> <ndim>, big-endian dims, then the data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPE:
        raise DataError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=_IDX_DTYPE[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {data.size} values (truncated file?)")
    return data.reshape(dims)


def _holds_files(folder: Path) -> bool:
    return all((folder / f).is_file() for pair in FILES.values() for f in pair)


def find_files(root: str | os.PathLike | None = None, download: bool = False) -> Path:
    """The folder holding the four IDX files (lookup order in the module docstring)."""
    first = root or os.environ.get("PIRL_ABLATE_DATA")
    tried = []
    if first:
        for folder in (Path(first), Path(first) / "fashion-mnist"):
            if _holds_files(folder):
                return folder
        tried.append(f"{first} (gin fashion_mnist.root / PIRL_ABLATE_DATA)")
    else:
        tried.append("fashion_mnist.root / PIRL_ABLATE_DATA (not set)")
    if _holds_files(DEBIAN_DIR):
        return DEBIAN_DIR
    tried.append(f"{DEBIAN_DIR} (apt-get install dataset-fashion-mnist)")
    cached = cache_dir() / "FashionMNIST" / "raw"
    if _holds_files(cached):
        return cached
    if download:
        from torchvision.datasets import FashionMNIST

        try:
            FashionMNIST(str(cache_dir()), download=True)
        except (OSError, RuntimeError) as e:
            raise DataError(f"Fashion-MNIST download into {cached} failed: {e}") from None
        return cached
    tried.append(f"{cached} (torchvision download: bind fashion_mnist.download = True)")
    raise DataError("Fashion-MNIST IDX files not found; looked in: " + "; ".join(tried))


@register_dataset("fashion_mnist")
def fashion_mnist(split: str = "train", subset: int | None = None, subset_seed: int | None = None,
                  root: str | None = None, download: bool = False) -> ArrayDataset:
    """Fashion-MNIST, grey 1x28x28 uint8; `subset` first-N (or seeded random with `subset_seed`) images."""
    if split not in FILES:
        raise DataError(f"fashion_mnist: unknown split {split!r} (valid: train, test)")
    folder = find_files(root, download)
    image_file, label_file = FILES[split]
    images = torch.from_numpy(read_idx(folder / image_file).copy()).unsqueeze(1)
    labels: Tensor = torch.from_numpy(read_idx(folder / label_file).astype(np.int64))
    images, labels = take(images, labels, subset, subset_seed, what=f"fashion_mnist {split}")
    return ArrayDataset(images, labels, name="fashion_mnist", split=split, num_classes=len(CLASSES))
