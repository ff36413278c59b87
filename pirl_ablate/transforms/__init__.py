"""Pretext transforms: batched on the batch's device, parameters drawn first, registered by name.

`build_transform("rotation+jigsaw")(images, generator) -> View`; see base.py for the interface.
"""

from pirl_ablate.transforms.base import (
    CPU_CHUNK,
    ImageBatch,
    Transform,
    TransformInputError,
    View,
    centre_squares,
    image_sizes,
    with_sizes,
)
from pirl_ablate.transforms.compose import Compose
from pirl_ablate.transforms.image import ImageView
from pirl_ablate.transforms.jigsaw import Jigsaw
from pirl_ablate.transforms.kornia_aug import KorniaTransform, register_kornia
from pirl_ablate.transforms.moco_v2 import MoCoV2View
from pirl_ablate.transforms.permutations import hamming_set, lehmer_rank
from pirl_ablate.transforms.registry import TRANSFORMS, build_transform, register_transform
from pirl_ablate.transforms.rotation import Rotation

__all__ = ["CPU_CHUNK", "TRANSFORMS", "Compose", "ImageBatch", "ImageView", "Jigsaw", "KorniaTransform", "MoCoV2View",
           "Rotation", "Transform", "TransformInputError", "View", "build_transform", "centre_squares", "hamming_set",
           "image_sizes", "lehmer_rank", "register_kornia", "register_transform", "with_sizes"]
