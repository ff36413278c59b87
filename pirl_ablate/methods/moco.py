"""MoCo v2 (Chen, Fan, Girshick & He 2020, "Improved Baselines with Momentum Contrastive Learning").

    x_q, x_k = two `moco_v2` views of I                           (crop 0.2-1, jitter p 0.8, grey 0.2, blur 0.5, flip)
    q = f(x_q)   = normalise(W_2 relu(W_1 pool(res5(x_q))))       the MLP head, 2048 -> 2048 -> 128 on R-50
    k = f_k(x_k)                                                  the momentum encoder of f, m = 0.999, no gradient
    L = -log( exp(q . k / tau) / (exp(q . k / tau) + sum_{j < K} exp(q . queue_j / tau)) ),   tau = 0.2, K = 65,536
    queue <- enqueue(k), the oldest K keys dropped

Optimisation (MoCo v2 Table 1 / main_moco.py): SGD lr 0.03 per 256 images, momentum 0.9, weight decay 1e-4, cosine
schedule, 200 epochs (800 for its best number, 71.1% ImageNet linear top-1): gin/moco_v2.gin, gin/paper/moco_v2.gin.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor

from pirl_ablate.losses import MomentumQueue, infonce_loss
from pirl_ablate.methods.base import Method, register_method
from pirl_ablate.models import Backbone, projection


@register_method("moco_v2", gin_name="MoCoV2")
class MoCoV2(Method):
    """MoCo v2: InfoNCE of f(x_q) against a momentum encoder's key of x_k and a queue of K earlier keys.

    Args (gin: `MoCoV2.*`):
        image_transform: the view both x_q and x_k are drawn from (`moco_v2`, MoCo v2's augmentations).
        queue_size: K (65,536); at most |D| (training refuses a larger queue). momentum: m of the key encoder (0.999).
        tau: temperature (0.2, MoCo v2). embed_dim: output of the MLP head (128).
        shuffle_bn: MoCo's shuffling BN under torch.distributed (`MomentumEncoder`).
        backbone, generator: as `Method` (the generator draws the initial queue and the BN shuffle).
    """

    views = ("image",)

    def __init__(self, backbone: Backbone, image_transform: Any = None, *, generator: torch.Generator,
                 queue_size: int = 65536, momentum: float = 0.999, tau: float = 0.2, embed_dim: int = 128,
                 shuffle_bn: bool = True):
        super().__init__(backbone, image_transform=image_transform, generator=generator)
        self.queue_size, self.momentum, self.tau, self.embed_dim = queue_size, momentum, tau, embed_dim
        self.shuffle_bn = shuffle_bn
        self.f = projection(backbone.feature_dim, embed_dim, mlp=True)
        self.queue = MomentumQueue(queue_size, momentum, shuffle_bn)
        self.queue.bind(self)

    def embed_image(self, x: Tensor) -> Tensor:
        """f(x): (B, embed_dim), unit L2 norm, of images `x` (B, 3, H, W) in [0, 1]."""
        return self.image_encoder()(x)

    def forward(self, images: Tensor, index: Tensor, labels: Tensor, generator: torch.Generator
                ) -> tuple[Tensor, dict[str, Tensor]]:
        """InfoNCE for `images` (B, 3, s, s): x_q, then x_k drawn from `generator`; enqueues the keys after."""
        x_q = self.image_view(images, generator)
        q = self.embed_image(x_q)  # (B, d)
        keys = self.queue.keys(self, images, x_q, index, generator)  # k = f_k(x_k) (B, d), the queue (K, d)
        c = self.queue.contrast(q[:, None], keys, partial(infonce_loss, tau=self.tau))  # (B, 1)
        self.queue.update(keys, q.detach())
        loss = c.loss.mean()
        return loss, {"loss_image": loss.detach(), "pos_sim_image": c.pos_sim.mean(),
                      "neg_sim_image": c.neg_sim.mean()}
