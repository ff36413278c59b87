"""evaluate: linear probe per layer, weighted kNN, invariance (Figure 4) and semi-supervised fine-tuning of a run."""

from pirl_ablate.evaluate.features import LAYERS, FeatureCache, cached_features, extract_features, pooled_grid
from pirl_ablate.evaluate.invariance import invariance_distances, plot_invariance_histograms
from pirl_ablate.evaluate.knn import knn_scores
from pirl_ablate.evaluate.linear import topk_accuracy, train_linear_probe
from pirl_ablate.evaluate.precise_bn import precise_bn
from pirl_ablate.evaluate.semisup import balanced_subset, finetune

__all__ = ["LAYERS", "FeatureCache", "balanced_subset", "cached_features", "extract_features", "finetune",
           "invariance_distances", "knn_scores", "plot_invariance_histograms", "pooled_grid", "precise_bn",
           "topk_accuracy", "train_linear_probe"]
