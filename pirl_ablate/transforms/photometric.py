"""Colour jitter and random grayscale with per-sample factors drawn from an explicit generator.

Semantics follow torchvision's ColorJitter + RandomGrayscale (the PIL recipe of PIRL / VISSL), applied in a fixed
order brightness -> contrast -> saturation -> hue (torchvision shuffles the order per call), each clamped to [0, 1]:
brightness multiplies, contrast blends with the mean luma, saturation blends with the luma image, hue shifts the HSV
hue by a fraction of the circle. One-channel images get brightness and contrast only.
"""

from __future__ import annotations

import math

import kornia.color
import kornia.enhance
import torch
from torch import Tensor


def sample_colour(shape: tuple[int, ...], generator: torch.Generator, device: torch.device, *, brightness: float,
                  contrast: float, saturation: float, hue: float, grayscale_p: float) -> dict[str, Tensor]:
    """Per-sample factors of `shape` (e.g. (B,) or (B, P)): brightness/contrast/saturation ~ U(1 - s, 1 + s),
    hue ~ U(-hue, hue) in fractions of the hue circle, grayscale ~ Bernoulli(grayscale_p)."""
    u = torch.rand(*shape, 5, generator=generator, device=device)
    return {
        "brightness": 1 + brightness * (2 * u[..., 0] - 1),
        "contrast": 1 + contrast * (2 * u[..., 1] - 1),
        "saturation": 1 + saturation * (2 * u[..., 2] - 1),
        "hue": hue * (2 * u[..., 3] - 1),
        "grayscale": u[..., 4] < grayscale_p,
    }


def apply_colour(images: Tensor, params: dict[str, Tensor]) -> Tensor:
    """images (N, C, h, w) in [0, 1]; params as from `sample_colour`, flattened to (N,). Returns (N, C, h, w)."""
    x = kornia.enhance.adjust_brightness_accumulative(images, params["brightness"])
    x = kornia.enhance.adjust_contrast_with_mean_subtraction(x, params["contrast"])
    if x.shape[1] == 1:
        return x
    x = kornia.enhance.adjust_saturation_with_gray_subtraction(x, params["saturation"])
    x = kornia.enhance.adjust_hue(x, params["hue"] * (2 * math.pi))
    gray = kornia.color.rgb_to_grayscale(x).expand_as(x)
    return torch.where(params["grayscale"].view(-1, 1, 1, 1), gray, x)
