"""Any folder of images: class folders (`root/<class>/*.jpg`, e.g. ImageNet) or a flat folder (no labels).

If `root` holds split folders (`train/`, and `val/` or `test/` for the test split) those are used, and every split
must hold the training split's class folders (labels are indices into that one sorted list). Worker processes
decode each file (torchvision's JPEG decoder, PIL for large JPEGs and other formats) at its own aspect ratio, its
longer side brought down to at most `max_side` pixels (never up), as uint8; the loader pads a batch to a common
canvas and hands over each image's size with it (an `ImageBatch`). With `decode_on = "device"` workers only read
the JPEG files and `to_device_batch` decodes the batch on the training device into the same `ImageBatch`. All
random augmentation happens later, batched, on the device: the views are cropped from the whole image, as
torchvision's RandomResizedCrop crops the original (paper Section 4.1, VISSL), and evaluation takes each image's
centre square.

A corrupt or unreadable file is reported with its path; `on_error="stop"` raises DataError, `"skip"` drops the
item from its batch (`collate_skipping`) and goes on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg

from pirl_ablate.console import console
from pirl_ablate.data.arrays import ImageDataset, Item, subset_indices
from pirl_ablate.data.registry import register_dataset
from pirl_ablate.errors import DataError

DECODE_ON = ("worker", "device")
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
SPLIT_FOLDERS = {"train": ("train",), "test": ("val", "test"), "unlabeled": ("unlabeled",)}
ON_ERROR = ("stop", "skip")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def decode_bounded(path: Path, max_side: int) -> Tensor:
    """The image at `path` as uint8 (3, h, w) in channels-last strides (as decoded; the batch's canvas keeps them):
    RGB at its own aspect ratio, scaled (bilinear, antialiased) so that max(h, w) <= max_side, never up.

    A JPEG under twice the bound is decoded by `torchvision.io.decode_jpeg` and resized by torch (about 2x PIL's
    decode + resize per core on this project's machine); a larger JPEG by PIL in draft mode (decoded at 1/2, 1/4 or
    1/8 of its size where that still covers the target: the DCT skips the detail the resize would drop); other
    formats by PIL.
    """
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        scale = min(1.0, max_side / max(w, h))
        target = (max(1, round(h * scale)), max(1, round(w * scale)))
        if im.format == "JPEG" and im.mode in ("RGB", "L") and max(w, h) < 2 * max_side:
            data = torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)
            image = decode_jpeg(data, mode=ImageReadMode.RGB)
        else:
            im.draft("RGB", target[::-1])
            image = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
    if tuple(image.shape[-2:]) != target:
        image = F.interpolate(image[None], size=target, mode="bilinear", antialias=True, align_corners=False)[0]
    return image


@dataclass
class EncodedJpegs:
    """JPEG files' bytes (each a 1-D uint8 tensor) for `to_device_batch` to decode on the training device
    (`imagefolder.decode_on = "device"`), whose longer sides it brings down to `max_side`. A batch of them is one
    of these (`collate_skipping`)."""

    data: list[Tensor]
    max_side: int

    def __len__(self) -> int:
        return len(self.data)


def read_jpeg(path: Path, max_side: int) -> EncodedJpegs:
    """The bytes of the JPEG at `path`, its header checked by PIL (a file that is no JPEG raises here, in the
    worker, where its path is known)."""
    from PIL import Image

    with Image.open(path) as im:
        if im.format != "JPEG" or im.mode not in ("RGB", "L"):
            raise ValueError(f"a {im.format} {im.mode} image, and imagefolder.decode_on = 'device' decodes RGB or "
                             "grey JPEGs only; bind imagefolder.decode_on = 'worker' for this folder")
    return EncodedJpegs([torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)], max_side)


def decode(path: Path, size: int) -> Tensor:
    """The image at `path` as uint8 (3, size, size): RGB, shorter side resized to `size`, centre crop."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = size / min(w, h)
        im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        im = im.crop((left, top, left + size, top + size))
        return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


class ImageFolder(ImageDataset):
    """Files listed once at construction (sorted, so indices are stable); decoded lazily in loader workers."""

    def __init__(self, files: list[Path], labels: Tensor, classes: list[str] | None, *, split: str,
                 max_side: int, decode_on: str, on_error: str):
        self.files, self.labels, self.classes = files, labels, classes
        self.name, self.split = "imagefolder", split
        self.num_classes = len(classes) if classes else None
        self.max_side, self.decode_on, self.on_error = max_side, decode_on, on_error

    def __getitem__(self, index: int) -> Item | tuple[EncodedJpegs, int, int] | None:
        path = self.files[index]
        try:
            image = read_jpeg(path, self.max_side) if self.decode_on == "device" else \
                decode_bounded(path, self.max_side)
        except Exception as e:  # PIL raises many types (OSError, SyntaxError, DecompressionBombError, ...)
            message = f"{path}: cannot decode image ({type(e).__name__}: {e})"
            if self.on_error == "stop":
                raise DataError(message + "; bind imagefolder.on_error = 'skip' to drop such files") from None
            console.print(f"skipping {message}")
            return None
        return image, index, int(self.labels[index])


def _check_same_classes(base: Path, folder: Path, classes: list[str]) -> None:
    """Labels are class indices in sorted folder order, so every split must hold the same class folders as the
    training split (an extra or missing one, even empty, would shift every label after it): DataError otherwise."""
    train = base / SPLIT_FOLDERS["train"][0]
    if folder == train or not train.is_dir():
        return
    reference = sorted(d.name for d in train.iterdir() if d.is_dir())
    if classes != reference:
        extra, missing = sorted(set(classes) - set(reference)), sorted(set(reference) - set(classes))
        raise DataError(f"imagefolder: {folder} has other class folders than {train} (extra: {', '.join(extra) or '-'}"
                        f"; missing: {', '.join(missing) or '-'}); labels are indices into one class list, so every "
                        "split needs the same class folders (an empty folder is fine)")


@register_dataset("imagefolder")
def imagefolder(split: str = "train", subset: int | None = None, subset_seed: int | None = None,
                root: str | None = None, max_side: int = 512, decode_on: str = "worker",
                on_error: str = "stop") -> ImageFolder:
    """A folder of class folders (labelled) or of images (unlabelled), decoded to uint8 (3, h, w) at each image's
    own aspect ratio with max(h, w) <= max_side.

    `max_side` 512 keeps ImageNet's typical 500 x 375 / 500 x 333 images at their stored resolution (so the views
    are cropped from the original, as in the paper) and brings the rare larger ones down, decoding those cheaply.
    `decode_on = "device"`: workers only read each JPEG's bytes and `to_device_batch` decodes the batch with
    `torchvision.io.decode_jpeg` on the training device (nvJPEG on a GPU), which leaves a worker almost nothing to do
    (benchmarks/RESULTS.md, "Input path"); JPEG files only.
    """
    if root is None:
        raise DataError("imagefolder: bind imagefolder.root to a folder of class folders or images")
    if max_side < 1:
        raise DataError(f"imagefolder.max_side = {max_side}: the longer side's bound in pixels must be >= 1 (512 keeps "
                        "ImageNet's images whole)")
    if decode_on not in DECODE_ON:
        raise DataError(f"imagefolder.decode_on = {decode_on!r} (valid: worker, device)")
    if on_error not in ON_ERROR:
        raise DataError(f"imagefolder.on_error = {on_error!r} (valid: stop, skip)")
    base = Path(os.path.expanduser(root))
    if not base.is_dir():
        raise DataError(f"imagefolder: {base} is not a folder")
    folder = next((base / s for s in SPLIT_FOLDERS.get(split, (split,)) if (base / s).is_dir()), base)
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir())
    loose = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS]
    if class_dirs and not loose:
        classes = [d.name for d in class_dirs]
        _check_same_classes(base, folder, classes)
        per_class = [_images_in(d) for d in class_dirs]
        files = [p for ps in per_class for p in ps]
        labels = torch.tensor([c for c, ps in enumerate(per_class) for _ in ps], dtype=torch.long)
    else:
        classes = None
        files = _images_in(folder)
        labels = torch.full((len(files),), -1, dtype=torch.long)
    if not files:
        raise DataError(f"imagefolder: no images ({', '.join(EXTENSIONS)}) under {folder}")
    idx = subset_indices(len(files), subset, subset_seed, what=f"imagefolder {folder}")
    if idx is not None:
        files, labels = [files[i] for i in idx.tolist()], labels[idx]
    return ImageFolder(files, labels, classes, split=split, max_side=max_side, decode_on=decode_on,
                       on_error=on_error)
