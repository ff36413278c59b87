"""The loss registry: `@register_loss("name")`, and `build_loss()` for gin."""

from __future__ import annotations

import gin
from torch import nn

from pirl_ablate.registry import Registry

LOSSES = Registry("loss")
register_loss = LOSSES.register


@gin.configurable
def build_loss(name: str | None = None) -> nn.Module:
    """The loss registered as `name` (gin: `build_loss.name = 'npid'`; default "pirl"), built with its bindings."""
    return LOSSES.get(name or "pirl")()
