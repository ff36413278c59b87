"""`jigsaw`: PIRL's jigsaw view, P = grid^2 patches sampled straight from the source image in permuted order.

Recipe (paper Section 4.1, VISSL's PIRL config): a random crop covering >= 60% of the whole image (drawn as
torchvision's RandomResizedCrop draws it: 10 tries, then the centre crop) is resized to
crop_size^2 (255), cut into a grid x grid (3 x 3) of cells (85 px), and a patch_size^2 (64) patch is taken at a
uniform integer offset inside each cell ("patch jitter", 0..21 px). Each patch then gets its own photometric
augmentation: colour jitter 0.4/0.4/0.4, hue 0.2, grayscale p = 0.2, horizontal flip p = 0.5, and (with
`random_photometric_p`, VISSL's 0.66) VISSL's random photometric step.

The crop, the cell and the jitter compose into one box per patch in input pixels, so all B x P patches come from
one `resample_boxes` call (bilinear sampling with torchvision's `roi_align`) without building the 255 px
intermediate.

Order convention: `data[:, j]` is the patch of grid cell `perm[:, j]` (cells numbered row-major), i.e. patches are
returned already shuffled and the g head concatenates them in the order given. `boxes[:, j]` and `flip[:, j]` describe
`data[:, j]`. The label is `perm_index`: the index of `perm` in T (its lexicographic rank when T is all P!).

Small inputs: the defaults are the paper's for 256 px images. `crop_size=None` fits the crop to the input (the
largest multiple of `grid` not above min(H, W): 255 for 256 px, 63 for 64 px, 30 for 32 px) and `patch_size=None`
keeps the paper's patch/cell ratio 64/85 (patches of 64, 16 and 8 px). In gin:
`jigsaw.crop_size = None` and `jigsaw.patch_size = None`, or explicit sizes such as 30 and 8 for 32 px inputs.
"""

from __future__ import annotations

import math

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
from pirl_ablate.transforms.permutations import hamming_set, lehmer_rank, random_permutations
from pirl_ablate.transforms.photometric import (
    COLOUR_KEYS,
    RANDOM_PHOTOMETRIC_KEYS,
    apply_colour,
    apply_random_photometric,
    sample_colour,
    sample_random_photometric,
)
from pirl_ablate.transforms.registry import register_transform

PAPER_CROP, PAPER_CELL, PAPER_PATCH = 255, 85, 64


@register_transform("jigsaw")
class Jigsaw(Transform):
    """PIRL's jigsaw: >=60% crop, grid x grid jittered patches, per-patch photometric, returned in permuted order."""

    name = "jigsaw"
    produces_patches = True

    def __init__(self, crop_size: int | None = PAPER_CROP, grid: int = 3, patch_size: int | None = PAPER_PATCH,
                 crop_scale: tuple[float, float] = (0.6, 1.0), crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 num_permutations: int | None = None, permutation_seed: int = 0, photometric: bool = True,
                 flip: bool = True, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 hue: float = 0.2, grayscale_p: float = 0.2, random_photometric_p: float = 0.0):
        """crop_size: side of the resized crop (None: fit the input); grid: cells per side; patch_size: patch side
        (None: 64/85 of a cell); crop_scale/crop_ratio: area fraction and aspect ratio of the crop;
        num_permutations: None for all grid^2! permutations, K for a maximal-Hamming set drawn from
        permutation_seed; photometric: per-patch colour jitter (brightness, contrast, saturation, hue) and
        grayscale (grayscale_p); flip: per-patch horizontal flip p = 0.5; random_photometric_p: VISSL's random
        photometric step per patch with this probability (0: off; VISSL: 0.66), after the colour jitter."""
        if grid < 1:
            raise TransformInputError(f"jigsaw: grid={grid} must be >= 1")
        if num_permutations is None and grid * grid > 20:
            raise TransformInputError(
                f"jigsaw: grid={grid} with num_permutations=None labels {grid * grid}! permutations, more than a 64-bit"
                f" index holds; set num_permutations")
        if crop_size is not None and crop_size % grid:
            raise TransformInputError(
                f"jigsaw: grid={grid} does not divide crop_size={crop_size} (a {crop_size}x{crop_size} crop into "
                f"{grid}x{grid} cells); use a multiple of {grid}, e.g. crop_size={crop_size // grid * grid}")
        if crop_size is not None and patch_size is not None and patch_size > crop_size // grid:
            raise TransformInputError(
                f"jigsaw: patch_size={patch_size} does not fit a {crop_size // grid}x{crop_size // grid} cell "
                f"(crop_size={crop_size}, grid={grid}); use patch_size <= {crop_size // grid}")
        self.crop_size = crop_size
        self.grid = grid
        self.patch_size = patch_size
        self.crop_scale = tuple(crop_scale)
        self.crop_ratio = tuple(crop_ratio)
        self.num_permutations = num_permutations
        self.permutation_seed = permutation_seed
        self.photometric = photometric
        self.flip = flip
        self.colour = {"brightness": brightness, "contrast": contrast, "saturation": saturation, "hue": hue,
                       "grayscale_p": grayscale_p}
        self.random_photometric_p = random_photometric_p
        patches = grid * grid
        self._permutations = (None if num_permutations is None
                              else hamming_set(num_permutations, patches, permutation_seed))
        self.num_classes = math.factorial(patches) if num_permutations is None else num_permutations

    @property
    def permutations(self) -> Tensor | None:
        """(K, P) long: the permutation set T, or None when T is all P! permutations."""
        return self._permutations

    def sizes(self, images_shape: torch.Size) -> tuple[int, int, int]:
        """(crop, cell, patch) side lengths in pixels for inputs of `images_shape` (B, C, H, W)."""
        side = min(images_shape[-2:])
        crop = self.crop_size if self.crop_size is not None else side // self.grid * self.grid
        cell = crop // self.grid
        patch = self.patch_size if self.patch_size is not None else max(1, round(cell * PAPER_PATCH / PAPER_CELL))
        return crop, cell, patch

    def check(self, images: Tensor) -> None:
        """Images of their own sizes (an ImageBatch) need explicit sizes (fitting to the canvas would make the patch
        size depend on the batch's largest image) and may be smaller than the crop (it is resampled from each
        image's box, as torchvision's RandomResizedCrop(crop_size) upsamples a small image)."""
        super().check(images)
        own_sizes = isinstance(images, ImageBatch)
        if own_sizes and (self.crop_size is None or self.patch_size is None):
            raise TransformInputError(
                f"jigsaw: crop_size={self.crop_size}, patch_size={self.patch_size} fit the crop to the input, but "
                f"these images have their own sizes (canvas {shape_str(images)}); bind jigsaw.crop_size and "
                f"jigsaw.patch_size (the paper's: 255 and 64)")
        crop, cell, patch = self.sizes(images.shape)
        if crop > min(images.shape[-2:]) and not own_sizes:
            raise TransformInputError(
                f"jigsaw: crop_size={crop} needs images of at least {crop}x{crop}, got shape {shape_str(images)}; "
                f"bind jigsaw.crop_size = None to fit the crop to the input, or a smaller crop_size")
        if cell < 1 or patch > cell:
            raise TransformInputError(
                f"jigsaw: patch_size={patch} does not fit a {cell}x{cell} cell of a grid={self.grid} crop of "
                f"{crop} px from images of shape {shape_str(images)}")

    def sample(self, shape: torch.Size, generator: torch.Generator, device: torch.device,
               sizes: Tensor | None = None) -> dict[str, Tensor]:
        """perm (B, P), perm_index (B,), crop (B, 4) inside each image's `sizes` (torchvision's RandomResizedCrop
        draw), boxes (B, P, 4), [flip (B, P)], [colour factors (B, P)],
        [random photometric draws (B, P)]."""
        batch = shape[0]
        patches = self.grid * self.grid
        crop, cell, patch = self.sizes(shape)
        sizes = sizes if sizes is not None else full_sizes(shape, device)
        crop_box = random_resized_boxes(sizes, self.crop_scale, self.crop_ratio, generator, device)
        if self._permutations is None:
            perm = random_permutations(batch, patches, generator, device)
            perm_index = lehmer_rank(perm)
        else:
            table = self._permutations_on(device)
            perm_index = torch.randint(len(table), (batch,), generator=generator, device=device)
            perm = table[perm_index]
        offset = torch.randint(cell - patch + 1, (batch, patches, 2), generator=generator, device=device)
        # patch j: cell perm[j] of the crop_size^2 crop, at its jitter offset, mapped back into the input
        left = (perm % self.grid) * cell + offset[..., 0]
        top = torch.div(perm, self.grid, rounding_mode="floor") * cell + offset[..., 1]
        x0, y0, x1, y1 = crop_box.unsqueeze(1).unbind(-1)
        sx, sy = (x1 - x0) / crop, (y1 - y0) / crop
        boxes = torch.stack([x0 + left * sx, y0 + top * sy, x0 + (left + patch) * sx, y0 + (top + patch) * sy], -1)
        params = {"perm": perm, "perm_index": perm_index, "crop": crop_box, "boxes": boxes}
        if self.flip:
            params["flip"] = torch.rand(batch, patches, generator=generator, device=device) < 0.5
        if self.photometric:
            params.update(sample_colour((batch, patches), generator, device, **self.colour))
        if self.random_photometric_p > 0:
            params.update(sample_random_photometric((batch, patches), generator, device, p=self.random_photometric_p))
        return params

    def _permutations_on(self, device: torch.device) -> Tensor:
        """The permutation set on `device`, copied there once (a host-to-device copy every batch would wait for
        the device each time)."""
        if self._permutations.device != torch.device(device):
            self._permutations = self._permutations.to(device)
        return self._permutations

    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        """images (B, C, H, W) -> patches (B, P, C, patch, patch) in permuted order."""
        crop, _, patch = self.sizes(images.shape)
        samples = downscale_samples(max(images.shape[-2:]), crop)  # the largest crop box over its resized side
        out = resample_boxes(images, params["boxes"], (patch, patch), params.get("flip"), samples)
        if self.photometric:
            batch, patches = out.shape[:2]
            flat = out.view(batch * patches, *out.shape[2:])
            colour = {k: params[k].reshape(-1) for k in COLOUR_KEYS}
            out = apply_colour(flat, colour).view(out.shape)
        if self.random_photometric_p > 0:
            flat = out.reshape(-1, *out.shape[2:])
            draws = {k: params[k].reshape(-1) for k in RANDOM_PHOTOMETRIC_KEYS}
            out = apply_random_photometric(flat, draws).view(out.shape)
        return out

    def label(self, params: dict[str, Tensor]) -> Tensor:
        return params["perm_index"]
