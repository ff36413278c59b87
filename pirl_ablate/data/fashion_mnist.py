"""Fashion-MNIST (Xiao et al. 2017): 60,000 train + 10,000 test grey 28x28 images, 10 classes, from IDX files.

The files are looked up in this order (the first folder holding all four wins):

1. `root` bound in gin (`fashion_mnist.root = "/data/fmnist"`), else `$PIRL_ABLATE_DATA` (the folder itself or its
   `fashion-mnist/` subfolder);
2. Debian's `dataset-fashion-mnist` package: /usr/share/datasets/fashion-mnist (`$PIRL_ABLATE_DEBIAN_DATA` names
   another folder, e.g. one that does not exist to test a machine without the package);
3. the user cache (`pirl_ablate.cache.cache_dir()`/FashionMNIST/raw), where
4. torchvision's download (its mirror and MD5 checksums; `$PIRL_ABLATE_FASHION_MNIST_MIRROR` names another mirror)
   puts them, unless `download=False`. Offline it fails within `DOWNLOAD_TIMEOUT_S` and keeps nothing half-written.

`ensure_available` is a sweep's pre-flight: as root on Debian with apt-get it installs the package when all of the
above failed (announced in one line; `PIRL_ABLATE_APT=0` turns that off), and otherwise stops with one line that
names both remedies, before anything is submitted.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import socket
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pirl_ablate.cache import cache_dir
from pirl_ablate.console import info
from pirl_ablate.data.arrays import ArrayDataset, take
from pirl_ablate.data.registry import register_dataset
from pirl_ablate.errors import DataError

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_TIMEOUT_S = 30  # per network operation: an unreachable mirror fails in seconds, not at the TCP timeout
_IDX_DTYPE = {0x08: np.uint8}


def debian_dir() -> Path:
    """Where Debian's package puts the files ($PIRL_ABLATE_DEBIAN_DATA overrides it)."""
    return Path(os.environ.get("PIRL_ABLATE_DEBIAN_DATA") or DEBIAN_DIR)


def cached_dir() -> Path:
    """The download target: <user cache>/FashionMNIST/raw (torchvision's layout)."""
    return cache_dir() / "FashionMNIST" / "raw"


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


def _local(root: str | os.PathLike | None) -> tuple[Path | None, list[str]]:
    """The first local folder holding the four files (steps 1-3), and what was tried."""
    first = root or os.environ.get("PIRL_ABLATE_DATA")
    tried = []
    if first:
        for folder in (Path(first), Path(first) / "fashion-mnist"):
            if _holds_files(folder):
                return folder, tried
        tried.append(f"{first} (fashion_mnist.root / PIRL_ABLATE_DATA)")
    for folder in (debian_dir(), cached_dir()):
        if _holds_files(folder):
            return folder, tried
        tried.append(str(folder))
    return None, tried


def _mirror() -> str:
    from torchvision.datasets import FashionMNIST

    return os.environ.get("PIRL_ABLATE_FASHION_MNIST_MIRROR") or FashionMNIST.mirrors[0]


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def download(target: Path | None = None) -> Path:
    """Download the four files with torchvision (`download_url`: its MD5 checksums) into `target` (default: the
    user cache). They are fetched into a temporary folder beside it and moved in only once all four are verified,
    so a failed or corrupt download leaves nothing that a later lookup could take for the data."""
    from torchvision.datasets import FashionMNIST
    from torchvision.datasets.utils import download_url

    target = target or cached_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    mirror = _mirror()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        for name, md5 in FashionMNIST.resources:
            try:
                with _socket_timeout(DOWNLOAD_TIMEOUT_S), open(os.devnull, "w") as quiet, \
                        contextlib.redirect_stderr(quiet):  # torchvision's tqdm bar
                    download_url(mirror.rstrip("/") + "/" + name, tmp, filename=name, md5=md5, max_redirect_hops=3)
            except (OSError, RuntimeError) as e:
                reason = " ".join(str(e).split()) or type(e).__name__
                if isinstance(e, RuntimeError) and "corrupted" in reason:
                    reason = f"{name}: MD5 checksum mismatch (expected {md5})"
                raise DataError(f"download from {mirror} failed: {reason}") from None
        target.mkdir(parents=True, exist_ok=True)
        for name, _ in FashionMNIST.resources:
            os.replace(Path(tmp) / name, target / name)
    return target


def find_files(root: str | os.PathLike | None = None, download_missing: bool = True) -> Path:
    """The folder holding the four IDX files (lookup order in the module docstring)."""
    folder, tried = _local(root)
    if folder is not None:
        return folder
    if not download_missing:
        raise DataError(_not_found(tried, "the download is off (fashion_mnist.download = False)"))
    try:
        return download()
    except DataError as e:
        raise DataError(_not_found(tried, str(e))) from None


def _not_found(tried: list[str], why: str) -> str:
    return (f"Fashion-MNIST IDX files not found (looked in {', '.join(tried)}) and {why}. Remedies: "
            f"`sudo apt-get install {DEBIAN_PACKAGE}` (Debian/Ubuntu), or put the four files "
            f"({', '.join(f for pair in FILES.values() for f in pair)}) in a folder and "
            "`export PIRL_ABLATE_DATA=<that folder>`")


def ensure_available(root: str | os.PathLike | None = None, download_missing: bool = True) -> Path:
    """`find_files`, and when it fails on a Debian machine where this process is root with apt-get (a fresh CI
    machine), install Debian's package and look again. Raises `find_files`' DataError when nothing works."""
    try:
        return find_files(root, download_missing)
    except DataError as e:
        failure = e
    if _can_apt():
        info(f"Fashion-MNIST not found: installing Debian's {DEBIAN_PACKAGE} (apt-get, as root)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", DEBIAN_PACKAGE]):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(cmd, env=env, capture_output=True, timeout=900, check=False)
        if _holds_files(debian_dir()):
            return debian_dir()
    raise failure


def _can_apt() -> bool:
    return (os.environ.get("PIRL_ABLATE_APT", "1") != "0" and hasattr(os, "geteuid") and os.geteuid() == 0
            and Path("/etc/debian_version").is_file() and shutil.which("apt-get") is not None)


@register_dataset("fashion_mnist")
def fashion_mnist(split: str = "train", subset: int | None = None, subset_seed: int | None = None,
                  root: str | None = None, download: bool = True) -> ArrayDataset:
    """Fashion-MNIST, grey 1x28x28 uint8; `subset` first-N (or seeded random with `subset_seed`) images; `download`
    fetches the files into the user cache when no local copy exists (module docstring)."""
    if split not in FILES:
        raise DataError(f"fashion_mnist: unknown split {split!r} (valid: train, test)")
    folder = find_files(root, download)
    image_file, label_file = FILES[split]
    images = torch.from_numpy(read_idx(folder / image_file).copy()).unsqueeze(1)
    labels: Tensor = torch.from_numpy(read_idx(folder / label_file).astype(np.int64))
    images, labels = take(images, labels, subset, subset_seed, what=f"fashion_mnist {split}")
    return ArrayDataset(images, labels, name="fashion_mnist", split=split, num_classes=len(CLASSES))
