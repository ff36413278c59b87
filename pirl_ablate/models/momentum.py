"""A momentum (key) encoder: an exponential moving average of the query encoder (MoCo, He et al. 2020, Sec. 3.2).

    theta_k <- m * theta_k + (1 - m) * theta_q     every parameter, m = 0.999 (MoCo)
    buffers_k <- buffers_q                         BatchNorm running statistics copied from the query encoder
                                                   (rank 0's under torch.distributed: DDP does not have to keep
                                                   the query networks' buffers equal, the key encoders stay equal)

The query encoder is f's embedding as one module, `ImageEncoder(trunk, head)`: normalise(head(pool(res5(x)))). The
key encoder is a deep copy of it taken at construction (rank 0's under torch.distributed); it never receives a
gradient. Keys are computed in the mode the encoder is in (training mode: batch statistics, as MoCo); the key
forward leaves the running statistics as copied (`frozen_bn_stats`), so they never depend on which images a rank
encoded.

BatchNorm. With per-device batch statistics, the queries and keys of one device's batch share statistics, and the
network can find the positive through them instead of through the image (MoCo Section 3.3). `shuffle_bn` does what
MoCo does under DistributedDataParallel: the key images of all ranks are gathered, permuted with one permutation
(drawn on rank 0, broadcast), each rank encodes its share of the shuffled batch, and the keys are gathered and put
back in order. The other cure is SyncBN on both networks (`torch.nn.SyncBatchNorm.convert_sync_batchnorm(backbone)`
before the method is built): statistics over the global batch. In a single process there is no per-device split to
shuffle, so the shuffle is skipped (MoCo's single-GPU demo splits the batch into BN groups instead; not done here).

    key = MomentumEncoder(ImageEncoder(backbone, f), momentum=0.999)
    key.update(ImageEncoder(backbone, f)); k = key(images, generator)      # (B, d), unit norm, no gradient
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from pirl_ablate.distributed import all_gather_rows, initialized_world
from pirl_ablate.errors import ConfigError
from pirl_ablate.models.backbone import Backbone, pooled_res5
from pirl_ablate.models.heads import frozen_bn_stats


class ImageEncoder(nn.Module):
    """normalise(head(pool(res5(x)))): (B, d) unit vectors of images `x` (B, 3, H, W) in [0, 1]; the trunk and head
    are the method's own modules (shared, not copied)."""

    def __init__(self, backbone: Backbone, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.head(pooled_res5(self.backbone, x)), dim=1)


class MomentumEncoder(nn.Module):
    """An EMA copy of a query encoder (a module mapping images to (B, d) embeddings).

    Args:
        encoder: the query encoder (`ImageEncoder` of the method's trunk and f); copied once here.
        momentum: m of the update (0.999, MoCo Section 3.2; MoCo v2 keeps it).
        shuffle_bn: under torch.distributed, encode a shuffled global batch (MoCo's shuffling BN); see the module
            docstring.
    """

    def __init__(self, encoder: nn.Module, momentum: float = 0.999, shuffle_bn: bool = True):
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"momentum = {momentum!r}: must be in [0, 1] (MoCo uses 0.999)")
        self.momentum = momentum
        self.shuffle_bn = shuffle_bn
        self.net = copy.deepcopy(encoder)
        for p in self.net.parameters():
            p.requires_grad_(False)
        if initialized_world() > 1:  # rank 0's copy, whatever each rank's network was at this point
            for t in self.net.state_dict().values():
                dist.broadcast(t, src=0)

    @torch.no_grad()
    def update(self, encoder: nn.Module) -> None:
        """theta_k <- m theta_k + (1 - m) theta_q for every parameter; every buffer copied from `encoder` (rank
        0's)."""
        keys, queries = list(self.net.parameters()), [p.detach() for p in encoder.parameters()]
        if len(keys) != len(queries):
            raise ValueError(f"the query encoder has {len(queries)} parameters, the key encoder {len(keys)}")
        torch._foreach_mul_(keys, self.momentum)
        torch._foreach_add_(keys, queries, alpha=1.0 - self.momentum)
        for bk, bq in zip(self.net.buffers(), encoder.buffers()):
            bk.copy_(bq)
            if initialized_world() > 1:
                dist.broadcast(bk, src=0)

    @torch.no_grad()
    def forward(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Keys (B, d) of `images` (B, C, H, W); `generator` draws the BN shuffle (only under torch.distributed)."""
        with frozen_bn_stats(self.net):
            if not (self.shuffle_bn and initialized_world() > 1):
                return self.net(images)
            return self._shuffled(images, generator)

    def _shuffled(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """MoCo's shuffling BN: encode a share of the permuted global batch, gather, restore the order."""
        rank = dist.get_rank()
        owner = torch.full((images.shape[0],), rank, dtype=torch.long, device=images.device)
        everyone, owner = all_gather_rows(images, owner)  # (G, C, H, W), (G,) in rank order
        perm = torch.randperm(everyone.shape[0], generator=generator, device=images.device)
        dist.broadcast(perm, src=0)
        mine = owner == rank  # this rank encodes as many shuffled images as it owns
        (shuffled_keys,) = all_gather_rows(self.net(everyone[perm[mine]]))  # (G, d), shuffled order
        keys = torch.empty_like(shuffled_keys)
        keys[perm] = shuffled_keys
        return keys[mine]
