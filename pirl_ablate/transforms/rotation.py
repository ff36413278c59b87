"""`rotation`: exact rotation by 0, 90, 180 or 270 degrees per sample (Gidaris et al. 2018; PIRL Table 5)."""

from __future__ import annotations

import torch
from torch import Tensor

from pirl_ablate.transforms.base import Transform, TransformInputError, shape_str
from pirl_ablate.transforms.registry import register_transform


@register_transform("rotation")
class Rotation(Transform):
    """Rotate each image by k * 90 degrees counter-clockwise, k uniform in {0, 1, 2, 3}; the label is k."""

    name = "rotation"
    num_classes = 4

    def check(self, images: Tensor) -> None:
        """Rotated and unrotated images share one batch tensor, so images must be square."""
        super().check(images)
        if images.shape[-2] != images.shape[-1]:
            raise TransformInputError(f"rotation: images must be square (H == W) to share a batch when rotated, "
                                      f"got shape {shape_str(images)}")

    def sample(self, shape: torch.Size, generator: torch.Generator, device: torch.device) -> dict[str, Tensor]:
        """rotation (B,) long in {0, 1, 2, 3}: quarter turns, as `torch.rot90(image, k, dims=(-2, -1))`."""
        return {"rotation": torch.randint(4, (shape[0],), generator=generator, device=device)}

    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W): each group of images with the same k is rotated by one rot90 call."""
        out = torch.empty_like(images)
        for k in range(4):
            index = (params["rotation"] == k).nonzero().squeeze(1)
            out[index] = torch.rot90(images[index], k, dims=(-2, -1))
        return out

    def label(self, params: dict[str, Tensor]) -> Tensor:
        return params["rotation"]
