"""Chains of transforms, "a+b+c": each part transforms the previous part's view (paper Table 5: rotation+jigsaw)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from pirl_ablate.errors import ConfigError
from pirl_ablate.transforms.base import TransformInputError, View, shape_str

TransformFn = Callable[[Tensor, torch.Generator], View]


class Compose:
    """Apply `parts` left to right; only the last may turn images into patches.

    The result carries every part's parameters under "<part name>.<key>" (e.g. "rotation.rotation",
    "jigsaw.perm_index"). The label is the mixed-radix index of the parts' labels, first part most significant:
    for rotation+jigsaw, label = rotation * |T_jigsaw| + perm_index, and num_classes is the product of the parts'
    (a part without a label counts as one class). num_classes is None when no part has a label. Each part's
    parameters refer to its own input: the jigsaw boxes of rotation+jigsaw are in the rotated image's pixels.
    """

    def __init__(self, parts: Sequence[tuple[str, TransformFn]]):
        names = [name for name, _ in parts]
        for name, transform in parts[:-1]:
            if getattr(transform, "produces_patches", False):
                raise ConfigError(f"transform `{'+'.join(names)}`: `{name}` turns images into patches, so it must "
                                  f"come last")
        if len(set(names)) != len(names):
            raise ConfigError(f"transform `{'+'.join(names)}`: each part may appear once")
        self.parts = list(parts)
        self.name = "+".join(names)
        self.produces_patches = bool(getattr(parts[-1][1], "produces_patches", False))

    @property
    def num_classes(self) -> int | None:
        sizes = [getattr(t, "num_classes", None) for _, t in self.parts]
        return None if all(n is None for n in sizes) else math.prod(n or 1 for n in sizes)

    def __call__(self, images: Tensor, generator: torch.Generator) -> View:
        """images (B, C, H, W) float; generator on images.device -> View of the last part with every part's draws."""
        params: dict[str, Tensor] = {}
        label: Tensor | None = None
        data = images
        for i, (name, transform) in enumerate(self.parts):
            if i and data.dim() != 4:
                raise TransformInputError(f"transform `{self.name}`: `{self.parts[i - 1][0]}` returned a patch view "
                                          f"{shape_str(data)}, which `{name}` cannot take")
            view = transform(data, generator)
            data = view.data
            params.update({f"{name}.{k}": v for k, v in view.params.items()})
            if view.num_classes is not None:
                part = view.label if view.label is not None else torch.zeros(len(data), dtype=torch.long,
                                                                             device=data.device)
                label = part if label is None else label * view.num_classes + part
        return View(data=data, params=params, label=label, num_classes=self.num_classes)

    def __repr__(self) -> str:
        return f"Compose({self.parts!r})"
