"""`pirl-ablate show-transform NAME --out FILE.png`: a few images next to the views a transform makes of them.

Each row is one image: the input, then its view. A patch view is drawn as a grid of its patches in the order the
network receives them (`data[:, j]` at position j, row-major), each patch captioned with the grid cell it came from,
and the row titled with the labels (permutation index, rotation in degrees, composed label).
"""

from __future__ import annotations

import argparse
import io
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from pirl_ablate import config
from pirl_ablate.console import info
from pirl_ablate.errors import UserError
from pirl_ablate.runs import atomic_write
from pirl_ablate.transforms.base import View
from pirl_ablate.transforms.registry import build_transform

GAP = 4  # pixels between drawn patches
SIZE = 256  # the images are resized to 256 px, the input size the paper's jigsaw sizes are made for


def show_transform_command(args: argparse.Namespace) -> int:
    """CLI handler: parse --gin/--bind, build the transform, draw `args.images` images and write the PNG."""
    if args.images < 1:
        raise UserError(f"--images {args.images}: need at least one image")
    config.parse(args.gin, args.bind)
    transform = build_transform(args.name)
    generator = torch.Generator().manual_seed(args.seed)
    images = load_images(args.dataset, args.images, generator)
    view = transform(images, generator)
    png = render(images, view, title=f"{args.name} ({args.dataset}, seed {args.seed})")
    atomic_write(args.out, lambda fh: fh.write(png))
    info(f"wrote {args.out}")
    return 0


def load_images(dataset: str, count: int, generator: torch.Generator) -> Tensor:
    """(count, 3, 256, 256) float in [0, 1]: images drawn at random from `dataset`'s test split.

    "digits" is scikit-learn's 8 x 8 handwritten digits (bundled, no download); any other name goes through the
    dataset registry (`pirl-ablate list datasets`).
    """
    if dataset == "digits":
        from sklearn.datasets import load_digits

        pixels = torch.from_numpy(load_digits().images).float().div(16).unsqueeze(1)  # (1797, 1, 8, 8)
        chosen = pixels[torch.randperm(len(pixels), generator=generator)[:count]]
    else:
        from pirl_ablate.data.registry import build_dataset

        data = build_dataset(dataset, split="test")
        picks = torch.randperm(len(data), generator=generator)[:count].tolist()
        chosen = torch.stack([data[i][0] for i in picks]).float().div(255)
    chosen = F.interpolate(chosen, size=(SIZE, SIZE), mode="bilinear", align_corners=False).clamp(0, 1)
    return chosen.expand(-1, 3, -1, -1) if chosen.shape[1] == 1 else chosen


def describe(view: View, i: int) -> str:
    """The labels of sample i as a caption: covariant label, permutation index, rotation."""
    parts = []
    if view.label is not None:
        parts.append(f"label {int(view.label[i])} of {view.num_classes}")
    for key, value in view.params.items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "rotation":
            parts.append(f"rotated {90 * int(value[i])}°")
        elif leaf == "perm_index":
            parts.append(f"permutation #{int(value[i])}")
    return ", ".join(parts)


def render(images: Tensor, view: View, title: str) -> bytes:
    """PNG bytes: one row per image, the input then its view (patches in the order the network sees them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = images.shape[0]
    perm = next((v for k, v in view.params.items() if k.rsplit(".", 1)[-1] == "perm"), None)
    fig, axes = plt.subplots(count, 2, figsize=(6.5, 3.2 * count), squeeze=False, layout="constrained")
    fig.suptitle(title)
    for i in range(count):
        axes[i, 0].imshow(_to_numpy(images[i]))
        axes[i, 0].set_title("input", fontsize="small")
        axes[i, 1].set_title(describe(view, i) or "view", fontsize="small")
        if view.is_patches:
            axes[i, 1].imshow(_to_numpy(tile(view.data[i])))
            patches, _, h, w = view.data[i].shape
            grid = math.ceil(patches ** 0.5)
            for j in range(patches):
                caption = f"cell {int(perm[i, j])}" if perm is not None else f"patch {j}"
                axes[i, 1].text((j % grid) * (w + GAP) + 1, (j // grid) * (h + GAP) + 1, caption, fontsize="x-small",
                                va="top", color="yellow", backgroundcolor=(0, 0, 0, 0.5))
        else:
            axes[i, 1].imshow(_to_numpy(view.data[i]))
        for ax in axes[i]:
            ax.set_axis_off()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def tile(patches: Tensor) -> Tensor:
    """(P, C, h, w) -> (C, H, W): patch j at row j // grid, column j % grid of a white-gapped square grid."""
    count, channels, h, w = patches.shape
    grid = math.ceil(count ** 0.5)
    out = patches.new_ones(channels, grid * (h + GAP) - GAP, grid * (w + GAP) - GAP)
    for j in range(count):
        top, left = (j // grid) * (h + GAP), (j % grid) * (w + GAP)
        out[:, top:top + h, left:left + w] = patches[j]
    return out


def _to_numpy(image: Tensor):
    return image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
