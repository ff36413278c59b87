"""Linear probe: a linear classifier trained on frozen, cached features (paper Tables 2, 5, 7; Figures 5-8).

Recipe (paper Section 5.1, after Goyal et al. 2019): SGD with momentum 0.9, learning rate 0.01 dropped twice by
x0.1, weight decay 5e-4, 28 epochs on ImageNet. Optionally a batch-norm (with affine parameters) on the features
before the linear layer, as VISSL's linear evaluation does. Everything runs on the features' device; the mini-batch
order comes from an explicit seeded generator on that device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pirl_ablate.console import progress


def train_linear_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, num_classes: int, *,
                       epochs: int = 28, batch_size: int = 256, lr: float = 0.01, momentum: float = 0.9,
                       weight_decay: float = 5e-4, drops: Sequence[float] = (1 / 3, 2 / 3),
                       feature_bn: bool = True, seed: int = 0, description: str = "linear probe"
                       ) -> dict[str, float]:
    """Train `BN? -> Linear(D, num_classes)` on (train_x, train_y); return test accuracy in percent.

    train_x: (N, D) features (any float dtype; cast per mini-batch to float32), train_y: (N,) long;
    test_x: (M, D), test_y: (M,). The learning rate is multiplied by 0.1 at each epoch round(f * epochs), f in
    `drops` (two drops by default, paper Section 5.1). The classifier starts at zero; `seed` draws the mini-batch
    order. Returns {"top1": %, "top5": %} ("top5" only when
    num_classes > 5).
    """
    device = train_x.device
    dim = train_x.shape[1]
    layers: list[nn.Module] = [nn.BatchNorm1d(dim)] if feature_bn else []
    gen = torch.Generator(device=device).manual_seed(seed)
    linear = nn.Linear(dim, num_classes)
    nn.init.zeros_(linear.weight)  # a convex problem: zero start, no random draw needed
    nn.init.zeros_(linear.bias)
    classifier = nn.Sequential(*layers, linear).to(device)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    milestones = sorted({round(f * epochs) for f in drops})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    n = len(train_x)
    steps = (n + batch_size - 1) // batch_size
    classifier.train()
    with progress() as bar:
        task = bar.add_task(description, total=epochs * steps)
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen, device=device)
            for i in range(steps):
                idx = order[i * batch_size:(i + 1) * batch_size]
                if len(idx) < 2 and feature_bn:
                    continue  # batch-norm needs two samples
                loss = F.cross_entropy(classifier(train_x[idx].float()), train_y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.advance(task)
            scheduler.step()
    classifier.eval()
    with torch.no_grad():
        logits = torch.cat([classifier(test_x[i:i + 4096].float()) for i in range(0, len(test_x), 4096)])
    return topk_accuracy(logits, test_y, num_classes)


def topk_accuracy(scores: Tensor, labels: Tensor, num_classes: int) -> dict[str, float]:
    """{"top1": %, "top5": %} of class `scores` (M, C) against `labels` (M,); top-5 only when C > 5."""
    ks = (1, 5) if num_classes > 5 else (1,)
    top = scores.topk(max(ks), dim=1).indices
    hit = top == labels.to(top.device)[:, None]
    return {f"top{k}": 100.0 * hit[:, :k].any(1).double().mean().item() for k in ks}
