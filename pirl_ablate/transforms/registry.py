"""The pretext-transform registry: `@register_transform("name")` and `build_transform("a+b")`."""

from __future__ import annotations

from pirl_ablate.registry import Registry

TRANSFORMS = Registry("transform")
register_transform = TRANSFORMS.register
