"""The supervised baseline (the "supervised" rows of paper Tables 1-2): cross-entropy on the dataset's labels.

    logits = W pool(res5(v_I))      (B, classes);   L = cross_entropy(logits, labels)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pirl_ablate.losses import classification_loss
from pirl_ablate.methods.base import Method, register_method
from pirl_ablate.models import Backbone, seeded_linear


@register_method("supervised", gin_name="Supervised")
class Supervised(Method):
    """Supervised pre-training: a linear classifier feature_dim -> num_classes on the augmented image view.

    Args: num_classes: the dataset's number of classes; backbone, image_transform, generator: as `Method`.
    """

    views = ("image", "labels")

    def __init__(self, backbone: Backbone, image_transform: Any = None, *, generator: torch.Generator,
                 num_classes: int):
        super().__init__(backbone, image_transform=image_transform, generator=generator)
        self.num_classes = num_classes
        self.classifier = seeded_linear(backbone.feature_dim, num_classes, generator)

    def forward(self, images: Tensor, index: Tensor, labels: Tensor, generator: torch.Generator
                ) -> tuple[Tensor, dict[str, Tensor]]:
        return classification_loss(self.classifier(self.pooled(self.image_view(images, generator))), labels)
