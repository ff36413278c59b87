"""Kornia's own ops against the hand-written ones the built-in transforms use, on the CPU: milliseconds per batch.

    .venv/bin/python benchmarks/kornia_ops.py [--repeats 7] [--threads 1]

Three steps, each fed the same parameters both ways (so both compute the same views; tests/test_transforms.py checks
the colour values are equal):

- colour: jitter + grayscale of jigsaw patches (B x 9 patches of 3 x 64 x 64, the paper's per-patch recipe) and of
  smoke-scale images (B x 3 x 32 x 32): `photometric.apply_colour` (in place, an HSV round trip that never builds
  the HSV image) against Kornia's torchvision-compatible functions one after another (`adjust_brightness_accumulative`,
  `adjust_contrast_with_mean_subtraction`, `adjust_saturation_with_gray_subtraction`, `adjust_hue`,
  `rgb_to_grayscale`).
- rotation by quarter turns of 256 px images: `Rotation.apply` (one gather) against Kornia's `RandomRotation90`
  applied with the same turns (an affine warp).
- crop + resize of 9 boxes per image to 64 px (the jigsaw patches): `base.resample_boxes` (torchvision's roi_align)
  against `kornia.geometry.transform.crop_and_resize`.

Each number is the median of `--repeats` timed calls after one warm-up, with `--threads` intra-op threads.
"""

from __future__ import annotations

import argparse
import math

import kornia.augmentation as K
import kornia.color
import kornia.enhance
import torch
from kornia.geometry.transform import crop_and_resize
from timing import median_ms

from pirl_ablate.console import out
from pirl_ablate.transforms.base import resample_boxes
from pirl_ablate.transforms.photometric import apply_colour, sample_colour
from pirl_ablate.transforms.rotation import Rotation


def kornia_colour(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    x = kornia.enhance.adjust_brightness_accumulative(x, p["brightness"])
    x = kornia.enhance.adjust_contrast_with_mean_subtraction(x, p["contrast"])
    x = kornia.enhance.adjust_saturation_with_gray_subtraction(x, p["saturation"])
    x = kornia.enhance.adjust_hue(x, p["hue"] * 2 * math.pi)
    return torch.where(p["grayscale"].view(-1, 1, 1, 1), kornia.color.rgb_to_grayscale(x).expand_as(x), x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    rows = []
    for what, shape in (("colour, 32 x 9 patches of 64 px", (288, 3, 64, 64)),
                        ("colour, 256 images of 32 px", (256, 3, 32, 32))):
        x = torch.rand(*shape, generator=g)
        p = sample_colour((shape[0],), g, x.device, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                          grayscale_p=0.2)
        rows.append((what, median_ms(lambda x=x, p=p: apply_colour(x.clone(), p), args.repeats),
                     median_ms(lambda x=x, p=p: kornia_colour(x, p), args.repeats)))
    images = torch.rand(32, 3, 256, 256, generator=g)
    turns = torch.randint(4, (32,), generator=g)
    rotation, kornia_rotation = Rotation(), K.RandomRotation90(times=(0, 3), p=1.0)
    params = kornia_rotation.forward_parameters(images.shape)
    params["degrees"] = 90.0 * turns.float()
    rows.append(("rotation, 32 images of 256 px", median_ms(lambda: rotation.apply(images, {"rotation": turns}),
                                                             args.repeats),
                 median_ms(lambda: kornia_rotation(images, params=params), args.repeats)))
    corner = torch.rand(32, 9, 2, generator=g) * 180
    boxes = torch.cat([corner, corner + 64], dim=-1)  # (B, 9, 4) x0, y0, x1, y1
    x0, y0, x1, y1 = boxes.flatten(0, 1).unbind(-1)
    quads = torch.stack([torch.stack([x0, y0], -1), torch.stack([x1 - 1, y0], -1), torch.stack([x1 - 1, y1 - 1], -1),
                         torch.stack([x0, y1 - 1], -1)], dim=1)  # (B 9, 4, 2) corner pixel centres, clockwise
    owners = images.repeat_interleave(9, dim=0)
    rows.append(("crop + resize, 32 x 9 boxes to 64 px", median_ms(lambda: resample_boxes(images, boxes, (64, 64)),
                                                                    args.repeats),
                 median_ms(lambda: crop_and_resize(owners, quads, (64, 64)), args.repeats)))
    out.print(f"CPU, {args.threads} thread(s), median of {args.repeats}; ms per call")
    out.print("| step | hand-written (ms) | Kornia (ms) | Kornia / hand-written |")
    out.print("|---|---:|---:|---:|")
    for what, ours, theirs in rows:
        out.print(f"| {what} | {ours:.1f} | {theirs:.1f} | {theirs / ours:.2f} |")


if __name__ == "__main__":
    main()
