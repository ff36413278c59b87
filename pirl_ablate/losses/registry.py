"""The loss registry: `@register_loss("name")`."""

from __future__ import annotations

from pirl_ablate.registry import Registry

LOSSES = Registry("loss")
register_loss = LOSSES.register
