"""models: the ResNet trunk (`Backbone`), the heads methods build on it and the momentum (key) encoder."""

from pirl_ablate.models.backbone import LAYERS, Backbone, pooled_res5
from pirl_ablate.models.heads import PatchHead, frozen_bn_stats, projection, seeded_linear
from pirl_ablate.models.momentum import ImageEncoder, MomentumEncoder
from pirl_ablate.models.precise_bn import precise_bn

__all__ = ["LAYERS", "Backbone", "ImageEncoder", "MomentumEncoder", "PatchHead", "frozen_bn_stats", "pooled_res5",
           "precise_bn", "projection", "seeded_linear"]
