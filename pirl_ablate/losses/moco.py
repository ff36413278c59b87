"""MoCo v2 (Chen, Fan, Girshick & He 2020) as pieces for a method: its network, negatives, loss and views.

    q = f(x_q)    = normalise(W_2 relu(W_1 pool(res5(x_q))))      the MLP head, 2048 -> 2048 -> 128 on R-50
    k = f_k(x_k)                                                  the momentum encoder, m = 0.999, no gradient
    L = -log( exp(q . k / tau) / (exp(q . k / tau) + sum_{j < K} exp(q . queue_j / tau)) ),   tau = 0.2, K = 65,536

x_q and x_k are two independent `moco_v2` views of the same image; after the step the batch's keys enter the queue.
Optimisation (MoCo v2, Table 1 / main_moco.py): SGD lr 0.03 per 256 images, momentum 0.9, weight decay 1e-4,
cosine schedule, 200 epochs (800 for its best number, 71.1% ImageNet linear top-1).

    net = moco_v2_network(Backbone("resnet50")); queue = moco_v2_negatives(); queue.bind(len(dataset), net, gen)
    view = build_transform("moco_v2")
    out = moco_v2_loss(net, queue, view(x, gen).data, view(x, gen).data, index); out.total.backward()
"""

from __future__ import annotations

from functools import partial

from torch import Tensor

from pirl_ablate.losses.base import LossOutput
from pirl_ablate.losses.nce import infonce_loss
from pirl_ablate.losses.negatives import MomentumQueue
from pirl_ablate.models.backbone import Backbone
from pirl_ablate.models.network import PIRLNet

QUEUE_SIZE, MOMENTUM, TAU, EMBED_DIM = 65536, 0.999, 0.2, 128  # MoCo v2's K, m, tau and d


def moco_v2_network(backbone: Backbone, embed_dim: int = EMBED_DIM) -> PIRLNet:
    """The query network: the trunk with the two-layer MLP head as f (`PIRLNet.embed_image`; g is unused)."""
    return PIRLNet(backbone, embed_dim=embed_dim, mlp_heads=True)


def moco_v2_negatives(size: int = QUEUE_SIZE, momentum: float = MOMENTUM, shuffle_bn: bool = True) -> MomentumQueue:
    """The queue of K momentum keys, with MoCo's shuffling BN under DDP."""
    return MomentumQueue(size=size, momentum=momentum, shuffle_bn=shuffle_bn)


def moco_v2_loss(net: PIRLNet, queue: MomentumQueue, query_images: Tensor, key_images: Tensor, index: Tensor,
                 tau: float = TAU) -> LossOutput:
    """InfoNCE of q = f(query_images) (B, C, H, W) against k = f_k(key_images) and the queue; then enqueue k."""
    q = net.embed_image(query_images)  # (B, d)
    keys = queue.keys(net, key_images, index)  # k (B, d), queue (K, d)
    contrast = queue.contrast(q.unsqueeze(1), keys, partial(infonce_loss, tau=tau))  # loss (B, 1)
    queue.update(keys, q.detach())
    loss = contrast.loss.mean()
    return LossOutput(loss, {"loss_image": loss.detach(), "pos_sim_image": contrast.pos_sim.mean()})
