"""The `svm` and `low-shot` protocols: `pirl_ablate.evaluate.svm` on a run's cached, pooled features.

    pirl-ablate eval RUN --protocol svm --dataset voc2007 --layers res4,res5 --bind "voc2007.root='/data/voc'"
    pirl-ablate eval RUN --protocol low-shot --dataset voc2007

Defaults are VISSL's VOC07 benchmark where it does not depend on the scale: VOC's interpolated AP, VISSL's cost
grid, the whole image squashed to a square. gin/eval/paper.gin binds the rest of VISSL's setting (224 px and
VISSL's pooling, res5 to 8,192 dims); the earlier choices stay as options: `svm_eval.ap = 'sklearn'`,
`svm_eval.costs` = `svm.GOYAL_COSTS`, `svm_eval.view = 'centre_crop'`, `svm_eval.pooling = 'grid'`.

Results (`evals/svm-<dataset>.json`): metrics {layer: {"mAP": %}}, plus per-class AP, the chosen costs and the
cross-validation APs, and the settings. `evals/low-shot-<dataset>.json`: metrics {layer: {"k1": mean mAP,
"k1_std": std, ...}} over `draws` independent draws per k, plus every draw's mAP. Multi-label targets come from
a dataset's `targets` (voc2007); a single-label dataset (imagefolder, fashion_mnist, ...) is scored one-vs-rest.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from pirl_ablate.console import info
from pirl_ablate.errors import ConfigError, did_you_mean
from pirl_ablate.evaluate.context import EvalContext
from pirl_ablate.evaluate.features import POOLINGS
from pirl_ablate.evaluate.inputs import VIEWS
from pirl_ablate.evaluate.registry import register_protocol
from pirl_ablate.evaluate.svm import (
    AP_RULES,
    COSTS,
    LOW_SHOT_K,
    average_precisions,
    fit_low_shot,
    fit_svms,
    low_shot_targets,
    onehot_targets,
    svm_scores,
)


def split_targets(ctx: EvalContext, split: str) -> Tensor:
    """(N, C) int8 targets of `split`: the dataset's own multi-label `targets`, else one-vs-rest of its labels."""
    ds = ctx.split(split)
    targets = getattr(ds, "targets", None)
    return targets if isinstance(targets, Tensor) else onehot_targets(ds.labels, ctx.num_classes)


def check_choice(key: str, value: str, valid: Sequence[str]) -> None:
    """ConfigError `key = value` naming the valid values, before any work."""
    if value not in valid:
        raise ConfigError(f"{key} = {value!r}{did_you_mean(value, valid)} (valid: {', '.join(valid)})")


def _classes(ctx: EvalContext) -> list[str] | None:
    classes = getattr(ctx.split("train"), "classes", None)
    return list(classes) if classes else None


@register_protocol("svm", gin_name="svm_eval")
def svm_protocol(ctx: EvalContext, costs: Sequence[float] = COSTS, folds: int = 3,
                 max_iter: int = 2000, ap: str = "voc", view: str = "squash", view_size: int | None = None,
                 pooling: str = "grid") -> dict:
    """Per-class linear SVMs on the pooled features of each layer `ctx.layers`; test mAP in percent: {layer:
    {"mAP"}}.

    costs: the grid (VISSL's ResNet-50 grid; `svm.GOYAL_COSTS` Goyal et al.'s); ap: "voc" (VISSL's calculate_ap)
    or "sklearn"; view: "squash" (VISSL: the whole image to view_size^2), "centre_crop" or "resize_crop"
    (`EvalContext.features`); view_size: px, None = the evaluation's image size (VISSL: 224); pooling: "grid" or
    "vissl" (VISSL's fixed pools, `features.VISSL_POOL`).
    """
    layers = ctx.layers
    check_choice("svm_eval.ap", ap, AP_RULES)
    check_choice("svm_eval.view", view, VIEWS)
    check_choice("svm_eval.pooling", pooling, POOLINGS)
    settings = {"costs": list(costs), "folds": folds, "max_iter": max_iter, "ap": ap, "view": view,
                "view_size": view_size or ctx.image_size, "pooling": pooling}
    train = ctx.features("train", layers, view=view, view_size=view_size, pooling=pooling)
    test = ctx.features("test", layers, view=view, view_size=view_size, pooling=pooling)
    train_t, test_t = split_targets(ctx, "train"), split_targets(ctx, "test")
    metrics, per_class, chosen, cv = {}, {}, {}, {}
    for layer in layers:
        info(f"svm {layer}: {train_t.shape[1]} classes x {len(costs)} costs x {folds} folds")
        models, cv_ap, chosen[layer] = fit_svms(train[layer][0], train_t, costs=costs, folds=folds, max_iter=max_iter)
        aps = average_precisions(svm_scores(models, test[layer][0]), test_t.numpy(), ap)
        metrics[layer] = {"mAP": float(aps.mean())}
        per_class[layer], cv[layer] = aps.tolist(), cv_ap.tolist()
    return {"metrics": metrics, "per_class_ap": per_class, "chosen_cost": chosen, "cv_ap": cv,
            "classes": _classes(ctx), "num_train": len(train_t), "num_test": len(test_t),
            "feature_dims": {layer: int(train[layer][0].shape[1]) for layer in layers},
            "hyperparameters": settings}


@register_protocol("low-shot", gin_name="low_shot_eval")
def low_shot_protocol(ctx: EvalContext, k_values: Sequence[int] = LOW_SHOT_K,
                      draws: int = 5, seed: int = 0) -> dict:
    """Low-shot SVMs on each layer `ctx.layers`: for each k, `draws` seeded draws of k positives per class; mean and
    std of the test mAP.

    Costs come from the full-split cross-validation of `svm_protocol`; its configured `svm_eval.*` settings apply
    (input view, pooling, AP rule).
    """
    layers = ctx.layers
    svm_settings = ctx.configuration.values("svm_eval")
    folds, max_iter = svm_settings.get("folds", 3), svm_settings.get("max_iter", 2000)
    ap = svm_settings.get("ap", "voc")
    inputs = {"view": svm_settings.get("view", "squash"), "view_size": svm_settings.get("view_size"),
              "pooling": svm_settings.get("pooling", "grid")}
    train, test = ctx.features("train", layers, **inputs), ctx.features("test", layers, **inputs)
    train_t, test_t = split_targets(ctx, "train"), split_targets(ctx, "test")
    metrics, runs, chosen = {}, {}, {}
    for layer in layers:
        _, _, chosen[layer] = fit_svms(train[layer][0], train_t, costs=svm_settings.get("costs", COSTS),
                                       folds=folds, max_iter=max_iter)
        metrics[layer], runs[layer] = {}, {}
        for k in k_values:
            gen = torch.Generator().manual_seed(seed * 1000 + k)
            maps = []
            for _ in range(draws):
                models = fit_low_shot(train[layer][0], low_shot_targets(train_t, k, gen), chosen[layer],
                                      max_iter=max_iter)
                maps.append(float(average_precisions(svm_scores(models, test[layer][0]), test_t.numpy(), ap).mean()))
            metrics[layer][f"k{k}"] = float(np.mean(maps))
            metrics[layer][f"k{k}_std"] = float(np.std(maps))
            runs[layer][f"k{k}"] = maps
            info(f"low-shot {layer} k={k}: {metrics[layer][f'k{k}']:.2f} +- {metrics[layer][f'k{k}_std']:.2f}")
    return {"metrics": metrics, "draws": runs, "chosen_cost": chosen, "classes": _classes(ctx),
            "num_test": len(test_t), "hyperparameters": {"k_values": list(k_values), "draws": draws, "seed": seed}}
