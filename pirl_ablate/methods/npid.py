"""NPID (Wu et al. 2018): PIRL's image term alone (lambda = 0); no transformed view is made or embedded.

NPID++ (paper Section 4) is this method with num_negatives = 32,000 and a longer schedule: gin/npid_pp.gin.
"""

from __future__ import annotations

from typing import Any

import torch

from pirl_ablate.losses import MemoryBank, NegativeSource
from pirl_ablate.methods.base import register_method
from pirl_ablate.methods.pirl import PIRL
from pirl_ablate.models import Backbone


@register_method("npid", gin_name="NPID")
class NPID(PIRL):
    """NPID: NCE of f(v_I) against a memory bank (PIRL with lambda = 0).

    Args (gin: `NPID.*`): num_negatives N (4,096 as in NPID); the others (negatives: the source) as PIRL.
    """

    def __init__(self, backbone: Backbone, memory_bank: MemoryBank | None = None, image_transform: Any = None, *,
                 generator: torch.Generator, negatives: NegativeSource | None = None, tau: float = 0.07,
                 num_negatives: int = 4096, estimator: str = "nce", z: str = "fixed", z_momentum: float = 0.99,
                 embed_dim: int = 128, mlp_heads: bool = False, patch_bn_stats: bool = True):
        super().__init__(backbone, memory_bank, None, image_transform, generator=generator, negatives=negatives,
                         lambda_=0.0, tau=tau, num_negatives=num_negatives, estimator=estimator, z=z,
                         z_momentum=z_momentum, embed_dim=embed_dim, mlp_heads=mlp_heads, num_patches=0,
                         patch_bn_stats=patch_bn_stats)
