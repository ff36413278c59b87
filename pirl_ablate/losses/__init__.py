"""losses: PIRL and NPID against a memory bank, covariant Jigsaw / Rotation, and the supervised baseline."""

from pirl_ablate.losses.base import LossOutput
from pirl_ablate.losses.covariant import JigsawLoss, RotationLoss
from pirl_ablate.losses.memory_bank import MemoryBank
from pirl_ablate.losses.nce import bank_contrast, infonce_loss, nce_loss
from pirl_ablate.losses.pirl import NPIDLoss, PIRLLoss
from pirl_ablate.losses.registry import LOSSES, build_loss, register_loss
from pirl_ablate.losses.supervised import SupervisedLoss

__all__ = ["LOSSES", "JigsawLoss", "LossOutput", "MemoryBank", "NPIDLoss", "PIRLLoss", "RotationLoss",
           "SupervisedLoss", "bank_contrast", "build_loss", "infonce_loss", "nce_loss", "register_loss"]
