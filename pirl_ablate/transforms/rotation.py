"""`rotation`: exact rotation by 0, 90, 180 or 270 degrees per sample (Gidaris et al. 2018; PIRL Table 5), of the
image or (`augment`) of its standard augmented view: the paper's PIRL (Rotation) augments, then rotates."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pirl_ablate.transforms.base import Transform, TransformInputError, View, centre_squares, shape_str
from pirl_ablate.transforms.registry import build_transform, register_transform


@register_transform("rotation")
class Rotation(Transform):
    """Rotate each image by k * 90 degrees counter-clockwise, k uniform in {0, 1, 2, 3}; the label is k.

    With `augment`, each image first gets the `image` transform (random resized crop, flip, colour jitter to
    `image.size`: paper Section 4.2, "standard data augmentation" before the rotation), built with the keyword
    arguments `image` (None: its gin bindings); its draws are recorded under "image.<key>" beside "rotation".
    """

    name = "rotation"
    num_classes = 4

    def __init__(self, augment: bool = False, image: dict[str, Any] | None = None):
        self.augment = augment
        self._image = build_transform("image", **(image or {})) if augment else None

    def __call__(self, images: Tensor, generator: torch.Generator) -> View:
        """A batch of own-size images (an ImageBatch) is rotated as its centre squares (`centre_squares`), or, with
        `augment`, as the image view cropped from each whole image."""
        return super().__call__(images if self.augment else centre_squares(images), generator)

    def check(self, images: Tensor) -> None:
        """Rotated and unrotated images share one batch tensor, so images must be square (or augmented to a
        square first)."""
        super().check(images)
        if not self.augment and images.shape[-2] != images.shape[-1]:
            raise TransformInputError(f"rotation: images must be square (H == W) to share a batch when rotated, "
                                      f"got shape {shape_str(images)}")

    def sample(self, shape: torch.Size, generator: torch.Generator, device: torch.device,
               sizes: Tensor | None = None) -> dict[str, Tensor]:
        """rotation (B,) long in {0, 1, 2, 3}: quarter turns, as `torch.rot90(image, k, dims=(-2, -1))`; with
        `augment`, the image view's draws first (inside each image's `sizes`), as "image.<key>"."""
        params = {}
        if self._image is not None:
            params = {f"image.{k}": v for k, v in self._image.sample(shape, generator, device, sizes).items()}
        params["rotation"] = torch.randint(4, (shape[0],), generator=generator, device=device)
        return params

    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        """(B, C, H, W) -> (B, C, s, s) (s = H = W, or `image.size` with `augment`): one gather of every image's
        pixels through its rotation's index map (no per-rotation selection of images, which needs the selected
        count on the host: a device sync per k)."""
        if self._image is not None:
            images = self._image.apply(images, {k[len("image."):]: v for k, v in params.items()
                                                if k.startswith("image.")})
        batch, channels = images.shape[:2]
        source = rotation_maps(images.shape[-1], images.device)[params["rotation"]]  # (B, H W)
        out = images.flatten(2).gather(2, source.unsqueeze(1).expand(batch, channels, -1))
        return out.view(images.shape)

    def label(self, params: dict[str, Tensor]) -> Tensor:
        return params["rotation"]


def rotation_maps(size: int, device: torch.device) -> Tensor:
    """(4, size^2) long: row k holds, for each output pixel of a size x size image rotated by k quarter turns
    (`torch.rot90(image, k, dims=(-2, -1))`), the flat index of the input pixel it copies."""
    pixels = torch.arange(size * size, device=device).view(size, size)
    return torch.stack([torch.rot90(pixels, k, dims=(0, 1)).reshape(-1) for k in range(4)])
