"""Cross-entropy of a classifier's logits: the covariant pretext baselines and the supervised baseline.

    Jigsaw (Noroozi & Favaro 2016): logits = W [pool(res5(p_0)), ..., pool(res5(p_{P-1}))]   (B, |T|)
    Rotation (Gidaris et al. 2018): logits = W pool(res5(v_It))                              (B, 4)
    Supervised:                     logits = W pool(res5(v_I))                               (B, classes)
    L = cross_entropy(logits, target)
"""

from __future__ import annotations

from torch import Tensor, nn


def classification_loss(logits: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross-entropy of `logits` (B, classes) against `target` (B,) long; parts "cross_entropy" and top-1 "acc"."""
    loss = nn.functional.cross_entropy(logits, target)
    acc = (logits.detach().argmax(dim=1) == target).float().mean()
    return loss, {"cross_entropy": loss.detach(), "acc": acc}
