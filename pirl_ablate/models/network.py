"""PIRL's network: one shared trunk with the heads f (image view) and g (transformed view), paper Section 3.2.

    f(v_I)  = normalise(W_f pool(res5(v_I)))                                        (B, 128)
    g(v_It) = normalise(W_mix [W_p pool(res5(p_0)), ..., W_p pool(res5(p_{P-1}))])  patch views  (B, 128)
    g(v_It) = normalise(W_g pool(res5(v_It)))                                       image views (B, 128)

The P patches of a patch view are stacked in the permuted order: `view.data[:, j]` is the patch at position j of
the permuted sequence, so concatenating the per-patch vectors for j = 0..P-1 is "concatenated in the permuted
order". All B*P patches go through the trunk in one batched forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import gin
import torch.nn.functional as F
from torch import Tensor, nn

from pirl_ablate.errors import ConfigError
from pirl_ablate.models.backbone import Backbone


def projection(in_dim: int, out_dim: int, mlp: bool) -> nn.Module:
    """A linear map, or with `mlp` the two-layer head in_dim -> in_dim -> out_dim (2048 -> 2048 -> 128 on R-50)."""
    if not mlp:
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim))


@gin.configurable
class PIRLNet(nn.Module):
    """The trunk plus PIRL's heads f and g.

    Args:
        backbone: the shared trunk (`Backbone`; gin: `PIRLNet.backbone = @Backbone()`).
        embed_dim: size of the L2-normalised embeddings and of the memory bank entries (128, Section 3.2).
        mlp_heads: two-layer heads (feature_dim -> feature_dim -> embed_dim) instead of linear ones.
        num_patches: P, the number of patches of a patch view (9: the 3x3 Jigsaw grid, Section 3.2); fixes the
            input size P * embed_dim of g's mixing layer.
        patch_bn_stats: when False, the batched patch forward normalises with the patches' batch statistics but
            leaves the BatchNorm running statistics untouched (so they describe full images only): BN momentum
            is set to 0 for that pass (in PyTorch running = (1 - momentum) * running + momentum * batch).
    """

    def __init__(self, backbone: Backbone, embed_dim: int = 128, mlp_heads: bool = False,
                 num_patches: int = 9, patch_bn_stats: bool = True):
        super().__init__()
        self.backbone = backbone
        self.embed_dim = embed_dim
        self.num_patches = num_patches
        self.patch_bn_stats = patch_bn_stats
        width = backbone.feature_dim
        self.image_head = projection(width, embed_dim, mlp_heads)  # f
        self.patch_head = projection(width, embed_dim, mlp_heads)  # g, per patch
        self.patch_mix = nn.Linear(num_patches * embed_dim, embed_dim)  # g, the concatenated patches
        self.transformed_image_head = projection(width, embed_dim, mlp_heads)  # g for image views (rotation)

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim

    def pooled(self, x: Tensor) -> Tensor:
        """Globally average-pooled res5 features (N, feature_dim) of images `x` (N, 3, H, W) in [0, 1]."""
        return self.backbone(x, ("res5",))["res5"].mean(dim=(2, 3))

    def pooled_view(self, view: Any) -> Tensor:
        """Pooled res5 features of a transformed view: (B, P, feature_dim) for patch views (one batched trunk
        pass over the B*P patches, in the view's permuted order), (B, feature_dim) for image views."""
        if not view.is_patches:
            return self.pooled(view.data)
        b, p = view.data.shape[:2]
        with self._patch_bn_context():
            feats = self.pooled(view.data.flatten(0, 1))
        return feats.view(b, p, -1)

    def embed_image(self, x: Tensor) -> Tensor:
        """f(v_I): (B, embed_dim), unit L2 norm, of images `x` (B, 3, H, W) in [0, 1]."""
        return F.normalize(self.image_head(self.pooled(x)), dim=1)

    def embed_transformed(self, view: Any) -> Tensor:
        """g(v_It): (B, embed_dim), unit L2 norm, of a `View` (patches (B, P, C, h, w) or an image (B, C, h, w))."""
        feats = self.pooled_view(view)
        if not view.is_patches:
            return F.normalize(self.transformed_image_head(feats), dim=1)
        if feats.shape[1] != self.num_patches:
            raise ConfigError(f"PIRLNet.num_patches = {self.num_patches} but the transform makes "
                              f"{feats.shape[1]} patches: bind PIRLNet.num_patches = {feats.shape[1]}")
        per_patch = self.patch_head(feats)  # (B, P, embed_dim)
        return F.normalize(self.patch_mix(per_patch.flatten(1)), dim=1)

    def _patch_bn_context(self) -> contextlib.AbstractContextManager:
        if self.patch_bn_stats or not self.training:
            return contextlib.nullcontext()
        return frozen_bn_stats(self.backbone)


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


@gin.configurable
def build_network(backbone: Backbone | None = None) -> PIRLNet:
    """The PIRLNet of the current gin bindings (`Backbone.*`, `PIRLNet.*`)."""
    return PIRLNet(backbone if backbone is not None else Backbone())
