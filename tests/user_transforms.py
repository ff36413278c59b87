"""A transform registered from outside the package, as a user's own module would: imported by a gin file."""

from __future__ import annotations

import torch

from pirl_ablate import register_transform
from pirl_ablate.transforms import View


@register_transform("user_dim")
class UserDim:
    """Darken every image by `strength`, or not, at random; the label says which."""

    def __init__(self, strength: float = 0.5):
        self.strength = strength
        self.num_classes = 2

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> View:
        dimmed = torch.randint(2, (images.shape[0],), generator=generator, device=images.device)
        scale = 1 - self.strength * dimmed.to(images.dtype).view(-1, 1, 1, 1)
        return View(data=images * scale, params={"dimmed": dimmed}, label=dimmed, num_classes=2)
