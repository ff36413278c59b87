"""What a pretext transform is: the `View` it returns, the `Transform` base class, input checks, the resampler.

A transform takes a float image batch `(B, C, H, W)` in [0, 1] on any device and an explicit `torch.Generator` on
that device. It first draws every random parameter of the batch (a dict of `(B, ...)` tensors), then applies them
deterministically (Kornia's pattern), so the draws can be inspected, reused as labels and checked by tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from pirl_ablate.errors import UserError

# Batches on the CPU are applied this many images at a time: one op over a whole 256-image batch makes glibc malloc
# mmap and page-fault its large temporaries on every op (measured 3x slower on the 2-core CI machine).
CPU_CHUNK = 32


class TransformInputError(UserError, ValueError):
    """Images or parameters a transform cannot use; the message names the transform, the parameter and the shape."""


@dataclass
class View:
    """What a transform returns: the view, the parameters drawn for it and its covariant label.

    data:        (B, C, h, w) image view or (B, P, C, h, w) patch view; float, on the input's device.
    params:      per-sample draws, leading dim B, e.g. "perm_index" (B,), "perm" (B, P), "rotation" (B,),
                 "boxes" (B, P, 4) as x0, y0, x1, y1 in input pixel coordinates. A composition prefixes each key
                 with its part's name ("rotation.rotation", "jigsaw.perm").
    label:       (B,) long index of the transformation in T (permutation index, rotation, composed), or None.
    num_classes: |T|, the size of the label space (a product for compositions), or None.
    """

    data: Tensor
    params: dict[str, Tensor] = field(default_factory=dict)
    label: Tensor | None = None
    num_classes: int | None = None

    @property
    def is_patches(self) -> bool:
        """True for a patch view (B, P, C, h, w)."""
        return self.data.dim() == 5


def shape_str(images: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in images.shape) + ")"


class Transform:
    """Base class of the built-in transforms: check the input, draw the parameters, apply them (in CPU chunks).

    Subclasses set `name`, `produces_patches` and `num_classes`, and implement `sample` and `apply`; `label`
    turns the drawn parameters into the covariant class index (None for transforms without one).
    """

    name = "transform"
    produces_patches = False
    num_classes: int | None = None

    def __call__(self, images: Tensor, generator: torch.Generator) -> View:
        """images (B, C, H, W) float in [0, 1]; generator on images.device -> View."""
        self.check(images)
        if generator.device.type != images.device.type:
            raise TransformInputError(
                f"{self.name}: the generator is on {generator.device} but the images {shape_str(images)} are on "
                f"{images.device}; pass torch.Generator(device=images.device)"
            )
        params = self.sample(images.shape, generator, images.device)
        data = self._apply_in_chunks(images, params)
        return View(data=data, params=params, label=self.label(params), num_classes=self.num_classes)

    def check(self, images: Tensor) -> None:
        """Raise TransformInputError for a non-tensor, wrong rank, non-float dtype or unsupported channel count."""
        if not isinstance(images, Tensor):
            raise TransformInputError(f"{self.name}: images must be a torch.Tensor (B, C, H, W), got "
                                      f"{type(images).__name__}")
        if images.dim() != 4:
            raise TransformInputError(f"{self.name}: images must have rank 4 (B, C, H, W), got shape "
                                      f"{shape_str(images)}")
        if not images.is_floating_point():
            raise TransformInputError(f"{self.name}: images must be float in [0, 1], got {images.dtype} of shape "
                                      f"{shape_str(images)} (use images.float() / 255)")
        if images.shape[1] not in (1, 3):
            raise TransformInputError(f"{self.name}: images must have 1 or 3 channels (B, C, H, W), got shape "
                                      f"{shape_str(images)}")

    def sample(self, shape: torch.Size, generator: torch.Generator, device: torch.device) -> dict[str, Tensor]:
        """Draw every random parameter for a batch of `shape` (B, C, H, W); each value has leading dim B."""
        raise NotImplementedError

    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Deterministically apply `params` (leading dim B) to images (B, C, H, W)."""
        raise NotImplementedError

    def label(self, params: dict[str, Tensor]) -> Tensor | None:
        """(B,) long class index in [0, num_classes), or None."""
        return None

    def _apply_in_chunks(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        batch = images.shape[0]
        if images.device.type != "cpu" or batch <= CPU_CHUNK:
            return self.apply(images, params)
        out: Tensor | None = None
        for start in range(0, batch, CPU_CHUNK):
            part = slice(start, start + CPU_CHUNK)
            chunk = self.apply(images[part], {k: v[part] for k, v in params.items()})
            if out is None:
                out = chunk.new_empty((batch, *chunk.shape[1:]))
            out[part] = chunk
        assert out is not None
        return out

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


def resample_boxes(images: Tensor, boxes: Tensor, size: tuple[int, int], flip: Tensor | None = None) -> Tensor:
    """Resize box p of image b to `size`, for every (b, p) at once: one affine_grid and one grid_sample.

    images (B, C, H, W); boxes (B, P, 4) as x0, y0, x1, y1 in input pixel coordinates, where pixel (i, j) covers
    [j, j + 1) x [i, i + 1); flip (B, P) bool mirrors a patch horizontally. Returns (B, P, C, h, w).

    Output pixel (r, c) samples the input bilinearly at x = x0 + (c + 1/2) (x1 - x0) / w, y likewise
    (`align_corners=False`: pixel centres at half-integers, the convention of torchvision's resize without
    antialiasing); positions within half a pixel of the border repeat the edge pixel. So a box with integer
    corners and (x1 - x0, y1 - y0) == (w, h) is an exact copy of `images[b, :, y0:y1, x0:x1]`. Downscaling is not
    antialiased. The P patches of an image are sampled as one (P h, w) grid over that image, so no input is copied.
    """
    batch, channels, height, width = images.shape
    patches = boxes.shape[1]
    h, w = size
    x0, y0, x1, y1 = boxes.to(images.dtype).unbind(-1)
    sx, tx = (x1 - x0) / width, (x0 + x1) / width - 1
    sy, ty = (y1 - y0) / height, (y0 + y1) / height - 1
    if flip is not None:
        sx = torch.where(flip, -sx, sx)
    zero = torch.zeros_like(sx)
    theta = torch.stack([sx, zero, tx, zero, sy, ty], dim=-1).view(batch * patches, 2, 3)
    grid = F.affine_grid(theta, [batch * patches, channels, h, w], align_corners=False)
    out = F.grid_sample(images, grid.view(batch, patches * h, w, 2), mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out.view(batch, channels, patches, h, w).transpose(1, 2).contiguous()


def random_resized_boxes(shape: torch.Size, scale: tuple[float, float], ratio: tuple[float, float],
                         generator: torch.Generator, device: torch.device) -> Tensor:
    """(B, 4) crop boxes x0, y0, x1, y1 in pixels: area a fraction U(scale) of H W, log aspect ratio U(log ratio).

    The batched form of torchvision's RandomResizedCrop draw: a side longer than the image is clamped to it
    (instead of retrying), which keeps every box inside the image; the position is uniform over the valid range.
    Boxes are continuous (not rounded to pixels); the resampler interpolates.
    """
    batch, _, height, width = shape
    u = torch.rand(batch, 4, generator=generator, device=device, dtype=torch.float64)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:, 0])
    log_lo, log_hi = torch.log(torch.tensor(ratio, dtype=torch.float64, device=device))
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
    box_w = torch.sqrt(area * aspect).clamp(max=width)
    box_h = torch.sqrt(area / aspect).clamp(max=height)
    x0 = (width - box_w) * u[:, 2]
    y0 = (height - box_h) * u[:, 3]
    return torch.stack([x0, y0, x0 + box_w, y0 + box_h], dim=-1).float()
