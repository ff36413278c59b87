"""Covariant Rotation (Gidaris et al. 2018): classify the quarter turn of the rotated image (paper Table 5).

    logits = W pool(res5(v_It))                (B, 4)
    L = cross_entropy(logits, view.label)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pirl_ablate.errors import ConfigError
from pirl_ablate.losses import classification_loss
from pirl_ablate.methods.base import Method, register_method
from pirl_ablate.models import Backbone, seeded_linear


@register_method("rotation", gin_name="RotationMethod")
class RotationMethod(Method):
    """Covariant Rotation: a linear classifier (feature_dim -> |T|, 4 rotations) on the rotated image's features.

    Args: transform: a labelled image transform (rotation); backbone, generator, patch_bn_stats: as `Method`.
    """

    views = ("transformed",)

    def __init__(self, backbone: Backbone, transform: Any, *, generator: torch.Generator,
                 patch_bn_stats: bool = True):
        classes = getattr(transform, "num_classes", None)
        if getattr(transform, "produces_patches", False) or classes is None:
            raise ConfigError("the rotation method needs a transform that makes image views with a label (rotation)")
        super().__init__(backbone, transform=transform, generator=generator, patch_bn_stats=patch_bn_stats)
        self.classifier = seeded_linear(backbone.feature_dim, classes, generator)

    def forward(self, images: Tensor, index: Tensor, labels: Tensor, generator: torch.Generator
                ) -> tuple[Tensor, dict[str, Tensor]]:
        view = self.transform(images, generator)
        return classification_loss(self.classifier(self.pooled(view.data)), view.label)
