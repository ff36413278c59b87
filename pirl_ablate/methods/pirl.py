"""PIRL (Misra & van der Maaten, CVPR 2020): f(v_I) and g(v_It) both contrasted with the memory bank (Eq. 5).

    v_It = transform(I), v_I = image_transform(I)
    f = normalise(W_f pool(res5(v_I)))                     (B, d)
    g = normalise(PatchHead(pool(res5(patches of v_It))))  (B, d)   or normalise(W_g pool(res5(v_It))) for images
    L = lambda L_NCE(m_I, g) + (1 - lambda) L_NCE(m_I, f)   against N negatives m_I' drawn from the bank
    m_I <- normalise(0.5 m_I + 0.5 f), detached, after the loss

The source of negatives is an ablation axis (`negatives`, pirl_ablate.losses.negatives): the memory bank above (the
default), a momentum queue (MoCo) or the other images of the batch (SimCLR); with the latter two both terms use the
source's positive key k_I (a key encoder's or f's embedding of a second view v_I') in place of m_I.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pirl_ablate.errors import ConfigError
from pirl_ablate.losses import (
    ESTIMATORS,
    Keys,
    MemoryBank,
    MemoryBankNegatives,
    NegativeSource,
    PartitionEstimate,
    estimator,
    pirl_queries,
    pirl_terms,
)
from pirl_ablate.methods.base import Method, register_method
from pirl_ablate.models import Backbone, PatchHead, projection
from pirl_ablate.transforms import View

Z_FROM = ("all", "transformed")


@register_method("pirl", gin_name="PIRL")
class PIRL(Method):
    """PIRL: NCE against a memory bank for both the transformed view and the image (Eq. 5).

    Args (gin: `PIRL.*`, the keys sweeps and result tables use):
        memory_bank: the bank of |D| entries of size embed_dim (`MemoryBank`); needed by the memory-bank source
            only (None otherwise).
        negatives: the source of the positive key and the negatives (`NegativeSource`, gin: `train.negatives`);
            None: the memory bank (`MemoryBankNegatives()`).
        lambda_: weight of the transformed-view term (0.5, Section 3.2 / Figure 6); 0 builds no g (NPID).
        tau: temperature of the cosine scores (0.07, Section 3.2).
        num_negatives: N bank entries drawn per sample (32,000, Section 4; 4,096 in some ablations); the memory-bank
            source's (a queue has K keys, in-batch G - 1).
        estimator: "nce" (the paper's, Eq. 3) or "infonce" (softmax cross-entropy, as PyContrast).
        z, z_momentum: the partition estimate of "nce" (`PartitionEstimate`: "fixed" or "ema").
        z_from: the first batch's scores Z starts from: "all" (both terms') or "transformed" (g(v_It)'s only, as
            VISSL's nce_loss.py sets Z in the first term's forward); NPID has the image term alone.
        embed_dim: size of f, g and the bank entries (128, Section 3.2); mlp_heads: two-layer projections.
        num_patches: P of patch views (9), the mixing layer's input P * embed_dim.
        backbone, transform, image_transform, generator, patch_bn_stats: as `Method`.
    """

    def __init__(self, backbone: Backbone, memory_bank: MemoryBank | None = None, transform: Any = None,
                 image_transform: Any = None, *, generator: torch.Generator, negatives: NegativeSource | None = None,
                 lambda_: float = 0.5, tau: float = 0.07, num_negatives: int = 32000,
                 estimator: str = "nce", z: str = "fixed", z_momentum: float = 0.99, z_from: str = "all",
                 embed_dim: int = 128,
                 mlp_heads: bool = False, num_patches: int = 9, patch_bn_stats: bool = True):
        if not 0.0 <= lambda_ <= 1.0:
            raise ConfigError(f"lambda_ = {lambda_!r}: must be in [0, 1] (paper Eq. 5)")
        if estimator not in ESTIMATORS:
            raise ConfigError(f"estimator = {estimator!r}: must be one of {', '.join(ESTIMATORS)}")
        if z_from not in Z_FROM:
            raise ConfigError(f"z_from = {z_from!r}: must be one of {', '.join(Z_FROM)}")
        negatives = negatives if negatives is not None else MemoryBankNegatives()
        if negatives.uses_memory_bank:
            if memory_bank is None:
                raise ConfigError(f"the {negatives.spec['name']} negative source needs a memory bank (memory_bank=)")
            available = memory_bank.size - (1 if memory_bank.exclude_positive else 0)
            if not 1 <= num_negatives <= available:
                raise ConfigError(f"num_negatives = {num_negatives} but the memory bank has {memory_bank.size} "
                                  f"entries: bind 1 <= num_negatives <= {available}")
        if lambda_ > 0 and transform is None:
            raise ConfigError("PIRL with lambda_ > 0 needs a pretext transform (e.g. train.transform = 'jigsaw')")
        super().__init__(backbone, transform=transform if lambda_ > 0 else None, image_transform=image_transform,
                         generator=generator, patch_bn_stats=patch_bn_stats)
        self.lambda_, self.tau, self.num_negatives, self.estimator = lambda_, tau, num_negatives, estimator
        self.z, self.z_momentum, self.z_from = z, z_momentum, z_from
        self.embed_dim, self.mlp_heads, self.num_patches = embed_dim, mlp_heads, num_patches
        self.views = ("transformed", "image") if lambda_ > 0 else ("image",)
        width = backbone.feature_dim
        self.f = projection(width, embed_dim, mlp_heads)
        if lambda_ > 0:
            patches = getattr(transform, "produces_patches", False)
            self.g = PatchHead(width, embed_dim, num_patches, mlp_heads) if patches else \
                projection(width, embed_dim, mlp_heads)
        self.memory_bank = memory_bank
        self.partition = PartitionEstimate(z, z_momentum)
        self.negatives = negatives
        negatives.bind(self)
    def _z_queries(self, q: Tensor, keys: Keys) -> tuple[Tensor, Keys]:
        """The queries (B, K', d) and keys whose scores the first batch's Z is estimated from (`z_from`)."""
        if self.z_from == "all" or q.shape[1] == 1:
            return q, keys
        per_term = keys.negatives.dim() == 3  # the memory bank's (B, K, N) draws per term
        return q[:, :1], dataclasses.replace(keys, negatives=keys.negatives[:, :1] if per_term else keys.negatives)

    def embed_image(self, x: Tensor) -> Tensor:
        """f(v_I): (B, embed_dim), unit L2 norm, of images `x` (B, 3, H, W) in [0, 1]."""
        return F.normalize(self.f(self.pooled(x)), dim=1)

    def embed_transformed(self, view: View) -> Tensor:
        """g(v_It): (B, embed_dim), unit L2 norm, of a `View` (patches (B, P, C, h, w) or an image (B, C, h, w))."""
        return F.normalize(self.g(self.pooled_view(view)), dim=1)

    def forward(self, images: Tensor, index: Tensor, labels: Tensor, generator: torch.Generator
                ) -> tuple[Tensor, dict[str, Tensor]]:
        """Eq. 5 for `images` (B, 3, s, s) with dataset `index` (B,); then the negative source's update (the bank
        with f, detached; the queue with the keys)."""
        view = self.transform(images, generator) if self.lambda_ > 0 else None
        v_i = self.image_view(images, generator)
        f = self.embed_image(v_i)  # (B, d)
        g = self.embed_transformed(view) if view is not None else None  # (B, d)
        keys = self.negatives.keys(self, images, v_i, index, generator)
        q = pirl_queries(f, g)  # (B, K, d)
        nce = self.estimator == "nce"
        if nce and not self.partition.started:  # the first batch estimates Z from its own scores (NPID, VISSL)
            self.partition.start(self.negatives.mean_exp(*self._z_queries(q, keys), self.tau), keys.dataset_size)
        loss_fn = estimator(self.estimator, self.tau, self.partition.Z.log() if nce else None, keys.dataset_size)
        loss, parts = pirl_terms(self.negatives.contrast(q, keys, loss_fn, self.tau), self.lambda_)
        if nce:
            parts["Z"] = self.partition.Z.clone()
            self.partition.update(parts["mean_exp"], keys.dataset_size)  # the next batch uses the average with this
        self.negatives.update(keys, f.detach())
        return loss, parts
