"""A trunk brought in from elsewhere (`pirl-ablate import`): published weights, no heads, no pretext loss.

Its run folder holds a checkpoint like a trained run's, so every protocol, `eval` and `report` loads it through
`pirl_ablate.checkpoint.load_method` as it loads the random-init baseline: a method whose trunk is all there is.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pirl_ablate.errors import ConfigError
from pirl_ablate.methods.base import Method, register_method
from pirl_ablate.models import Backbone


@register_method("imported", configurable=False)
class Imported(Method):
    """Published ResNet weights (VISSL's model zoo, torchvision's) as a trunk to evaluate, not to train.

    Args: source: the checkpoint file and its format, as given to `pirl-ablate import` (recorded); backbone,
    generator: as `Method`.
    """

    def __init__(self, backbone: Backbone, *, generator: torch.Generator | None = None, source: str = ""):
        super().__init__(backbone, generator=generator)
        self.source = source

    def forward(self, images: Tensor, index: Tensor, labels: Tensor, generator: torch.Generator
                ) -> tuple[Tensor, dict[str, Tensor]]:
        raise ConfigError(f"an imported trunk ({self.source}) has no pretext loss to train; "
                          "evaluate it with `pirl-ablate eval`")
