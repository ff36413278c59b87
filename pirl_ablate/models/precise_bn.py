"""Precise-BN: recompute batch-norm running statistics on clean images before evaluation.

During PIRL pre-training the 64 px jigsaw patches go through the same trunk as the full images, so the running
means and variances mix patch statistics into those of images (VISSL does the same). Before evaluating frozen
features the statistics can be re-estimated on N clean image batches: every BatchNorm's running mean/var is reset
and replaced by the equal-weight average of the per-batch statistics (PyTorch's `momentum=None` cumulative
average), the weights untouched. Evaluation results record which statistics were used: "bn": "precise" | "train".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn


@torch.no_grad()
def precise_bn(model: nn.Module, batches: Iterable[Tensor], forward: Callable[[Tensor], Any] | None = None) -> int:
    """Re-estimate the running statistics of every BatchNorm in `model` on `batches`; returns the images used.

    batches: images (B, C, H, W) float in [0, 1] on the model's device; `forward(images)` runs the model
    (default: `model(images)`; a `Backbone` needs only its deepest layer, e.g.
    `lambda x: backbone(x, layers=("res5",))`). The model's train/eval mode and BN momenta are restored after.
    With no batches nothing changes.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    forward = forward or model
    was_training = model.training
    momenta = [m.momentum for m in norms]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
    model.train()
    seen = 0
    try:
        for images in batches:
            forward(images)
            seen += len(images)
    finally:
        model.train(was_training)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        if seen == 0:
            for m, (mean, var, tracked) in zip(norms, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(tracked)
    return seen
