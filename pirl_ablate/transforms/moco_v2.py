"""`moco_v2`: MoCo v2's augmented view (Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning").

In MoCo v2's order: random resized crop (scale 0.2-1), colour jitter (brightness, contrast, saturation 0.4, hue 0.1)
applied with p = 0.8, grayscale p = 0.2, Gaussian blur with sigma ~ U(0.1, 2) applied with p = 0.5, horizontal flip
(drawn with the crop; it commutes with the colour and blur steps). The crop, flip and colour steps are `image`'s;
the blur is Kornia's `gaussian_blur2d` with reflected borders and a kernel of 2 * ceil(3 * max sigma) + 1 pixels
(13 for MoCo v2's sigma; at most the image's odd size below it).
"""

from __future__ import annotations

import math

import torch
from kornia.filters import gaussian_blur2d
from torch import Tensor

from pirl_ablate.transforms.image import ImageView
from pirl_ablate.transforms.registry import register_transform


@register_transform("moco_v2")
class MoCoV2View(ImageView):
    """MoCo v2's view: crop 0.2-1, colour jitter p = 0.8, grayscale p = 0.2, Gaussian blur p = 0.5, flip."""

    name = "moco_v2"

    def __init__(self, size: int | None = 224, scale: tuple[float, float] = (0.2, 1.0), jitter_p: float = 0.8,
                 brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.1,
                 grayscale_p: float = 0.2, blur_p: float = 0.5, blur_sigma: tuple[float, float] = (0.1, 2.0)):
        """Defaults are MoCo v2's (its `augmentation` list, github.com/facebookresearch/moco, main_moco.py);
        size: output side (None keeps min(H, W)); blur_sigma: the range sigma is drawn from, in output pixels."""
        super().__init__(size=size, scale=scale, brightness=brightness, contrast=contrast, saturation=saturation,
                         hue=hue, grayscale_p=grayscale_p)
        self.jitter_p, self.blur_p, self.blur_sigma = jitter_p, blur_p, tuple(blur_sigma)

    def sample(self, shape: torch.Size, generator: torch.Generator, device: torch.device,
               sizes: Tensor | None = None) -> dict[str, Tensor]:
        """`image`'s draws with the jitter factors of skipped samples set to the identity; blur (B,) bool,
        sigma (B,) in pixels."""
        params = super().sample(shape, generator, device, sizes)
        u = torch.rand(shape[0], 3, generator=generator, device=device)
        skip = u[:, 0] >= self.jitter_p
        for key, identity in (("brightness", 1.0), ("contrast", 1.0), ("saturation", 1.0), ("hue", 0.0)):
            params[key] = torch.where(skip, identity, params[key])
        lo, hi = self.blur_sigma
        params["blur"] = u[:, 1] < self.blur_p
        params["sigma"] = lo + (hi - lo) * u[:, 2]
        return params

    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        """(B, C, H, W) -> (B, C, size, size)."""
        out = super().apply(images, params)
        blur = params["blur"]
        if blur.any():
            side = min(out.shape[-2:])
            kernel = min(2 * math.ceil(3 * self.blur_sigma[1]) + 1, side - 1 if side % 2 == 0 else side)
            sigma = params["sigma"][blur].to(out.dtype)
            out[blur] = gaussian_blur2d(out[blur], (kernel, kernel), torch.stack([sigma, sigma], dim=1),
                                        border_type="reflect")
        return out
