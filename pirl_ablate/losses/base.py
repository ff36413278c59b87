"""What every loss returns, and small pieces the loss families share."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class LossOutput:
    """`total`: the scalar to back-propagate; `parts`: detached scalars for logging (each term, accuracy, Z, ...)."""

    total: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)


def device_of(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


def seeded_linear(in_features: int, out_features: int, generator: torch.Generator,
                  device: torch.device) -> nn.Linear:
    """nn.Linear on `device` with PyTorch's default initialisation (U(-1/sqrt(in), 1/sqrt(in)) for weight and bias)
    drawn from `generator` instead of the global RNG."""
    layer = nn.Linear(in_features, out_features, device=device)
    bound = 1.0 / math.sqrt(in_features)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


def classification_output(logits: Tensor, target: Tensor) -> LossOutput:
    """Cross-entropy of `logits` (B, classes) against `target` (B,) long, with top-1 accuracy as the part "acc"."""
    loss = nn.functional.cross_entropy(logits, target)
    acc = (logits.detach().argmax(dim=1) == target).float().mean()
    return LossOutput(loss, {"cross_entropy": loss.detach(), "acc": acc})
