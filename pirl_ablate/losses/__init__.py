"""losses: pure functions of embeddings (NCE / InfoNCE against a memory bank, PIRL's Eq. 5, cross-entropy), the
memory bank and the partition estimate Z."""

from pirl_ablate.losses.classification import classification_loss
from pirl_ablate.losses.memory_bank import MemoryBank
from pirl_ablate.losses.nce import ESTIMATORS, bank_contrast, estimator, infonce_loss, mean_exp_score, nce_loss
from pirl_ablate.losses.partition import PartitionEstimate
from pirl_ablate.losses.pirl import pirl_loss

__all__ = ["ESTIMATORS", "MemoryBank", "PartitionEstimate", "bank_contrast", "classification_loss", "estimator",
           "infonce_loss", "mean_exp_score", "nce_loss", "pirl_loss"]
