"""The supervised baseline: cross-entropy of a linear classifier on the image's pooled res5 features."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pirl_ablate.errors import ConfigError
from pirl_ablate.losses.base import LossOutput, classification_output, device_of, seeded_linear
from pirl_ablate.losses.registry import register_loss


@register_loss("supervised", gin_name="SupervisedLoss")
class SupervisedLoss(nn.Module):
    """Supervised pre-training (the "supervised" rows of paper Tables 1-2): feature_dim -> classes, cross-entropy
    against the dataset labels. bind's num_classes is the dataset's number of classes."""

    needs_image_view = True
    needs_transformed_view = False
    needs_labels = True
    label_space = "dataset"
    memory_bank = None

    def __init__(self):
        super().__init__()
        self.classifier: nn.Linear | None = None

    def bind(self, dataset_size: int, net: nn.Module, num_classes: int | None,
             generator: torch.Generator) -> None:
        """Create the classifier on the network's device, initialised from `generator`."""
        if num_classes is None:
            raise ConfigError("the supervised loss needs the dataset's number of classes")
        if self.classifier is None:
            self.classifier = seeded_linear(net.feature_dim, num_classes, generator, device_of(net))

    def forward(self, net: nn.Module, image_view: Tensor, transformed, index: Tensor,
                labels: Tensor | None = None) -> LossOutput:
        """Cross-entropy of the classifier on `image_view` (B, C, H, W) against `labels` (B,) long."""
        if self.classifier is None:
            raise RuntimeError("call loss.bind(dataset_size, net, num_classes, generator) before the first step")
        return classification_output(self.classifier(net.pooled(image_view)), labels)
