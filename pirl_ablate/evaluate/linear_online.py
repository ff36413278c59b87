"""The linear evaluation as the paper and VISSL run it: linear classifiers on a frozen trunk, fed fresh augmented
views every epoch (paper Tables 2, 5, 7; Figure 5).

Setting (paper Section 5.1; VISSL's configs/config/benchmark/linear_image_classification/imagenet1k/
eval_resnet_8gpu_transfer_in1k_linear.yaml where the paper is silent):

- the trunk frozen (eval mode: BatchNorm statistics as trained, no gradient);
- train input RandomResizedCrop 224 + flip, drawn afresh for every image of every epoch
  (`inputs.random_resized_crop_flip`); test input Resize 256 + CenterCrop 224 (`inputs.resize_center_crop`);
- each layer average-pooled as VISSL (`features.VISSL_POOL`: 9216 / 9216 / 8192 / 9216 / 8192 dims on ResNet-50);
- per layer VISSL's eval_mlp head (`ChannelBNLinear`): BatchNorm2d over the pooled map's channels, flatten, Linear;
  every layer's head trained at once from one trunk pass, the loss the sum of their cross-entropies;
- 28 epochs, SGD lr 0.01 per 256 images, x0.1 at epochs 8, 16, 24, weight decay 5e-4 (not on BatchNorm),
  momentum 0.9, Nesterov;
- data parallel: with a torch.distributed process group each rank trains on its share of every epoch
  (`batch_size` is global) and the heads are wrapped in DistributedDataParallel; test counts are summed over ranks.

Nothing is cached: memory is one batch of feature maps whatever the number of layers (the cached protocol,
`pirl_ablate.evaluate.linear`, is the fast one for smoke scale and quick looks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from pirl_ablate.console import progress
from pirl_ablate.distributed import initialized_world
from pirl_ablate.evaluate.features import pool_map

Batches = Iterable[tuple[Tensor, Tensor]]  # (images (B, 3, H, W) float [0, 1] on the device, labels (B,))


class ChannelBNLinear(nn.Module):
    """VISSL's eval_mlp: BatchNorm2d(C) on a pooled map (B, C, h, w), flattened to C * h * w, then Linear to the
    classes. The Linear starts at zero (a convex problem on the normalised features: no random draw needed)."""

    def __init__(self, channels: int, dims: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.linear = nn.Linear(dims, num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.linear(self.bn(pooled).flatten(1))


class LayerHeads(nn.Module):
    """One `ChannelBNLinear` per layer; forward({layer: pooled map}) -> {layer: logits (B, num_classes)}."""

    def __init__(self, shapes: dict[str, tuple[int, int, int]], num_classes: int):
        super().__init__()
        self.heads = nn.ModuleDict({layer: ChannelBNLinear(c, c * h * w, num_classes)
                                    for layer, (c, h, w) in shapes.items()})

    def forward(self, pooled: dict[str, Tensor]) -> dict[str, Tensor]:
        return {layer: head(pooled[layer]) for layer, head in self.heads.items()}


@torch.no_grad()
def pooled_maps(backbone: nn.Module, images: Tensor, layers: Sequence[str], pooling: str) -> dict[str, Tensor]:
    """{layer: pooled map (B, C, h, w) float32} of the frozen trunk on `images`."""
    maps = backbone(images, layers=layers)
    return {layer: pool_map(layer, maps[layer].float(), pooling=pooling) for layer in layers}


def train_online_linear(backbone: nn.Module, layers: Sequence[str], num_classes: int,
                        train_batches: Callable[[int], Batches], test_batches: Batches, *, input_size: int,
                        pooling: str = "vissl", epochs: int = 28, batch_size: int = 256, lr_per_256: float = 0.01,
                        milestones: Sequence[int] = (8, 16, 24), weight_decay: float = 5e-4, momentum: float = 0.9,
                        nesterov: bool = True, description: str = "linear (online)"
                        ) -> tuple[dict[str, dict[str, float]], dict[str, int], LayerHeads]:
    """Train every layer's head on the frozen `backbone`; return ({layer: {"top1": %, "top5": %}}, {layer: feature
    dims}, the trained heads).

    train_batches(epoch): this rank's training batches of that epoch, already augmented; test_batches: this rank's
    test batches. batch_size: the global batch (sets the learning rate, lr_per_256 * batch_size / 256).
    input_size: the side of the images the batches hold (sizes the heads before the first batch).
    """
    device = next(backbone.parameters()).device
    was_training = backbone.training
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    backbone.eval().requires_grad_(False)
    probe = pooled_maps(backbone, torch.zeros(1, 3, input_size, input_size, device=device), layers, pooling)
    heads = LayerHeads({layer: tuple(p.shape[1:]) for layer, p in probe.items()}, num_classes).to(device)
    world = initialized_world()
    model: nn.Module = nn.parallel.DistributedDataParallel(heads) if world > 1 else heads
    no_decay = [p for m in heads.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()]
    decay = [p for m in heads.modules() if isinstance(m, nn.Linear) for p in m.parameters()]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=lr_per_256 * batch_size / 256, momentum=momentum, nesterov=nesterov)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=0.1)
    try:
        with progress() as bar:
            task = bar.add_task(description, total=epochs)
            for epoch in range(epochs):
                model.train()
                for images, labels in train_batches(epoch):
                    logits = model(pooled_maps(backbone, images, layers, pooling))
                    loss = sum(F.cross_entropy(out, labels) for out in logits.values())
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                scheduler.step()
                bar.advance(task)
        if world > 1:  # DDP broadcasts rank 0's BatchNorm buffers before each forward: the last one updated each
            for buffer in heads.buffers():  # rank's own, so rank 0's become every rank's again
                dist.broadcast(buffer, 0)
        metrics = evaluate_heads(backbone, heads, layers, pooling, test_batches, num_classes)
    finally:
        backbone.train(was_training)
        for p in trainable:
            p.requires_grad_(True)
    dims = {layer: int(p[0].numel()) for layer, p in probe.items()}
    return metrics, dims, heads


@torch.no_grad()
def evaluate_heads(backbone: nn.Module, heads: LayerHeads, layers: Sequence[str], pooling: str, batches: Batches,
                   num_classes: int) -> dict[str, dict[str, float]]:
    """{layer: {"top1": %, "top5": % (more than 5 classes)}} of the heads (eval mode) on every rank's `batches`,
    the counts summed over ranks."""
    heads.eval()
    ks = (1, 5) if num_classes > 5 else (1,)
    device = next(heads.parameters()).device
    counts = torch.zeros(len(layers), len(ks) + 1, dtype=torch.float64, device=device)  # hits per k, images
    for images, labels in batches:
        logits = heads(pooled_maps(backbone, images, layers, pooling))
        for i, layer in enumerate(layers):
            top = logits[layer].topk(max(ks), dim=1).indices
            hit = top == labels[:, None]
            for j, k in enumerate(ks):
                counts[i, j] += hit[:, :k].any(1).sum()
            counts[i, -1] += len(labels)
    if initialized_world() > 1:
        dist.all_reduce(counts)
    return {layer: {f"top{k}": float(100.0 * counts[i, j] / counts[i, -1]) for j, k in enumerate(ks)}
            for i, layer in enumerate(layers)}
