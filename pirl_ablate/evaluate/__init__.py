"""evaluate: a run's frozen features under each protocol: linear probe per layer (online, data parallel, or on
cached features), weighted kNN, invariance (Figure 4), semi-supervised fine-tuning, linear SVMs and low-shot SVMs on
pooled features (VOC07 classification), and detection fine-tuning (VOC07+12 boxes).

`run_evaluations(run_dir, ["linear", "knn"], dataset=None, layers=("res5",))` is the entry point (used by
`pirl-ablate eval` and by sweeps); the protocol cores work on plain tensors and modules.
"""

from pirl_ablate.evaluate.features import LAYERS, FeatureCache, cached_features, extract_features, pooled_grid
from pirl_ablate.evaluate.invariance import invariance_distances, plot_invariance_histograms
from pirl_ablate.evaluate.knn import knn_scores
from pirl_ablate.evaluate.linear import topk_accuracy, train_linear_probe
from pirl_ablate.evaluate.protocols import PROTOCOLS, EvalSettings, run_evaluations
from pirl_ablate.evaluate.semisup import balanced_subset, finetune
from pirl_ablate.models.precise_bn import precise_bn

__all__ = ["LAYERS", "PROTOCOLS", "EvalSettings", "FeatureCache", "balanced_subset", "cached_features",
           "extract_features", "finetune", "invariance_distances", "knn_scores", "plot_invariance_histograms",
           "pooled_grid", "precise_bn", "run_evaluations", "topk_accuracy", "train_linear_probe"]
