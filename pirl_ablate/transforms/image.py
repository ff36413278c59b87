"""`image`: the standard augmented view of I that PIRL's f head embeds (paper Section 4.1, NPID's recipe)."""

from __future__ import annotations

import torch
from torch import Tensor

from pirl_ablate.transforms.base import (
    ImageBatch,
    Transform,
    TransformInputError,
    downscale_samples,
    full_sizes,
    random_resized_boxes,
    resample_boxes,
    shape_str,
)
from pirl_ablate.transforms.photometric import (
    COLOUR_KEYS,
    RANDOM_PHOTOMETRIC_KEYS,
    apply_colour,
    apply_random_photometric,
    sample_colour,
    sample_random_photometric,
)
from pirl_ablate.transforms.registry import register_transform


@register_transform("image")
class ImageView(Transform):
    """Random resized crop (scale 0.08-1) of each whole image, horizontal flip, colour jitter and grayscale, resized
    to `size`."""

    name = "image"

    def __init__(self, size: int | None = 224, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True, photometric: bool = True,
                 brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.4,
                 grayscale_p: float = 0.2, random_photometric_p: float = 0.0):
        """size: output side (224, the paper's; None keeps min(H, W) of the input); scale/ratio: crop area
        fraction and aspect ratio; flip: horizontal flip p = 0.5; photometric: colour jitter (NPID's 0.4 for
        brightness, contrast, saturation and hue; VISSL's hue is 0.2) and grayscale with probability grayscale_p;
        random_photometric_p: VISSL's random photometric step (posterize, sharpness, solarize, autocontrast;
        `photometric.apply_random_photometric`) with this probability, after the colour jitter and grayscale
        (0: off; VISSL: 0.66)."""
        self.size = size
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.flip = flip
        self.photometric = photometric
        self.colour = {"brightness": brightness, "contrast": contrast, "saturation": saturation, "hue": hue,
                       "grayscale_p": grayscale_p}
        self.random_photometric_p = random_photometric_p

    def check(self, images: Tensor) -> None:
        """Images of their own sizes (an ImageBatch) need an explicit `size` (None would make the view's size that
        of the batch's largest image)."""
        super().check(images)
        if self.size is None and isinstance(images, ImageBatch):
            raise TransformInputError(f"{self.name}: size=None keeps the input's size, but these images have their own "
                                      f"sizes (canvas {shape_str(images)}); bind {self.name}.size (the paper's: 224)")

    def sample(self, shape: torch.Size, generator: torch.Generator, device: torch.device,
               sizes: Tensor | None = None) -> dict[str, Tensor]:
        """box (B, 4) x0, y0, x1, y1 in input pixels, inside each image's `sizes` (torchvision's RandomResizedCrop
        draw), [flip (B,)], [colour factors (B,)], [random photometric draws (B,)]."""
        sizes = sizes if sizes is not None else full_sizes(shape, device)
        params = {"box": random_resized_boxes(sizes, self.scale, self.ratio, generator, device)}
        if self.flip:
            params["flip"] = torch.rand(shape[0], generator=generator, device=device) < 0.5
        if self.photometric:
            params.update(sample_colour((shape[0],), generator, device, **self.colour))
        if self.random_photometric_p > 0:
            params.update(sample_random_photometric((shape[0],), generator, device, p=self.random_photometric_p))
        return params

    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        """(B, C, H, W) -> (B, C, size, size)."""
        size = self.size if self.size is not None else min(images.shape[-2:])
        flip = params["flip"].unsqueeze(1) if "flip" in params else None
        samples = downscale_samples(max(images.shape[-2:]), size)  # antialiasing for the largest possible box
        out = resample_boxes(images, params["box"].unsqueeze(1), (size, size), flip, samples).squeeze(1)
        if self.photometric:
            out = apply_colour(out, {k: params[k] for k in COLOUR_KEYS})
        if self.random_photometric_p > 0:
            out = apply_random_photometric(out, {k: params[k] for k in RANDOM_PHOTOMETRIC_KEYS})
        return out
