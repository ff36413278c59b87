"""evaluate: the protocols run on a pre-trained run's frozen (or fine-tuned) trunk, and their registry.

Protocols (`@register_protocol`, `pirl-ablate list protocols`): linear probe per layer, weighted kNN, invariance
(Figure 4), semi-supervised fine-tuning, VOC07 linear SVMs, low-shot SVMs, detection transfer.
`run_evaluations(run_dir, ["linear", "knn"], dataset=None, layers=("res5",))` runs them on a run folder (from gin
files and bindings: `pirl_ablate.gin_edge.run_evaluations`, used by `pirl-ablate eval` and by sweeps); the protocol
cores work on plain tensors and modules.
"""

from pirl_ablate.evaluate import detection_protocol, svm_protocol  # noqa: F401  (register their protocols)
from pirl_ablate.evaluate.context import EvalContext, EvalSettings
from pirl_ablate.evaluate.features import LAYERS, FeatureCache, cached_features, extract_features, pooled_grid
from pirl_ablate.evaluate.invariance import invariance_distances, plot_invariance_histograms
from pirl_ablate.evaluate.knn import knn_scores
from pirl_ablate.evaluate.linear import topk_accuracy, train_linear_probe
from pirl_ablate.evaluate.protocols import run_evaluations
from pirl_ablate.evaluate.registry import DATA_PARALLEL, PROTOCOLS, protocols, register_protocol
from pirl_ablate.evaluate.semisup import balanced_subset, finetune
from pirl_ablate.models.precise_bn import precise_bn

__all__ = ["DATA_PARALLEL", "LAYERS", "PROTOCOLS", "EvalContext", "EvalSettings", "FeatureCache", "balanced_subset",
           "cached_features", "extract_features", "finetune", "invariance_distances", "knn_scores",
           "plot_invariance_histograms", "pooled_grid", "precise_bn", "protocols", "register_protocol",
           "run_evaluations", "topk_accuracy", "train_linear_probe"]
