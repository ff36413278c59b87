"""`pirl-ablate show-transform NAME --out FILE.png`: a few images next to the views a transform makes of them
(drawn by `pirl_ablate.transforms.show`).

The images come from the configured dataset: `--dataset`, else the `train.dataset` the --gin files bind, else
Fashion-MNIST (the smoke default). They are resized to the run's input size, the `train.image_size` the --gin files
bind (32 px with gin/pirl_jigsaw.gin: 8 px jigsaw patches, as smoke training sees them), else 256 px, the input the
transforms' default (paper) sizes are made for; the title says which.
"""

from __future__ import annotations

import argparse

import torch

from pirl_ablate import config
from pirl_ablate.console import info
from pirl_ablate.errors import UserError
from pirl_ablate.gin_edge import GIN
from pirl_ablate.runs import atomic_write
from pirl_ablate.transforms.registry import build_transform
from pirl_ablate.transforms.show import SIZE, apply_stages, load_images, render

DEFAULT_DATASET = "fashion_mnist"  # pirl_ablate.train.pretrain's default


def run(args: argparse.Namespace) -> int:
    """Parse --gin/--bind, build the transform, draw `args.images` images and write the PNG."""
    if args.images < 1:
        raise UserError(f"--images {args.images}: need at least one image")
    config.parse(args.gin, args.bind)
    dataset = args.dataset or configured_dataset()
    size, scale = configured_size()
    transform = build_transform(args.name, configuration=GIN)
    generator = torch.Generator().manual_seed(args.seed)
    images = load_images(dataset, args.images, generator, size, configuration=GIN)
    stages = apply_stages(args.name, transform, images, generator)
    png = render(images, stages, title=f"{args.name} on {dataset}, {size} px images ({scale}), seed {args.seed}")
    atomic_write(args.out, lambda fh: fh.write(png))
    info(f"wrote {args.out}")
    return 0


def configured_dataset() -> str:
    """The --gin files' `train.dataset`, else DEFAULT_DATASET."""
    return str(config.bound_kwargs("train").get("dataset", DEFAULT_DATASET))


def configured_size() -> tuple[int, str]:
    """The input size the views are drawn at and where it comes from: the --gin files' `train.image_size`, else
    SIZE (the transforms' defaults are the paper's, made for 256 px inputs)."""
    size = config.bound_kwargs("train").get("image_size")
    if isinstance(size, int):
        return size, "train.image_size of the --gin files"
    return SIZE, "the paper's scale; --gin gin/pirl_jigsaw.gin draws the smoke scale"
