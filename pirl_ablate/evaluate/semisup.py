"""Semi-supervised evaluation (paper Table 3): fine-tune the whole network on a small labelled subset.

The pre-trained backbone and a fresh linear head on its globally pooled res5 features are trained together with
cross-entropy on a class-balanced, seeded subset holding a fraction (1% or 10%) of the training labels; top-1/top-5
are measured on the test split. The paper follows Zhai et al. 2019 (S4L) on ImageNet; here SGD with momentum 0.9,
weight decay 5e-4, two x0.1 learning-rate drops, and a head learning rate larger than the backbone's (both gin
bindings of `semisup_eval`) — our defaults, not the paper's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pirl_ablate.console import progress
from pirl_ablate.errors import DataError
from pirl_ablate.evaluate.linear import topk_accuracy


def balanced_subset(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Sorted indices of a class-balanced subset of round(fraction * N) labelled items, drawn with `seed`.

    Each of the C classes present gets round(fraction * N / C) items (at least 1), drawn uniformly without
    replacement from that class; the same (labels, fraction, seed) always gives the same subset. A class with
    fewer items than its share raises DataError. labels: (N,) long (-1 = unlabelled, never drawn).
    """
    if not 0 < fraction <= 1:
        raise DataError(f"semi-supervised fraction {fraction} is not in (0, 1]")
    labels = labels.cpu()
    classes = labels[labels >= 0].unique()
    if len(classes) == 0:
        raise DataError("semi-supervised evaluation needs labels; the dataset has none")
    labelled = int((labels >= 0).sum())
    per_class = max(1, round(fraction * labelled / len(classes)))
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for c in classes.tolist():
        members = (labels == c).nonzero().squeeze(1)
        if len(members) < per_class:
            raise DataError(f"semi-supervised fraction {fraction}: class {c} has {len(members)} items, "
                            f"fewer than its share {per_class}")
        picks.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    return torch.cat(picks).sort().values


def fraction_name(fraction: float) -> str:
    """0.01 -> "1%", 0.1 -> "10%", 0.005 -> "0.5%" (the metric group of a label fraction)."""
    return f"{100 * fraction:g}%"


def finetune(backbone: nn.Module, feature_dim: int, num_classes: int,
             train_batches: Callable[[int], Iterable[tuple[Tensor, Tensor]]],
             test_batches: Iterable[tuple[Tensor, Tensor]], *, epochs: int, lr: float, head_lr: float,
             momentum: float = 0.9, weight_decay: float = 5e-4, drops: Sequence[float] = (1 / 3, 2 / 3),
             description: str = "fine-tune") -> dict[str, float]:
    """Train `backbone` (modified in place) + a fresh zero-initialised Linear(feature_dim, num_classes) head.

    train_batches(epoch) -> (images (B, C, H, W) float [0, 1] on the device, labels (B,)) for that epoch, in an
    order the caller seeds; test_batches: the same for the test split. Learning rates drop x0.1 at epochs
    round(f * epochs), f in `drops`. Returns test {"top1": %, "top5": %} (top5 when num_classes > 5).
    """
    device = next(backbone.parameters()).device
    head = nn.Linear(feature_dim, num_classes).to(device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    optimizer = torch.optim.SGD([{"params": backbone.parameters(), "lr": lr},
                                 {"params": head.parameters(), "lr": head_lr}],
                                lr=lr, momentum=momentum, weight_decay=weight_decay)
    milestones = sorted({round(f * epochs) for f in drops})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)

    def logits(images: Tensor) -> Tensor:
        return head(backbone(images, layers=("res5",))["res5"].mean(dim=(2, 3)))

    backbone.train()
    with progress() as bar:
        task = bar.add_task(description, total=epochs)
        for epoch in range(epochs):
            for images, y in train_batches(epoch):
                if len(y) < 2:
                    continue  # batch-norm needs two samples
                loss = F.cross_entropy(logits(images), y.to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            scheduler.step()
            bar.advance(task)
    backbone.eval()
    with torch.no_grad():
        scores, labels = zip(*((logits(images), y.to(device)) for images, y in test_batches))
    return topk_accuracy(torch.cat(scores), torch.cat(labels), num_classes)
