"""models: the ResNet trunk (`Backbone`) and the heads methods build on it."""

from pirl_ablate.models.backbone import LAYERS, Backbone
from pirl_ablate.models.heads import PatchHead, frozen_bn_stats, projection, seeded_linear
from pirl_ablate.models.precise_bn import precise_bn

__all__ = ["LAYERS", "Backbone", "PatchHead", "frozen_bn_stats", "precise_bn", "projection", "seeded_linear"]
