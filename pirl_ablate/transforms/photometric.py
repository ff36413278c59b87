"""Colour jitter and random grayscale with per-sample factors drawn from an explicit generator.

Semantics are torchvision's ColorJitter + RandomGrayscale (the PIL recipe of PIRL / VISSL) as Kornia writes them
(`adjust_brightness_accumulative`, `adjust_contrast_with_mean_subtraction`, `adjust_saturation_with_gray_subtraction`,
`adjust_hue`, luma weights 0.299/0.587/0.114), applied in a fixed order brightness -> contrast -> saturation -> hue
(torchvision shuffles the order per call), each clamped to [0, 1]:

* brightness b: x <- b x;  contrast c: x <- c x + (1 - c) mean(luma(x));  saturation s: x <- s x + (1 - s) luma(x);
* hue h (a fraction of the colour circle): the HSV hue is shifted by h with value and saturation kept;
* grayscale: x <- luma(x) in every channel.

The code here computes the same values as those Kornia functions (the tests compare them) but in place and with
an HSV round trip that never builds the HSV image: on 64 px patches on the CPU, Kornia's `adjust_hue` alone costs
more than sampling the patches. One-channel images get brightness and contrast only.
"""

from __future__ import annotations

import kornia
import torch
from torch import Tensor

LUMA = (0.299, 0.587, 0.114)
COLOUR_KEYS = ("brightness", "contrast", "saturation", "hue", "grayscale")


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


def luma(x: Tensor) -> Tensor:
    """(N, 3, h, w) RGB -> (N, 1, h, w) luma 0.299 R + 0.587 G + 0.114 B."""
    gray = x[:, 0:1] * LUMA[0]
    gray.add_(x[:, 1:2], alpha=LUMA[1]).add_(x[:, 2:3], alpha=LUMA[2])
    return gray


def apply_colour(x: Tensor, params: dict[str, Tensor]) -> Tensor:
    """x (N, C, h, w) in [0, 1], overwritten; params as from `sample_colour`, each (N,). Returns x jittered."""
    n = x.shape[0]

    def per_sample(key: str) -> Tensor:
        return params[key].to(x.dtype).view(n, 1, 1, 1)

    x.mul_(per_sample("brightness")).clamp_(0, 1)
    contrast = per_sample("contrast")
    if x.shape[1] == 1:
        mean = x.mean((1, 2, 3), keepdim=True)
    else:
        mean = luma(x.mean((2, 3), keepdim=True)).view(n, 1, 1, 1)  # luma is linear: mean of luma
    x.mul_(contrast).add_(mean * (1 - contrast)).clamp_(0, 1)
    if x.shape[1] == 1:
        return x
    saturation = per_sample("saturation")
    gray = luma(x).mul_(1 - saturation)
    x.mul_(saturation).add_(gray).clamp_(0, 1)
    shift_hue_(x, params["hue"])
    grayscale = params["grayscale"].view(n, 1, 1, 1)
    return torch.where(grayscale, luma(x), x)


def shift_hue_(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the HSV hue of x (N, 3, h, w) in [0, 1] by shift (N,) turns, in place; value and saturation kept.

    With M = max, m = min and C = M - m of a pixel, its hue in sixths of a turn is h = (G - B) / C, (B - R) / C + 2
    or (R - G) / C + 4 when R, G or B is the largest. HSV -> RGB with the same M and C is then
    channel = M - C clamp(2 - |((h + k) mod 6) - 2|, 0, 1), k = 5, 3, 1 for R, G, B.
    """
    r, g, b = x.unbind(1)
    top = torch.maximum(torch.maximum(r, g), b)
    chroma = top - torch.minimum(torch.minimum(r, g), b)
    hue = torch.where(r == top, g - b, torch.where(g == top, b - r + 2 * chroma, r - g + 4 * chroma))
    hue.div_(torch.where(chroma > 0, chroma, 1)).add_(6 * shift.to(x.dtype).view(-1, 1, 1))
    for channel, k in enumerate((5, 3, 1)):
        ramp = torch.remainder(hue + k, 6).sub_(2).abs_().neg_().add_(2).clamp_(0, 1)
        torch.addcmul(top, chroma, ramp, value=-1, out=x[:, channel])
    return x


# ------------------------------------------------------------------------------------ the random photometric step
RANDOM_PHOTOMETRIC_KEYS = ("photometric_on", "posterize_bits", "sharpness", "solarize_threshold")


def sample_random_photometric(shape: tuple[int, ...], generator: torch.Generator, device: torch.device, *,
                              p: float) -> dict[str, Tensor]:
    """Per-sample draws of `shape` of VISSL's ImgPilRandomPhotometric (vissl/data/ssl_transforms/
    img_pil_random_photometric.py, pil_photometric_transforms_lib.py): with probability `p` (VISSL: 0.66) all four
    of posterize to `posterize_bits` in {4, ..., 8}, sharpness `sharpness` ~ U(0.1, 1.9), solarize at
    `solarize_threshold` in {0, ..., 256} (of 8-bit values) and autocontrast, in that order."""
    return {
        "photometric_on": torch.rand(shape, generator=generator, device=device) < p,
        "posterize_bits": torch.randint(4, 9, shape, generator=generator, device=device),
        "sharpness": 0.1 + 1.8 * torch.rand(shape, generator=generator, device=device),
        "solarize_threshold": torch.randint(0, 257, shape, generator=generator, device=device),
    }


def posterize(x: Tensor, bits: Tensor) -> Tensor:
    """PIL's ImageOps.posterize on 8-bit values v = round(255 x): keep the top `bits` (N,) bits of each value, i.e.
    v - (v mod 2^(8 - bits)); x (N, C, h, w) in [0, 1]."""
    step = torch.pow(2.0, (8 - bits).to(x.dtype)).view(-1, 1, 1, 1)
    v = torch.round(x * 255)
    return (v - torch.remainder(v, step)) / 255


def solarize(x: Tensor, threshold: Tensor) -> Tensor:
    """PIL's ImageOps.solarize: pixels whose 8-bit value round(255 x) is at or above `threshold` (N,) (0..256) are
    inverted, x <- 1 - x; x (N, C, h, w) in [0, 1]."""
    return torch.where(torch.round(x * 255) >= threshold.to(x.dtype).view(-1, 1, 1, 1), 1 - x, x)


def autocontrast(x: Tensor) -> Tensor:
    """PIL's ImageOps.autocontrast (cutoff 0): each channel of each image stretched from [min, max] to [0, 1]; a
    constant channel is left as it is. x (N, C, h, w)."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (x - lo) / torch.where(span > 0, span, 1), x)


def apply_random_photometric(x: Tensor, params: dict[str, Tensor]) -> Tensor:
    """x (N, C, h, w) in [0, 1]; params of `sample_random_photometric`, each (N,). The images whose
    `photometric_on` is set get posterize -> sharpness (Kornia's `sharpness`, PIL's ImageEnhance.Sharpness: a blend
    with the 3x3 smoothed image, borders kept) -> solarize -> autocontrast; the others are returned unchanged."""
    out = posterize(x, params["posterize_bits"])
    if min(out.shape[-2:]) >= 3:  # PIL leaves images under 3 px as they are (no interior to smooth)
        out = kornia.enhance.sharpness(out, params["sharpness"].to(x.dtype)).clamp_(0, 1)
    out = autocontrast(solarize(out, params["solarize_threshold"]))
    return torch.where(params["photometric_on"].view(-1, 1, 1, 1), out, x)
