"""Heads on the shared trunk's pooled res5 features, and a BatchNorm helper (paper Section 3.2).

    f(v_I)  = normalise(W_f pool(res5(v_I)))                                        `projection`     (B, 128)
    g(v_It) = normalise(W_mix [W_p pool(res5(p_0)), ..., W_p pool(res5(p_{P-1}))])  `PatchHead`      (B, 128)
    g(v_It) = normalise(W_g pool(res5(v_It)))                                       image views      (B, 128)

The P patches of a patch view are stacked in the permuted order: `view.data[:, j]` is the patch at position j of
the permuted sequence, so concatenating the per-patch vectors for j = 0..P-1 is "concatenated in the permuted
order". Methods (pirl_ablate.methods) build the heads they use from these parts.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from pirl_ablate.errors import ConfigError


def projection(in_dim: int, out_dim: int, mlp: bool) -> nn.Module:
    """A linear map, or with `mlp` the two-layer head in_dim -> in_dim -> out_dim (2048 -> 2048 -> 128 on R-50)."""
    if not mlp:
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim))


class PatchHead(nn.Module):
    """g for patch views: a per-patch projection, then a linear layer mixing the P concatenated vectors.

    Args:
        feature_dim: the trunk's pooled width; embed_dim: output size (128); num_patches: P (9: the 3x3 Jigsaw
        grid), fixing the mixing layer's input size P * embed_dim; mlp: two-layer per-patch projection.
    """

    def __init__(self, feature_dim: int, embed_dim: int, num_patches: int, mlp: bool = False):
        super().__init__()
        self.num_patches = num_patches
        self.patch = projection(feature_dim, embed_dim, mlp)
        self.mix = nn.Linear(num_patches * embed_dim, embed_dim)

    def forward(self, feats: Tensor) -> Tensor:
        """(B, P, feature_dim) pooled patch features, in the permuted order -> (B, embed_dim), not normalised."""
        if feats.shape[1] != self.num_patches:
            raise ConfigError(f"heads.num_patches = {self.num_patches} but the transform makes "
                              f"{feats.shape[1]} patches: bind heads.num_patches = {feats.shape[1]}")
        return self.mix(self.patch(feats).flatten(1))


def seeded_linear(in_features: int, out_features: int, generator: torch.Generator) -> nn.Linear:
    """nn.Linear on the generator's device with PyTorch's default initialisation (U(-1/sqrt(in), 1/sqrt(in)) for
    weight and bias) drawn from `generator` instead of the global RNG."""
    layer = nn.Linear(in_features, out_features, device=generator.device)
    bound = 1.0 / math.sqrt(in_features)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """Inside: every BatchNorm of `module` in training mode still normalises with batch statistics, but its running
    statistics (and num_batches_tracked) are left as they are; BN momentum is 0 for the duration (in PyTorch
    running = (1 - momentum) * running + momentum * batch)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)
