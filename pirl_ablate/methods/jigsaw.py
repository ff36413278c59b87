"""Covariant Jigsaw (Noroozi & Favaro 2016): classify the permutation from the patches (paper Tables 2 and 5).

    logits = W [pool(res5(p_0)), ..., pool(res5(p_{P-1}))]      (B, |T|), patches in the permuted order
    L = cross_entropy(logits, view.label)                       |T| = 100 / 2,000 / 10,000 (paper Figure 7)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pirl_ablate.errors import ConfigError
from pirl_ablate.losses import classification_loss
from pirl_ablate.methods.base import Method, register_method
from pirl_ablate.models import Backbone, seeded_linear


@register_method("jigsaw", gin_name="JigsawMethod")
class JigsawMethod(Method):
    """Covariant Jigsaw: a linear classifier (P * feature_dim -> |T|) on the concatenated pooled patch features.

    Args: transform: a labelled patch transform (jigsaw; |T| is its `num_classes`); num_patches: P (9);
    backbone, generator (draws the classifier's initialisation), patch_bn_stats: as `Method`.
    """

    views = ("transformed",)

    def __init__(self, backbone: Backbone, transform: Any, *, generator: torch.Generator, num_patches: int = 9,
                 patch_bn_stats: bool = True):
        classes = getattr(transform, "num_classes", None)
        if not getattr(transform, "produces_patches", False) or classes is None:
            raise ConfigError("the jigsaw method needs a transform that makes patch views with a label (jigsaw)")
        super().__init__(backbone, transform=transform, generator=generator, patch_bn_stats=patch_bn_stats)
        self.num_patches = num_patches
        self.classifier = seeded_linear(num_patches * backbone.feature_dim, classes, generator)

    def forward(self, images: Tensor, index: Tensor, labels: Tensor, generator: torch.Generator
                ) -> tuple[Tensor, dict[str, Tensor]]:
        view = self.transform(images, generator)
        feats = self.pooled_view(view)  # (B, P, feature_dim)
        if feats.shape[1] != self.num_patches:
            raise ConfigError(f"heads.num_patches = {self.num_patches} but the transform makes {feats.shape[1]} "
                              f"patches: bind heads.num_patches = {feats.shape[1]}")
        return classification_loss(self.classifier(feats.flatten(1)), view.label)
