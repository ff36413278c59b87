"""models: the ResNet trunk (`Backbone`) and PIRL's network with its heads (`PIRLNet`)."""

from pirl_ablate.models.backbone import LAYERS, Backbone
from pirl_ablate.models.network import PIRLNet, build_network, frozen_bn_stats, projection

__all__ = ["LAYERS", "Backbone", "PIRLNet", "build_network", "frozen_bn_stats", "projection"]
