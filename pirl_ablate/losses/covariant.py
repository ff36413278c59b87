"""Covariant pretext baselines: predict the transform from the transformed view (paper Tables 2 and 5).

    Jigsaw (Noroozi & Favaro 2016): logits = W [pool(res5(p_0)), ..., pool(res5(p_{P-1}))]   (B, |T|)
    Rotation (Gidaris et al. 2018): logits = W pool(res5(v_It))                              (B, 4)
    L = cross_entropy(logits, view.label)

The patches are concatenated in the view's permuted order, so the classifier sees which patch sits where. The
label space is the transform's (`view.num_classes`, |T|), so `bind` takes num_classes = |T|.
The classifiers are parameters of the loss: the optimizer must include `loss.parameters()`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pirl_ablate.errors import ConfigError
from pirl_ablate.losses.base import LossOutput, classification_output, device_of, seeded_linear
from pirl_ablate.losses.registry import register_loss


class _CovariantLoss(nn.Module):
    """A linear classifier on the trunk's pooled features of the transformed view, predicting `view.label`."""

    needs_image_view = False
    needs_transformed_view = True
    needs_labels = False
    label_space = "transform"  # bind's num_classes is the transform's |T|
    memory_bank = None
    wants_patches: bool

    def __init__(self, num_classes: int | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.classifier: nn.Linear | None = None

    def in_features(self, net: nn.Module) -> int:
        raise NotImplementedError

    def bind(self, dataset_size: int, net: nn.Module, num_classes: int | None,
             generator: torch.Generator) -> None:
        """Create the classifier (in_features -> |T|) on the network's device, initialised from `generator`."""
        classes = self.num_classes or num_classes
        if classes is None:
            raise ConfigError(f"{type(self).__name__}.num_classes is unknown: bind it to the transform's |T|")
        if self.classifier is None:
            self.num_classes = classes
            self.classifier = seeded_linear(self.in_features(net), classes, generator, device_of(net))

    def forward(self, net: nn.Module, image_view: Tensor | None, transformed, index: Tensor,
                labels: Tensor | None = None) -> LossOutput:
        """Cross-entropy of the classifier on `transformed` (a `View`) against `transformed.label` (B,)."""
        if self.classifier is None:
            raise RuntimeError("call loss.bind(dataset_size, net, num_classes, generator) before the first step")
        kind = "patch" if self.wants_patches else "image"
        if transformed.is_patches != self.wants_patches or transformed.label is None:
            raise ConfigError(f"{type(self).__name__} needs a transform that makes {kind} views with a label")
        if transformed.num_classes != self.num_classes:
            raise ConfigError(f"{type(self).__name__}.num_classes = {self.num_classes} but the transform has "
                              f"|T| = {transformed.num_classes}")
        feats = net.pooled_view(transformed)  # (B, P, feature_dim) or (B, feature_dim)
        return classification_output(self.classifier(feats.flatten(1)), transformed.label)


@register_loss("jigsaw", gin_name="JigsawLoss")
class JigsawLoss(_CovariantLoss):
    """Covariant Jigsaw: classify the permutation index from the P patches' pooled features, concatenated in
    the permuted order (P * feature_dim -> |T|, e.g. |T| = 100 / 2,000 / 10,000; paper Figure 7).

    Args:
        num_classes: |T|; None takes bind's (the transform's) value.
    """

    wants_patches = True

    def in_features(self, net: nn.Module) -> int:
        return net.num_patches * net.feature_dim


@register_loss("rotation", gin_name="RotationLoss")
class RotationLoss(_CovariantLoss):
    """Covariant Rotation: classify the rotation (4 classes) from the rotated image's pooled features.

    Args:
        num_classes: 4 (0, 90, 180, 270 degrees); None takes bind's value.
    """

    wants_patches = False

    def __init__(self, num_classes: int | None = 4):
        super().__init__(num_classes)

    def in_features(self, net: nn.Module) -> int:
        return net.feature_dim
