"""PIRL's loss (paper Eq. 5) and NPID (its lambda = 0 special case), both against a memory bank.

    L = lambda * L_NCE(m_I, g(v_It)) + (1 - lambda) * L_NCE(m_I, f(v_I))

    L_NCE(m_I, q) = -log h(m_I, q) - sum_{I' in D_N} log(1 - h(q, m_I'))        (Eq. 4, one term per query)

f(v_I) and g(v_It) are the network's L2-normalised embeddings of the image and of its transformed view, m_I the
memory-bank entry of image I (the positive), D_N a set of N bank entries drawn uniformly per sample (the negatives,
shared by the two terms as in Eq. 5's notation), h the NCE probability of `nce.py`. After the loss is computed the
bank takes the detached f(v_I): m_I <- normalise(0.5 m_I + 0.5 f(v_I)).

    loss = build_loss("pirl"); loss.bind(len(dataset), net, None, generator)
    out = loss(net, images, view, index); out.total.backward()
"""

from __future__ import annotations

from functools import partial

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pirl_ablate.errors import ConfigError
from pirl_ablate.losses.base import LossOutput, device_of
from pirl_ablate.losses.memory_bank import MemoryBank, distributed
from pirl_ablate.losses.nce import ESTIMATORS, bank_contrast, infonce_loss, mean_exp_score, nce_loss
from pirl_ablate.losses.registry import register_loss

Z_MODES = ("fixed", "ema")


class _BankContrastLoss(nn.Module):
    """The machinery of PIRLLoss and NPIDLoss: memory bank, negatives, estimator, partition estimate Z."""

    needs_image_view = True
    needs_labels = False
    label_space = None  # what `bind`'s num_classes must be: unused here

    def __init__(self, lambda_: float, tau: float, num_negatives: int, estimator: str, z: str,
                 z_momentum: float):
        super().__init__()
        if not 0.0 <= lambda_ <= 1.0:
            raise ConfigError(f"lambda_ = {lambda_!r}: must be in [0, 1] (paper Eq. 5)")
        if estimator not in ESTIMATORS:
            raise ConfigError(f"estimator = {estimator!r}: must be one of {', '.join(ESTIMATORS)}")
        if z not in Z_MODES:
            raise ConfigError(f"z = {z!r}: must be one of {', '.join(Z_MODES)}")
        if num_negatives < 1:
            raise ConfigError(f"num_negatives = {num_negatives!r}: must be at least 1")
        self.lambda_, self.tau, self.num_negatives = lambda_, tau, num_negatives
        self.estimator, self.z, self.z_momentum = estimator, z, z_momentum
        self.memory_bank: MemoryBank | None = None
        self.generator: torch.Generator | None = None
        self.register_buffer("Z", torch.zeros(()))  # the partition estimate; 0 until the first batch sets it

    @property
    def needs_transformed_view(self) -> bool:
        return self.lambda_ > 0

    def bind(self, dataset_size: int, net: nn.Module, num_classes: int | None,
             generator: torch.Generator) -> None:
        """Allocate the (dataset_size, net.embed_dim) bank on the network's device; `generator` (on that device)
        draws its initialisation and every later set of negatives. Idempotent. Call before load_state_dict."""
        self.generator = generator
        if self.memory_bank is not None and self.memory_bank.size == dataset_size:
            return
        bank = MemoryBank(dataset_size, net.embed_dim, generator, device=device_of(net))
        available = dataset_size - (1 if bank.exclude_positive else 0)
        if self.num_negatives > available:
            raise ConfigError(f"num_negatives = {self.num_negatives} but the dataset has only {dataset_size} "
                              f"images: bind num_negatives <= {available}")
        self.memory_bank = bank
        self.Z = self.Z.to(device_of(net))

    def forward(self, net: nn.Module, image_view: Tensor, transformed, index: Tensor,
                labels: Tensor | None = None) -> LossOutput:
        """Eq. 5 for images `image_view` (B, C, H, W), their transformed `View`, dataset `index` (B,) long."""
        if self.memory_bank is None:
            raise RuntimeError("call loss.bind(dataset_size, net, num_classes, generator) before the first step")
        bank = self.memory_bank
        f = net.embed_image(image_view)  # (B, d)
        queries = {"image": f}
        if self.needs_transformed_view:
            queries = {"transformed": net.embed_transformed(transformed), "image": f}
        q = torch.stack(list(queries.values()), dim=1)  # (B, K, d), K = 2 (PIRL) or 1 (NPID)
        negatives = bank.sample_negatives(index, self.num_negatives, self.generator)  # (B, N)
        parts: dict[str, Tensor] = {}
        if self.estimator == "nce":
            if self.Z <= 0:  # the first batch estimates Z from its own scores (NPID, VISSL)
                self._set_z(mean_exp_score(q, bank.bank, index, negatives, self.tau) * bank.size)
            loss_fn = partial(nce_loss, tau=self.tau, log_z=self.Z.log(), dataset_size=bank.size)
            parts["Z"] = self.Z.clone()
        else:
            loss_fn = partial(infonce_loss, tau=self.tau)
        ema = self.estimator == "nce" and self.z == "ema"
        contrast = bank_contrast(q, bank.bank, index, negatives, loss_fn, self.tau if ema else None)
        weights = {"transformed": self.lambda_, "image": 1.0 - self.lambda_}
        total = q.new_zeros((), dtype=contrast.loss.dtype)
        for k, name in enumerate(queries):
            term = contrast.loss[:, k].mean()
            total = total + weights[name] * term
            parts[f"loss_{name}"] = term.detach()
            parts[f"pos_sim_{name}"] = contrast.pos_sim[:, k].mean()
        if ema:  # the next batch uses the average including this one
            self._set_z(self.z_momentum * self.Z + (1 - self.z_momentum) * contrast.mean_exp * bank.size)
        bank.update(index, f.detach())
        return LossOutput(total, parts)

    def _set_z(self, z: Tensor) -> None:
        """Z <- z, averaged over ranks so that every rank normalises alike."""
        z = z.detach().to(self.Z.dtype)
        if distributed():
            dist.all_reduce(z)
            z = z / dist.get_world_size()
        self.Z.copy_(z)


@register_loss("pirl", gin_name="PIRLLoss")
class PIRLLoss(_BankContrastLoss):
    """PIRL: NCE against a memory bank for both the transformed view and the image (Eq. 5).

    Args:
        lambda_: weight of the transformed-view term (0.5, Section 3.2 / Figure 6); 0 gives NPID.
        tau: temperature of the cosine scores (0.07, Section 3.2).
        num_negatives: N bank entries drawn per sample (32,000, Section 4; 4,096 in some ablations).
        estimator: "nce" (the paper's, Eq. 3) or "infonce" (softmax cross-entropy, as PyContrast).
        z: "fixed": Z = mean(exp(s / tau)) * |D| estimated on the first batch and kept (NPID, VISSL);
            "ema": that first estimate, then after each batch Z <- z_momentum * Z + (1 - z_momentum) * Z_batch,
            used from the next batch on (so each step gathers the negatives once).
        z_momentum: the EMA's momentum.
    """

    def __init__(self, lambda_: float = 0.5, tau: float = 0.07, num_negatives: int = 32000,
                 estimator: str = "nce", z: str = "fixed", z_momentum: float = 0.99):
        super().__init__(lambda_, tau, num_negatives, estimator, z, z_momentum)


@register_loss("npid", gin_name="NPIDLoss")
class NPIDLoss(_BankContrastLoss):
    """NPID (Wu et al. 2018): the image term of PIRL alone (lambda = 0); the transformed view is never computed.

    NPID++ (paper Section 4) is this loss with num_negatives = 32,000 and a longer schedule: gin/npid_pp.gin.

    Args:
        tau: temperature (0.07).
        num_negatives: N (4,096 as in NPID).
        estimator, z, z_momentum: as PIRLLoss.
    """

    def __init__(self, tau: float = 0.07, num_negatives: int = 4096, estimator: str = "nce", z: str = "fixed",
                 z_momentum: float = 0.99):
        super().__init__(0.0, tau, num_negatives, estimator, z, z_momentum)
