"""What a pretext transform is: the `View` it returns, the `Transform` base class, input checks, the resampler.

A transform takes a float image batch `(B, C, H, W)` in [0, 1] on any device and an explicit `torch.Generator` on
that device. It first draws every random parameter of the batch (a dict of `(B, ...)` tensors), then applies them
deterministically (Kornia's pattern), so the draws can be inspected, reused as labels and checked by tests.

Images of their own sizes (a folder of JPEGs) come as one `ImageBatch`: a canvas `(B, C, H, W)` holding image b in
its top-left `sizes[b]` = (h_b, w_b) pixels, with `.sizes` (B, 2) attached (`with_sizes`). The crop transforms draw
each box inside its own image; any other batch is one image per full canvas.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

from pirl_ablate.errors import UserError

# Batches on the CPU are applied this many images at a time: one op over a whole 256-image batch makes glibc malloc
# mmap and page-fault its large temporaries on every op (measured 3x slower on the 2-core CI machine). For jigsaw on
# 256 px inputs, chunks of 8 images (temporaries of ~3.5 MB) ran 1.2x faster than chunks of 32 and 1.6x faster than 64.
CPU_CHUNK = 8


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


class ImageBatch(Tensor):
    """A canvas (B, C, H, W) whose image b is `self[b, :, :h_b, :w_b]`, (h_b, w_b) = `self.sizes[b]` (long, on the
    canvas's device); next to it the canvas repeats the image's last row and column, so bilinear sampling within
    half a pixel of the image's border repeats its edge pixel, as on a full canvas (what lies beyond is never
    read). `side` is the size of the clean square image of the batch (`centre_squares`' default: the run's image
    size), None for the canvas's shorter side.

    Any operation on it returns a plain Tensor (as torchvision's tv_tensors do), so `sizes` never describes a tensor
    it was not attached to. Build one with `with_sizes`; read the sizes of any batch with `image_sizes`.
    """

    sizes: Tensor
    side: int | None

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206 (torch's protocol)
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))


def with_sizes(images: Tensor, sizes: Tensor | None, side: int | None = None) -> Tensor:
    """`images` (B, C, H, W) as an ImageBatch of `sizes` (B, 2) (height, width) whose clean squares have `side`
    pixels, or `images` itself when `sizes` is None."""
    if sizes is None:
        return images
    out = images.as_subclass(ImageBatch)
    out.sizes = sizes.to(device=images.device, dtype=torch.long)
    out.side = side
    return out


def image_sizes(images: Tensor) -> Tensor:
    """(B, 2) long (height, width) of every image of a batch: an ImageBatch's `sizes`, else the full canvas."""
    if isinstance(images, ImageBatch):
        return images.sizes
    return full_sizes(images.shape, images.device)


def full_sizes(shape: torch.Size, device: torch.device) -> Tensor:
    """(B, 2) long (H, W) for a batch of `shape` (B, C, H, W) whose images fill the canvas, made on `device` (filled
    there, not copied from the host)."""
    batch, _, height, width = shape
    sizes = torch.empty(batch, 2, dtype=torch.long, device=device)
    sizes[:, 0], sizes[:, 1] = height, width
    return sizes


def centre_squares(images: Tensor, size: int | None = None) -> Tensor:
    """(B, C, size, size): each image's centre square (side min(h, w)) resized to `size` (None: the batch's `side`,
    else the canvas's shorter side), bilinear with antialiasing, as a plain Tensor: torchvision's Resize(size) +
    CenterCrop(size) up to resampling, the input of evaluation and of clean-image passes. A plain batch fills its
    canvas: it is resized whole to `size`, and returned as it is when `size` is None or its own."""
    if not isinstance(images, ImageBatch):
        if size is None or images.shape[-2:] == (size, size):
            return images
        return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    side = size or images.side or min(images.shape[-2:])
    canvas = images.as_subclass(Tensor)
    out = canvas.new_empty((canvas.shape[0], canvas.shape[1], side, side))
    for b, (h, w) in enumerate(images.sizes.tolist()):  # one host read of the sizes per batch
        edge = min(h, w)
        top, left = (h - edge) // 2, (w - edge) // 2
        square = canvas[b:b + 1, :, top:top + edge, left:left + edge]
        out[b] = F.interpolate(square, size=(side, side), mode="bilinear", antialias=True, align_corners=False)[0]
    return out


class Transform:
    """Base class of the built-in transforms: check the input, draw the parameters, apply them (in CPU chunks).

    Subclasses set `name`, `produces_patches` and `num_classes`, and implement `sample` and `apply`; `label`
    turns the drawn parameters into the covariant class index (None for transforms without one).
    """

    name = "transform"
    produces_patches = False
    num_classes: int | None = None

    @torch.no_grad()
    def __call__(self, images: Tensor, generator: torch.Generator) -> View:
        """images (B, C, H, W) float in [0, 1]; generator on images.device -> View (no gradient flows through)."""
        self.check(images)
        if generator.device.type != images.device.type:
            raise TransformInputError(
                f"{self.name}: the generator is on {generator.device} but the images {shape_str(images)} are on "
                f"{images.device}; pass torch.Generator(device=images.device)"
            )
        params = self.sample(images.shape, generator, images.device, sizes=image_sizes(images))
        data = self._apply_in_chunks(images.as_subclass(Tensor), params)
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

    def sample(self, shape: torch.Size, generator: torch.Generator, device: torch.device,
               sizes: Tensor | None = None) -> dict[str, Tensor]:
        """Draw every random parameter for a batch of `shape` (B, C, H, W) whose images have `sizes` (B, 2)
        (height, width; None: each the full H x W); each value has leading dim B."""
        raise NotImplementedError

    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Deterministically apply `params` (leading dim B) to images (B, C, H, W)."""
        raise NotImplementedError

    def label(self, params: dict[str, Tensor]) -> Tensor | None:
        """(B,) long class index in [0, num_classes), or None."""
        return None

    def _apply_in_chunks(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        """On the CPU: `apply` to CPU_CHUNK images at a time, chunks in parallel on torch.get_num_threads() Python
        threads with one intra-op thread each (torch's threads meet at a barrier after every small op, which on a
        busy machine made two threads slower than one; chunks need no synchronisation)."""
        batch = images.shape[0]
        if images.device.type != "cpu" or batch <= CPU_CHUNK:
            return self.apply(images, params)

        def work(start: int) -> Tensor:
            part = slice(start, start + CPU_CHUNK)
            with torch.no_grad():  # grad mode is per thread
                return self.apply(images[part], {k: v[part] for k, v in params.items()})

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(threads) as pool:
                out: Tensor | None = None
                for start, chunk in zip(range(0, batch, CPU_CHUNK), pool.map(work, range(0, batch, CPU_CHUNK))):
                    if out is None:
                        out = chunk.new_empty((batch, *chunk.shape[1:]))
                    out[start:start + CPU_CHUNK] = chunk
        finally:
            torch.set_num_threads(threads)
        assert out is not None
        return out

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


def resample_boxes(images: Tensor, boxes: Tensor, size: tuple[int, int], flip: Tensor | None = None,
                   samples: int = 1) -> Tensor:
    """Resize box p of image b to `size`, for every (b, p) in one call. Returns (B, P, C, h, w).

    images (B, C, H, W); boxes (B, P, 4) as x0, y0, x1, y1 in input pixel coordinates, where pixel (i, j) covers
    [j, j + 1) x [i, i + 1); flip (B, P) bool mirrors a patch horizontally.

    Output pixel (r, c) samples the input bilinearly at x = x0 + (c + 1/2) (x1 - x0) / w, y likewise (half-pixel
    centres: the convention of `F.grid_sample(align_corners=False)` and of torchvision's resize without
    antialiasing); positions within half a pixel of the border repeat the edge pixel. So a box with integer
    corners and (x1 - x0, y1 - y0) == (w, h) is an exact copy of `images[b, :, y0:y1, x0:x1]`. With `samples`
    s > 1, each output pixel is instead the mean of s x s such samples at the centres of an s x s grid over its
    footprint (x = x0 + (c + (k + 1/2) / s) (x1 - x0) / w, k < s): a box filter that antialiases a downscale by
    about s (`downscale_samples`). The sampler is torchvision's `roi_align` (`sampling_ratio=samples`,
    `aligned=True`), which samples exactly these points, is batched over all boxes on any device, and is about 2x
    faster on the CPU than the equivalent affine_grid + grid_sample; a flipped patch is the box with x0 and x1
    swapped (negative width: sampled right to left).
    """
    batch, channels = images.shape[:2]
    patches = boxes.shape[1]
    x0, y0, x1, y1 = boxes.to(images.dtype).unbind(-1)
    if flip is not None:
        x0, x1 = torch.where(flip, x1, x0), torch.where(flip, x0, x1)
    owner = torch.arange(batch, device=images.device, dtype=images.dtype).view(batch, 1).expand(batch, patches)
    rois = torch.stack([owner, x0, y0, x1, y1], dim=-1).view(batch * patches, 5)
    out = roi_align(images, rois, output_size=size, spatial_scale=1.0, sampling_ratio=samples, aligned=True)
    return out.view(batch, patches, channels, *size)


def downscale_samples(source: int, output: int) -> int:
    """Samples per axis and output pixel for `resample_boxes` when boxes of up to `source` pixels become `output`
    pixels: the downscale factor rounded (1 up to 1.5x: plain bilinear, as for crops no larger than their output;
    2 for a 512 px image to 224, as PIL's and torchvision's antialiased resize would filter)."""
    return max(1, round(source / output))


def random_resized_boxes(sizes: Tensor, scale: tuple[float, float], ratio: tuple[float, float],
                         generator: torch.Generator, device: torch.device, tries: int = 10) -> Tensor:
    """(B, 4) crop boxes x0, y0, x1, y1 in pixels of images of `sizes` (B, 2) (height, width), drawn exactly as
    torchvision's `RandomResizedCrop.get_params` draws one box on each image.

    Per try: area a fraction U(scale) of h w, log aspect ratio U(log ratio), side lengths rounded to pixels; the first
    of `tries` (torchvision: 10) whose box fits the image is kept, at an integer position uniform over the valid
    range. A row where no try fits gets torchvision's fallback: the centre crop of the whole image, its aspect ratio
    clamped to `ratio`. Every try of the batch is drawn at once, (B, tries, 4) uniforms from `generator`, so a box
    is never clamped and the draw is one set of batched ops on the device.
    """
    sizes = sizes.to(device=device, dtype=torch.float64)
    height, width = sizes[:, :1], sizes[:, 1:]  # (B, 1)
    u = torch.rand(sizes.shape[0], tries, 4, generator=generator, device=device, dtype=torch.float64)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    box_w = torch.round(torch.sqrt(area * aspect))
    box_h = torch.round(torch.sqrt(area / aspect))
    x0 = torch.floor(u[..., 2] * (width - box_w + 1))  # torch.randint(0, width - w + 1)'s distribution
    y0 = torch.floor(u[..., 3] * (height - box_h + 1))
    fits = (box_w > 0) & (box_w <= width) & (box_h > 0) & (box_h <= height)  # (B, tries)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first fitting try (0 if none)
    tried = torch.stack([x0, y0, box_w, box_h], dim=-1).gather(1, first.unsqueeze(-1).expand(-1, 1, 4)).squeeze(1)
    # torchvision's fallback: the whole image, cut to the nearest allowed aspect ratio, centred
    in_ratio = width / height
    fb_w = torch.where(in_ratio > ratio[1], torch.round(height * ratio[1]), width)
    fb_h = torch.where(in_ratio < ratio[0], torch.round(width / ratio[0]), height)
    fallback = torch.cat([torch.floor((width - fb_w) / 2), torch.floor((height - fb_h) / 2), fb_w, fb_h], dim=1)
    x0, y0, box_w, box_h = torch.where(fits.any(dim=1, keepdim=True), tried, fallback).unbind(-1)
    return torch.stack([x0, y0, x0 + box_w, y0 + box_h], dim=-1).float()
