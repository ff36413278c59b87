"""Linear SVMs on frozen features, the VOC07 protocol of Goyal et al. 2019 as VISSL runs it (paper Tables 2, 4, 5
and Figure 7).

One binary `sklearn.svm.LinearSVC` per class on L2-normalised features, for each cost C of the grid; the cost of
each class is the one with the best mean average precision over a `folds`-fold cross-validation on the train split
(`cross_val_score(..., scoring="average_precision")`, as VISSL's SVMTrainer); that class's SVM is then refit on the
whole train split and scored on the test split. SVM settings are the benchmark's: squared hinge, L2 penalty, dual
solver, class weight {1: 2, -1: 1}, tolerance 1e-4, at most 2000 iterations; 3 folds (VISSL's default).

Cost grids: `COSTS`, VISSL's ResNet-50 grid (configs/config/benchmark/linear_image_classification/voc07/
eval_resnet_8gpu_transfer_voc07_svm.yaml); `GOYAL_COSTS`, Goyal et al.'s benchmark script (train_svm_kfold.py).
Test metric: the mean over classes of the per-class AP in percent, `ap="voc"` VOC's interpolated AP as VISSL's
`calculate_ap` (vissl/utils/svm_utils/evaluate.py) defines it (`voc_ap`), or `ap="sklearn"`
`sklearn.metrics.average_precision_score` (no interpolation; 0.1-0.3 mAP points below on VOC07).

Targets are (N, C) int {1, 0, -1} (`pirl_ablate.data.voc.image_targets`): 1 present, 0 absent, -1 "difficult
only". As in VISSL's SVMTrainer, -1 counts as a negative when training on the full split, and is left out of the
test AP. A single-label dataset becomes one-vs-rest targets with no -1 (`onehot_targets`).

Low-shot (Goyal et al. Section 6.2, VISSL's create_voc07_low_shot_samples): for each class, k of its positives and
(C - 1) * k of its negatives are drawn; every other train image is ignored for that class. k in (1, 2, 4, 8, 16,
32, 64, 96), several independent draws, mean and std of the test mAP over draws. The cost of each class is the one
the full-split cross-validation chose (k = 1 leaves nothing to cross-validate on; choosing on the test split, as
VISSL's low-shot trainer does, would be selection on the test set).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from pirl_ablate.errors import ConfigError, DataError, did_you_mean

COSTS = (0.01, 0.1, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 50.0, 100.0, 1000.0)  # VISSL's ResNet-50 VOC07 grid
GOYAL_COSTS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)  # Goyal et al.'s train_svm_kfold.py
AP_RULES = ("voc", "sklearn")
LOW_SHOT_K = (1, 2, 4, 8, 16, 32, 64, 96)


def onehot_targets(labels: Tensor, num_classes: int) -> Tensor:
    """(N,) long class indices -> (N, num_classes) int8 with 1 at the class and 0 elsewhere."""
    targets = torch.zeros(len(labels), num_classes, dtype=torch.int8)
    targets[torch.arange(len(labels)), labels.long().cpu()] = 1
    return targets


def _normalise(x: Tensor) -> np.ndarray:
    x = x.detach().cpu().double()
    return (x / (x.norm(dim=1, keepdim=True) + 1e-5)).numpy()


def _svm(cost: float, max_iter: int):
    from sklearn.svm import LinearSVC

    return LinearSVC(C=cost, class_weight={1: 2, -1: 1}, loss="squared_hinge", penalty="l2", dual=True, tol=1e-4,
                     max_iter=max_iter, intercept_scaling=1.0)


def voc_ap(scores: np.ndarray, positive: np.ndarray) -> float:
    """VOC's interpolated average precision of one class, as VISSL's `get_precision_recall` + `calculate_ap`.

    scores: (N,) decision values; positive: (N,) bool. Images are ranked by decreasing score (ties: the later image
    first, as reversing a stable ascending sort); precision P_k and recall R_k after each rank; the precision
    envelope p(r) = max of P_k over R_k >= r; AP = sum over ranks k where recall rises of (R_k - R_{k-1}) * p(R_k).
    Returns a fraction in [0, 1].
    """
    order = np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")[::-1]
    hits = np.asarray(positive, dtype=bool)[order]
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    recall = tp / hits.sum()
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    rises = np.diff(np.concatenate(([0.0], recall)))
    return float(np.sum(rises * envelope))


def average_precisions(scores: np.ndarray, targets: np.ndarray, ap: str = "voc") -> np.ndarray:
    """Per-class AP in percent over the images whose target is not -1 (C,): `ap` "voc" (`voc_ap`) or "sklearn"
    (`average_precision_score`)."""
    from sklearn.metrics import average_precision_score

    if ap not in AP_RULES:
        raise ConfigError(f"svm_eval.ap = {ap!r}{did_you_mean(ap, AP_RULES)} (valid: {', '.join(AP_RULES)})")
    aps = []
    for c in range(targets.shape[1]):
        keep = targets[:, c] != -1
        y = targets[keep, c] == 1
        if not y.any():
            raise DataError(f"SVM evaluation: class {c} has no positive test image")
        value = voc_ap(scores[keep, c], y) if ap == "voc" else average_precision_score(y, scores[keep, c])
        aps.append(100.0 * value)
    return np.array(aps)


def fit_svms(train_x: Tensor, train_t: Tensor, *, costs: Sequence[float] = COSTS, folds: int = 3,
             max_iter: int = 2000) -> tuple[list, np.ndarray, list[float]]:
    """Choose each class's cost by `folds`-fold cross-validated AP and refit on the whole split.

    train_x: (N, D) features (any float dtype, normalised here); train_t: (N, C) int targets {1, 0, -1}.
    Returns (C fitted LinearSVCs, cross-validation AP (C, len(costs)) in percent, the chosen cost per class).
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    x = _normalise(train_x)
    t = train_t.cpu().numpy()
    cv_ap = np.zeros((t.shape[1], len(costs)))
    models, chosen = [], []
    for c in range(t.shape[1]):
        y = np.where(t[:, c] == 1, 1, -1)
        positives = int((y == 1).sum())
        if positives < folds or len(y) - positives < folds:
            raise DataError(f"SVM evaluation: class {c} has {positives} positive and {len(y) - positives} negative "
                            f"train images; {folds}-fold cross-validation needs at least {folds} of each")
        split = StratifiedKFold(folds)
        for j, cost in enumerate(costs):
            cv_ap[c, j] = 100.0 * cross_val_score(_svm(cost, max_iter), x, y, cv=split,
                                                  scoring="average_precision").mean()
        chosen.append(float(costs[int(np.argmax(cv_ap[c]))]))
        models.append(_svm(chosen[-1], max_iter).fit(x, y))
    return models, cv_ap, chosen


def svm_scores(models: list, x: Tensor) -> np.ndarray:
    """(M, C) decision values of the per-class SVMs on features x (M, D) (normalised here)."""
    features = _normalise(x)
    return np.stack([m.decision_function(features) for m in models], axis=1)


def low_shot_targets(targets: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Targets (N, C) with, per class, k positives and (C - 1) * k negatives kept (drawn uniformly without
    replacement from `generator`) and every other entry set to -1 (ignored). DataError if a class has too few."""
    num_classes = targets.shape[1]
    out = torch.full_like(targets, -1)
    for c in range(num_classes):
        for value, n in ((1, k), (0, (num_classes - 1) * k)):
            pool = (targets[:, c] == value).nonzero().squeeze(1)
            if len(pool) < n:
                raise DataError(f"low-shot k={k}: class {c} has {len(pool)} {'positive' if value else 'negative'} "
                                f"train images, fewer than the {n} to draw")
            out[pool[torch.randperm(len(pool), generator=generator)[:n]], c] = value
    return out


def fit_low_shot(train_x: Tensor, train_t: Tensor, costs: Sequence[float], *, max_iter: int = 2000) -> list:
    """Per-class LinearSVCs with the given costs, trained only on the images whose target is not -1."""
    x = _normalise(train_x)
    t = train_t.cpu().numpy()
    models = []
    for c, cost in enumerate(costs):
        keep = t[:, c] != -1
        models.append(_svm(cost, max_iter).fit(x[keep], np.where(t[keep, c] == 1, 1, -1)))
    return models
