"""Evaluation inputs as batched functions on the device: the images a protocol's trunk sees.

Each takes `images` (B, 3, H, W) float in [0, 1] and `sizes` (B, 2) long, the (height, width) of each image's
content in its top-left corner (images of their own aspect ratio padded to one batch), or None when every image
fills the batch's H x W. Resizing is bilinear with antialiasing (PIL's, which torchvision's transforms of VISSL's
configs use, up to rounding).

    squash(images, sizes, 224)                       VISSL's VOC07 SVM input: Resize 256, then Resize (224, 224):
                                                     the whole image, squashed to a square
    resize_center_crop(images, sizes, 256, 224)      the test input of the linear evaluation: shorter side to 256,
                                                     the centre 224 x 224
    random_resized_crop_flip(images, sizes, 224, g)  the train input of the linear evaluation: RandomResizedCrop
                                                     (scale 0.08-1, ratio 3/4-4/3) then a horizontal flip, p 0.5

(torchvision.transforms.RandomResizedCrop's rule, with every draw from the explicit generator `g`.)

`eval_view(name, size)` names the test-time ones for gin (`VIEWS`): "squash", "resize_crop", and "centre_crop" (no
function: the decoded square resized to the evaluation's size by the loader, the cached protocols' input).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from pirl_ablate.errors import ConfigError, did_you_mean


def _content(images: Tensor, sizes: Tensor | None, i: int) -> Tensor:
    """Image i's content (1, 3, h, w)."""
    if sizes is None:
        return images[i:i + 1]
    h, w = (int(v) for v in sizes[i])
    return images[i:i + 1, :, :h, :w]


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def _shorter_side(x: Tensor, size: int) -> Tensor:
    """Resize (1, 3, h, w) so that its shorter side is `size` (torchvision's Resize(int) rounding)."""
    h, w = x.shape[-2:]
    if h <= w:
        return _resize(x, (size, int(size * w / h)))
    return _resize(x, (int(size * h / w), size))


def squash(images: Tensor, sizes: Tensor | None, size: int = 224, resize: int = 256) -> Tensor:
    """(B, 3, size, size): each image's shorter side resized to `resize`, then the whole image to size x size."""
    return torch.cat([_resize(_shorter_side(_content(images, sizes, i), resize), (size, size))
                      for i in range(len(images))])


def resize_center_crop(images: Tensor, sizes: Tensor | None, resize: int = 256, crop: int = 224) -> Tensor:
    """(B, 3, crop, crop): shorter side resized to `resize`, then the centre crop x crop (torchvision's rounding)."""
    out = []
    for i in range(len(images)):
        x = _shorter_side(_content(images, sizes, i), resize)
        h, w = x.shape[-2:]
        top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
        out.append(x[..., top:top + crop, left:left + crop])
    return torch.cat(out)


def crop_box(height: int, width: int, generator: torch.Generator, scale: tuple[float, float] = (0.08, 1.0),
             ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random resized crop of a height x width image: torchvision's RandomResizedCrop rule
    (10 tries of area in `scale` and log-uniform aspect ratio in `ratio`, then the whole image clipped to `ratio`),
    drawn from `generator` (CPU)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(2, generator=generator, dtype=torch.float64)
        target = area * (scale[0] + (scale[1] - scale[0]) * float(u[0]))
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * float(u[1]))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop_flip(images: Tensor, sizes: Tensor | None, size: int, generator: torch.Generator,
                             scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)
                             ) -> Tensor:
    """(B, 3, size, size): a random resized crop of each image (`crop_box`) resized to size x size, flipped
    horizontally with probability 0.5; every draw from `generator` (a CPU generator: the boxes index the images)."""
    out = []
    for i in range(len(images)):
        x = _content(images, sizes, i)
        top, left, h, w = crop_box(*x.shape[-2:], generator, scale, ratio)
        x = _resize(x[..., top:top + h, left:left + w], (size, size))
        if bool(torch.rand(1, generator=generator) < 0.5):
            x = x.flip(-1)
        out.append(x)
    return torch.cat(out)


VIEWS = ("centre_crop", "squash", "resize_crop")
View = Callable[[Tensor, "Tensor | None"], Tensor]


def eval_view(view: str, size: int) -> View | None:
    """The input function of `view` at `size` px (None for "centre_crop": the loader's resize); ConfigError if
    unknown. "resize_crop" resizes the shorter side to round(size * 256 / 224) first, 256 at 224 as VISSL."""
    if view == "centre_crop":
        return None
    if view == "squash":
        return lambda images, sizes: squash(images, sizes, size, resize=round(size * 256 / 224))
    if view == "resize_crop":
        return lambda images, sizes: resize_center_crop(images, sizes, round(size * 256 / 224), size)
    raise ConfigError(f"input view {view!r}{did_you_mean(view, VIEWS)} (valid: {', '.join(VIEWS)})")
