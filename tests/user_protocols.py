"""A protocol registered outside the package, as README's "Adding an evaluation protocol" writes it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pirl_ablate.evaluate import EvalContext, register_protocol


@register_protocol("centroid")
def centroid(ctx: EvalContext, layer: str = "res5") -> dict:
    """Nearest class mean: each test image takes the class whose mean train feature is most cosine-similar."""
    train_x, train_y = ctx.features("train", [layer])[layer]  # (N, D), (N,)
    test_x, test_y = ctx.features("test", [layer])[layer]  # (M, D), (M,)
    means = torch.zeros(ctx.num_classes, train_x.shape[1]).index_add_(0, train_y, F.normalize(train_x.float(), dim=1))
    predicted = (F.normalize(test_x.float(), dim=1) @ F.normalize(means, dim=1).T).argmax(dim=1)  # (M,)
    top1 = 100.0 * float((predicted == test_y).float().mean())
    return {"metrics": {layer: {"top1": top1}}, "num_test": len(test_y)}
