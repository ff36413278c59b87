"""losses: pure functions of embeddings (NCE / InfoNCE against a memory bank, PIRL's Eq. 5, cross-entropy), the
memory bank, the negative sources (memory bank, momentum queue, in-batch) and the partition estimate Z."""

from pirl_ablate.losses.classification import classification_loss
from pirl_ablate.losses.memory_bank import MemoryBank
from pirl_ablate.losses.nce import ESTIMATORS, bank_contrast, estimator, infonce_loss, mean_exp_score, nce_loss
from pirl_ablate.losses.negatives import (
    NEGATIVES,
    InBatchNegatives,
    Keys,
    MemoryBankNegatives,
    MomentumQueue,
    NegativeSource,
    build_negatives,
    register_negatives,
)
from pirl_ablate.losses.partition import PartitionEstimate
from pirl_ablate.losses.pirl import pirl_loss, pirl_queries, pirl_terms

__all__ = ["ESTIMATORS", "NEGATIVES", "InBatchNegatives", "Keys", "MemoryBank", "MemoryBankNegatives", "MomentumQueue",
           "NegativeSource", "PartitionEstimate", "bank_contrast", "build_negatives", "classification_loss",
           "estimator", "infonce_loss", "mean_exp_score", "nce_loss", "pirl_loss", "pirl_queries", "pirl_terms",
           "register_negatives"]
