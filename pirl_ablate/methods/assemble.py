"""`assemble_method`: a registered method built from its parts, the one place that asks which parts it takes.

The training builder (`pirl_ablate.build`: parts made from the gin config) and checkpoint loading
(`pirl_ablate.checkpoint.load_method`: parts made from a run's record) both assemble methods here, so a method with
a new kind of part is built the same way for training and for evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from pirl_ablate.methods.base import METHODS, Method, build_method
from pirl_ablate.models import Backbone

# The parts a caller builds on demand, in the order they are built (each may draw from the global RNG as it is
# initialised, so the order is part of a run's reproducibility).
BUILT_PARTS = ("negatives", "memory_bank", "transform", "image_transform")


def assemble_method(name: str, backbone: Backbone, generator: torch.Generator, part: Callable[[str], Any],
                    hyperparameters: Mapping[str, Any]) -> Method:
    """The method registered as `name` on `backbone`, with the method's own `generator`.

    part: builds the named part ("negatives", "memory_bank", "transform", "image_transform"), or returns None where
        the run has none; called only for the parts the method's constructor takes, in `BUILT_PARTS` order, and for
        the memory bank only when the source of negatives uses one (a method without a source: always).
    hyperparameters: constructor keyword arguments (a run's recorded `Method.config`, head settings, num_classes);
        those the method does not take are left out.
    """
    params = METHODS.entry(name).params
    kwargs: dict[str, Any] = {"backbone": backbone, "generator": generator}
    for key in BUILT_PARTS:
        if key not in params:
            continue
        if key == "memory_bank" and not getattr(kwargs.get("negatives"), "uses_memory_bank", True):
            continue
        built = part(key)
        if built is not None:
            kwargs[key] = built
    return build_method(name, **kwargs, **{k: v for k, v in hyperparameters.items() if k in params})
