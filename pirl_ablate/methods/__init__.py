"""methods: one file per pre-training method (its heads, the views it makes, its loss call) on `Method`."""

from pirl_ablate.methods.base import METHODS, Method, build_method, register_method
from pirl_ablate.methods.imported import Imported
from pirl_ablate.methods.jigsaw import JigsawMethod
from pirl_ablate.methods.moco import MoCoV2
from pirl_ablate.methods.npid import NPID
from pirl_ablate.methods.pirl import PIRL
from pirl_ablate.methods.rotation import RotationMethod
from pirl_ablate.methods.supervised import Supervised

__all__ = ["METHODS", "NPID", "PIRL", "Imported", "JigsawMethod", "Method", "MoCoV2", "RotationMethod", "Supervised",
           "build_method", "register_method"]
