"""Batches for training and evaluation, and the uint8 -> float step done on the device.

CPU work stops at uint8 images: in-memory datasets (one size) are indexed a whole batch at a time; file datasets
(imagefolder) decode in worker processes, each image at its own size, and a batch of them is one canvas padded
(its edge pixels repeated once) with each image's (height, width) attached (an `ImageBatch`, transforms/base.py).
Conversion to float, channel expansion and resizing happen in `to_device_batch` on the training device, and every
random augmentation after it (the transform registry): training views crop each image from its whole extent, and
clean passes (evaluation, precise-BN, the memory bank's fill) take its centre square.

The order of an epoch depends only on (seed, epoch) — torch's DistributedSampler rule — so a resumed run replays
exactly the batches an uninterrupted one would see, on any number of processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler
from torchvision.io import ImageReadMode, decode_jpeg

from pirl_ablate.data.arrays import ArrayDataset, ImageDataset
from pirl_ablate.data.imagefolder import EncodedJpegs
from pirl_ablate.errors import DataError
from pirl_ablate.transforms.base import ImageBatch, centre_squares, with_sizes

Batch = tuple[Tensor, Tensor, Tensor]  # images uint8 (B, C, H, W) (an ImageBatch from files), index (B,), labels (B,)


def pad_to_canvas(images: list[Tensor]) -> tuple[Tensor, Tensor]:
    """uint8 images (C, h_b, w_b) -> (canvas (B, C, max h, max w) with image b in its top-left corner, its last row
    and column repeated once below and right of it (all that bilinear sampling inside the image reads) and zeros
    beyond, sizes (B, 2) long (h_b, w_b)). The canvas is channels-last, the layout
    images are decoded in (copying into it is then a row copy, 3x faster than a transpose); `to_device_batch` makes
    it contiguous on the device."""
    sizes = torch.tensor([im.shape[-2:] for im in images], dtype=torch.long)
    height, width = (int(v) for v in sizes.max(dim=0).values)
    canvas = images[0].new_zeros((len(images), height, width, images[0].shape[0])).permute(0, 3, 1, 2)
    for out, im in zip(canvas, images):
        h, w = im.shape[-2:]
        out[:, :h, :w] = im
        out[:, :h, w:w + 1] = im[:, :, w - 1:]
        out[:, h:h + 1, :w + 1] = out[:, h - 1:h, :w + 1]
    return canvas, sizes


def collate_skipping(items: list) -> tuple[Tensor | EncodedJpegs, Tensor, Tensor, Tensor | None] | None:
    """(image (C, h, w), index, label) items -> (canvas, index (B,), labels (B,), sizes (B, 2)) (`pad_to_canvas`),
    dropping the None of skipped corrupt images; None if all were. Encoded JPEGs are gathered into one
    EncodedJpegs (sizes None: known once decoded on the device)."""
    items = [it for it in items if it is not None]
    if not items:
        return None
    images, index, labels = zip(*items)
    index, labels = torch.tensor(index, dtype=torch.long), torch.tensor(labels, dtype=torch.long)
    if isinstance(images[0], EncodedJpegs):
        return EncodedJpegs([d for im in images for d in im.data], images[0].max_side), index, labels, None
    canvas, sizes = pad_to_canvas(list(images))
    return canvas, index, labels, sizes


def decode_on_device(batch: EncodedJpegs, device: torch.device | str) -> Tensor:
    """The uint8 ImageBatch of `batch`'s JPEGs on `device`: decoded there by `torchvision.io.decode_jpeg` (nvJPEG
    on CUDA), each longer side brought down to `batch.max_side` (bilinear, antialiased, never up), padded as
    `pad_to_canvas` pads."""
    images = []
    for image in decode_jpeg(batch.data, mode=ImageReadMode.RGB, device=device):
        h, w = image.shape[-2:]
        scale = min(1.0, batch.max_side / max(h, w))
        target = (max(1, round(h * scale)), max(1, round(w * scale)))
        if target != (h, w):
            image = F.interpolate(image[None].float(), size=target, mode="bilinear", antialias=True,
                                  align_corners=False)[0].round_().clamp_(0, 255).to(torch.uint8)
        images.append(image)
    canvas, sizes = pad_to_canvas(images)
    return with_sizes(canvas, sizes)


def worker_message(text: str) -> str:
    """The error a DataLoader worker raised, from torch's "Caught X in DataLoader worker process N. Original
    Traceback ...: module.X: message" text (unchanged when the error was raised in this process)."""
    if not text.startswith("Caught "):
        return text
    last = [line for line in text.strip().splitlines() if line.strip()][-1].strip()
    return last.split(": ", 1)[1] if ": " in last else last


class _EpochBatches:
    """Batch sampler over a DistributedSampler's epoch order; `start` skips the first batches (mid-epoch resume)."""

    def __init__(self, sampler: DistributedSampler, batch_size: int, drop_last: bool):
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last
        self.start = 0

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(self.sampler)
        for b in range(self.start, len(self)):
            yield order[b * self.batch_size:(b + 1) * self.batch_size]


class EpochLoader:
    """Iterable of `Batch` for one epoch at a time: `set_epoch(e)` then iterate (optionally from `start_step`)."""

    def __init__(self, dataset: ImageDataset, batch_size: int, *, seed: int, shuffle: bool, drop_last: bool,
                 rank: int, world_size: int, num_workers: int, pin_memory: bool, persistent_workers: bool):
        self.dataset = dataset
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
                                     drop_last=drop_last)
        self.sampler = sampler
        self.batches = _EpochBatches(sampler, batch_size, drop_last)  # fewer images than a batch: no batch
        self.pin_memory = pin_memory
        self._loader = None
        if not isinstance(dataset, ArrayDataset):
            self._loader = DataLoader(dataset, batch_sampler=self.batches, num_workers=num_workers,
                                      collate_fn=collate_skipping, pin_memory=pin_memory,
                                      persistent_workers=persistent_workers and num_workers > 0)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.sampler.set_epoch(epoch)
        self.batches.start = start_step

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Batch]:
        if self._loader is not None:
            try:
                yield from ((with_sizes(images, sizes), index, labels)
                            for images, index, labels, sizes in (b for b in self._loader if b is not None))
            except DataError as e:  # from a worker: torch put its traceback in the message, ours is its last line
                raise DataError(worker_message(str(e))) from None
            return
        ds = self.dataset
        for idx in self.batches:
            index = torch.tensor(idx, dtype=torch.long)
            images = ds.images[index]
            yield (images.pin_memory() if self.pin_memory else images), index, ds.labels[index]


@dataclass(frozen=True)
class LoaderOptions:
    """How the loaders of a run read file datasets (gin: `loader.*`; `make_loader`'s arguments of the same names):
    worker processes, pinned host memory, workers kept alive between epochs. In-memory datasets ignore them."""

    num_workers: int = 2
    pin_memory: bool = False
    persistent_workers: bool = True


DEFAULT_LOADER = LoaderOptions()


def make_loader(dataset: ImageDataset, batch_size: int, generator: torch.Generator | None = None, *,
                seed: int | None = None, shuffle: bool | None = None, drop_last: bool | None = None,
                rank: int = 0, world_size: int = 1, num_workers: int = 2, pin_memory: bool = False,
                persistent_workers: bool = True) -> EpochLoader:
    """A loader of `(images uint8 (B,C,H,W), index (B,), labels (B,))` for `dataset`, this process's share; the
    images of a file dataset are an ImageBatch (each image's size attached).

    Shuffled when a `seed` (or a `generator` to draw one from) is given, in dataset order otherwise; `drop_last`
    defaults to `shuffle`. `num_workers`, `pin_memory`, `persistent_workers` (`LoaderOptions`) apply to file
    datasets; in-memory ones are indexed in the main process.
    """
    if seed is None and generator is not None:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    shuffle = seed is not None if shuffle is None else shuffle
    return EpochLoader(dataset, batch_size, seed=seed or 0, shuffle=shuffle,
                       drop_last=shuffle if drop_last is None else drop_last, rank=rank, world_size=world_size,
                       num_workers=num_workers, pin_memory=pin_memory, persistent_workers=persistent_workers)


def to_device_batch(images: Tensor | EncodedJpegs, device: torch.device | str, size: int | None = 32,
                    channels: int = 3, *, whole: bool = False) -> Tensor:
    """uint8 (B, C, H, W) -> float (B, channels, size, size) in [0, 1] on `device`.

    Grey images are repeated to 3 channels (RGB to grey by the mean when channels=1); resizing is bilinear with
    antialiasing (`size=None` keeps the size). The default 32 px is the smoke scale's image size. An ImageBatch
    (images of their own sizes) becomes each image's centre square at `size` (`centre_squares`), or with `whole`
    (training: the views crop from the whole image) stays a float ImageBatch on `device` whose clean squares have
    `size` pixels. EncodedJpegs are decoded on `device` first (`decode_on_device`).
    """
    if isinstance(images, EncodedJpegs):
        images = decode_on_device(images, device)
    sizes = images.sizes if isinstance(images, ImageBatch) else None
    x = images.as_subclass(Tensor).to(device, non_blocking=True).float().div_(255.0)
    if x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] == 3 and channels == 1:
        x = x.mean(dim=1, keepdim=True)
    if sizes is not None:
        x = with_sizes(x.contiguous(), sizes, size)
        return x if whole else centre_squares(x).contiguous()
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.contiguous()
