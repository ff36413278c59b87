"""Where the positive key and the negatives of a contrastive term come from: an ablation axis of PIRL / NPID.

    memory_bank     (paper Section 3.2) positive m_I, the bank entry of image I; N entries drawn uniformly per sample;
                    after the step m_I <- normalise(0.5 m_I + 0.5 f(v_I)), or with `momentum_encoder` the key
                    encoder's f_k(v_I) in place of f(v_I).
    momentum_queue  (MoCo, He et al. 2020) positive k_I = f_k(v_I'), the momentum encoder's embedding of a view of the
                    same image; negatives: the K keys of the previous batches in a FIFO queue, shared by all queries;
                    after the step the batch's keys (all ranks') are enqueued and the oldest dropped.
    in_batch        (SimCLR, Chen et al. 2020) positive k_I = f(v_I'), the network's own embedding of a view of the
                    same image, with gradient; negatives: the keys of the other images of the global batch.

Every source has the same surface, so a method (PIRL: queries g(v_It) and f(v_I); NPID: f(v_I)) reads the same
whichever is plugged in:

    keys = source.keys(net, key_images, index)              # positives and negatives of this step
    c = source.contrast(torch.stack([g, f], 1), keys, loss_fn, tau)   # c.loss (B, 2), c.pos_sim (B, 2)
    loss = lam * c.loss[:, 0].mean() + (1 - lam) * c.loss[:, 1].mean()
    source.update(keys, f.detach())                         # bank write / enqueue / nothing

`loss_fn(s_pos (B, K), s_neg (B, K, N)) -> (B, K)` is a partial of `nce_loss` or `infonce_loss`. For the first
batch's partition estimate, `source.mean_exp(queries, keys, tau)` is mean(exp(s / tau)) over its scores.

N / |D| in the NCE estimator. `nce_loss` takes N from the scores (the bank's num_negatives, the queue size K, or
G - 1 for a global batch of G) and |D| as given. The queue's keys and the other images of a batch are, like the
bank's draws, samples of the dataset's images, so the noise distribution is uniform over D and N / |D| keeps its
meaning with N = K or N = G - 1. Whatever |D| is passed, it cancels as long as Z is estimated as
mean(exp(s / tau)) * |D| with that same |D| (fixed or EMA): h(s) = exp(s / tau) / (exp(s / tau) + N mean(exp(s / tau))).

Distributed training: every rank holds the same bank / queue / key encoder. Initial states are drawn on rank 0 and
broadcast; updates all-gather the rows of every rank first (as the memory bank does), so every rank applies the same
update. All state (bank, queue, pointer, key encoder) is in `state_dict()`; call `bind` before `load_state_dict`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gin
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from torch import Tensor, nn

from pirl_ablate.errors import ConfigError
from pirl_ablate.losses.base import device_of
from pirl_ablate.losses.memory_bank import MemoryBank, all_gather_rows, distributed
from pirl_ablate.losses.nce import Contrast, bank_contrast, mean_exp_score
from pirl_ablate.models.momentum import MomentumEncoder
from pirl_ablate.registry import Registry

NEGATIVES = Registry("negatives")
register_negatives = NEGATIVES.register

LossFn = Callable[[Tensor, Tensor], Tensor]


@gin.configurable
def build_negatives(name: str | None = None) -> nn.Module:
    """The negative source registered as `name` (gin: `build_negatives.name = 'momentum_queue'`; default
    "memory_bank"), built with its bindings."""
    return NEGATIVES.get(name or "memory_bank")()


@dataclass
class Keys:
    """One step's positives and negatives, as a source's `contrast` and `update` read them.

    positive:  memory_bank: (B,) long bank rows (the dataset index); queue / in-batch: (B, d) key embeddings.
    negatives: memory_bank: (B, N) long bank rows per sample; queue: (K, d) keys shared by every query;
               in-batch: (G, d) keys of the global batch, shared.
    exclude:   in-batch: (B,) column of `negatives` that is the sample's own key (left out of its negatives).
    write:     (B, d) detached embeddings `update` stores (key encoder's keys), or None: `update` stores f(v_I).
    """

    positive: Tensor
    negatives: Tensor
    exclude: Tensor | None = None
    write: Tensor | None = None


def shared_scores(queries: Tensor, positives: Tensor, negatives: Tensor, exclude: Tensor | None = None
                  ) -> tuple[Tensor, Tensor]:
    """Scores of `queries` (B, K, d) against one (M, d) matrix of negatives shared by all queries, in float32.

    s_pos[b, k] = q[b, k] . positives[b] (positives (B, d)): (B, K); s_neg[b, k, j] = q[b, k] . negatives[j] for
    every j < M, or every j != exclude[b] (then N = M - 1): (B, K, N). Differentiable in all three inputs.
    """
    with torch.autocast(queries.device.type, enabled=False):
        q, pos, neg = queries.float(), positives.float(), negatives.float()
        s_pos = torch.einsum("bkd,bd->bk", q, pos)
        s_neg = torch.einsum("bkd,md->bkm", q, neg)
        if exclude is None:
            return s_pos, s_neg
        cols = torch.arange(neg.shape[0] - 1, device=q.device).expand(q.shape[0], -1)
        cols = cols + (cols >= exclude[:, None]).long()  # (B, M - 1): every column but exclude[b]
        return s_pos, s_neg.gather(2, cols[:, None, :].expand(-1, q.shape[1], -1))


def scores_mean_exp(s_pos: Tensor, s_neg: Tensor, tau: float) -> Tensor:
    """mean(exp(s / tau)) over positive (B, K) and negative (B, K, N) scores, detached; Z = this * |D|."""
    scores = torch.cat([s_pos.detach().unsqueeze(-1), s_neg.detach()], dim=-1)
    return torch.exp(scores / tau).mean()


def shared_contrast(queries: Tensor, positives: Tensor, negatives: Tensor, loss_fn: LossFn,
                    tau: float | None = None, exclude: Tensor | None = None) -> Contrast:
    """Per-query losses (B, K) of `queries` (B, K, d) against shared negatives (`shared_scores`); autograd into
    queries, positives and negatives (in-batch keys carry a gradient, queue keys do not). With `tau`, also
    mean(exp(s / tau)) for a partition estimate."""
    s_pos, s_neg = shared_scores(queries, positives, negatives, exclude)
    with torch.autocast(queries.device.type, enabled=False):
        loss = loss_fn(s_pos, s_neg)
    return Contrast(loss, s_pos.detach(), scores_mean_exp(s_pos, s_neg, tau) if tau is not None else None)


@register_negatives("memory_bank", gin_name="MemoryBankNegatives")
class MemoryBankNegatives(nn.Module):
    """PIRL's memory bank as a negative source: positive m_I, N entries drawn uniformly per sample.

    The bank is today's `MemoryBank`, so its gin bindings (`MemoryBank.momentum`, `.exclude_positive`, `.init`)
    apply as they do to PIRLLoss / NPIDLoss; `memory_bank` is that bank (for the "features" fill and the kNN
    monitor).

    Args:
        num_negatives: N bank entries drawn per sample (32,000, paper Section 4; 4,096 for NPID).
        momentum_encoder: entries are written with the key encoder's f_k(v_I) instead of f(v_I) (and
            `keys` computes them from `key_images`).
        encoder_momentum, shuffle_bn: the key encoder's m and BN shuffle (`MomentumEncoder`).
    """

    def __init__(self, num_negatives: int = 32000, momentum_encoder: bool = False, encoder_momentum: float = 0.999,
                 shuffle_bn: bool = True):
        super().__init__()
        if num_negatives < 1:
            raise ConfigError(f"num_negatives = {num_negatives!r}: must be at least 1")
        self.num_negatives = num_negatives
        self.momentum_encoder, self.encoder_momentum, self.shuffle_bn = momentum_encoder, encoder_momentum, shuffle_bn
        self.memory_bank: MemoryBank | None = None
        self.encoder: MomentumEncoder | None = None
        self.generator: torch.Generator | None = None

    def bind(self, dataset_size: int, net: nn.Module, generator: torch.Generator) -> None:
        """Allocate the (dataset_size, net.embed_dim) bank (and copy `net` into the key encoder) on the network's
        device; `generator` draws the bank's initialisation, the negatives and the BN shuffle."""
        self.generator = generator
        bank = MemoryBank(dataset_size, net.embed_dim, generator, device=device_of(net))
        available = dataset_size - (1 if bank.exclude_positive else 0)
        if self.num_negatives > available:
            raise ConfigError(f"num_negatives = {self.num_negatives} but the dataset has only {dataset_size} "
                              f"images: bind num_negatives <= {available}")
        self.memory_bank = bank
        if self.momentum_encoder:
            self.encoder = MomentumEncoder(net, self.encoder_momentum, self.shuffle_bn)

    def keys(self, net: nn.Module, key_images: Tensor | None, index: Tensor) -> Keys:
        """Draw (B, N) negatives for `index` (B,); with the momentum encoder, first step it and embed
        `key_images` (B, C, H, W) (the image view v_I) for the bank write."""
        if self.memory_bank is None:
            raise RuntimeError("call bind(dataset_size, net, generator) before the first step")
        write = None
        if self.encoder is not None:
            self.encoder.update(net)
            write = self.encoder.embed_image(key_images, self.generator)
        negatives = self.memory_bank.sample_negatives(index, self.num_negatives, self.generator)
        return Keys(positive=index, negatives=negatives, write=write)

    def contrast(self, queries: Tensor, keys: Keys, loss_fn: LossFn, tau: float | None = None) -> Contrast:
        """`bank_contrast` of `queries` (B, K, d): chunked, never a (B, N, d) tensor."""
        return bank_contrast(queries, self.memory_bank.bank, keys.positive, keys.negatives, loss_fn, tau)

    def mean_exp(self, queries: Tensor, keys: Keys, tau: float) -> Tensor:
        return mean_exp_score(queries, self.memory_bank.bank, keys.positive, keys.negatives, tau)

    def update(self, keys: Keys, f: Tensor) -> None:
        """m_I <- normalise(mu m_I + (1 - mu) x), x the key encoder's embedding or else `f` (B, d), detached."""
        self.memory_bank.update(keys.positive, keys.write if keys.write is not None else f.detach())


@register_negatives("momentum_queue", gin_name="MomentumQueue")
class MomentumQueue(nn.Module):
    """MoCo's negatives: a FIFO queue of the K most recent keys of a momentum encoder.

    Args:
        size: K, the number of keys in the queue (65,536, MoCo / MoCo v2); at most |D|, else the queue holds older
            keys of the query's own image as negatives.
        momentum: m of the key encoder (0.999, MoCo).
        shuffle_bn: MoCo's shuffling BN under torch.distributed (`MomentumEncoder`).

    The queue starts as K random unit vectors (MoCo's initialisation) and `pointer` is the row the next key
    goes to; rows pointer, pointer + 1, ... (mod K) are overwritten in order, so the oldest key leaves first.
    """

    def __init__(self, size: int = 65536, momentum: float = 0.999, shuffle_bn: bool = True):
        super().__init__()
        if size < 1:
            raise ConfigError(f"MomentumQueue.size = {size!r}: must be at least 1")
        self.size, self.momentum, self.shuffle_bn = size, momentum, shuffle_bn
        self.encoder: MomentumEncoder | None = None
        self.generator: torch.Generator | None = None
        self.register_buffer("queue", torch.empty(0))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    def bind(self, dataset_size: int, net: nn.Module, generator: torch.Generator) -> None:
        """Copy `net` into the key encoder and draw the (size, net.embed_dim) initial queue on its device."""
        if self.size > dataset_size:
            raise ConfigError(f"MomentumQueue.size = {self.size} but the dataset has only {dataset_size} images: "
                              f"bind MomentumQueue.size <= {dataset_size}")
        self.generator = generator
        self.encoder = MomentumEncoder(net, self.momentum, self.shuffle_bn)
        queue = F.normalize(torch.randn(self.size, net.embed_dim, generator=generator, device=device_of(net)), dim=1)
        if distributed():
            dist.broadcast(queue, src=0)
        self.queue = queue
        self.pointer = torch.zeros((), dtype=torch.long, device=queue.device)

    def keys(self, net: nn.Module, key_images: Tensor, index: Tensor) -> Keys:
        """Step the key encoder, then embed `key_images` (B, C, H, W): positives (B, d); negatives: a copy of the
        queue (K, d), so that `update` may run before `backward()`."""
        if self.encoder is None:
            raise RuntimeError("call bind(dataset_size, net, generator) before the first step")
        self.encoder.update(net)
        k = self.encoder.embed_image(key_images, self.generator)
        return Keys(positive=k, negatives=self.queue.clone(), write=k)

    def contrast(self, queries: Tensor, keys: Keys, loss_fn: LossFn, tau: float | None = None) -> Contrast:
        return shared_contrast(queries, keys.positive, keys.negatives, loss_fn, tau)

    @torch.no_grad()
    def mean_exp(self, queries: Tensor, keys: Keys, tau: float) -> Tensor:
        return scores_mean_exp(*shared_scores(queries, keys.positive, keys.negatives), tau)

    def update(self, keys: Keys, f: Tensor) -> None:
        """Enqueue this step's keys of every rank (rank order), dropping as many of the oldest."""
        self.enqueue(keys.write)

    @torch.no_grad()
    def enqueue(self, k: Tensor) -> None:
        """Rows pointer .. pointer + n - 1 (mod K) <- `k` (n, d), all ranks' rows gathered first; n <= K."""
        if distributed():
            (k,) = all_gather_rows(k)
        n = k.shape[0]
        if n > self.size:
            raise ConfigError(f"MomentumQueue.size = {self.size} is smaller than the global batch of {n} keys: "
                              f"bind MomentumQueue.size >= {n}")
        rows = (self.pointer + torch.arange(n, device=k.device)) % self.size
        self.queue[rows] = k.to(self.queue.dtype)
        self.pointer.copy_((self.pointer + n) % self.size)


@register_negatives("in_batch", gin_name="InBatchNegatives")
class InBatchNegatives(nn.Module):
    """SimCLR's negatives: the keys of the other images of the global batch; no state.

    The keys are the network's own f(v_I') (with gradient), gathered from every rank with autograd (the gradient
    of a key reaches the rank that computed it); a sample's negatives are the other G - 1 keys.
    """

    def bind(self, dataset_size: int, net: nn.Module, generator: torch.Generator) -> None:
        """Nothing to allocate (kept for the common surface)."""

    def keys(self, net: nn.Module, key_images: Tensor, index: Tensor) -> Keys:
        """f(key_images) (B, d) as positives; the (G, d) keys of all ranks, in rank order, as shared negatives."""
        k = net.embed_image(key_images)
        if not distributed():
            return Keys(positive=k, negatives=k, exclude=torch.arange(k.shape[0], device=k.device))
        everyone, offset = _gather_with_grad(k)
        return Keys(positive=k, negatives=everyone, exclude=offset + torch.arange(k.shape[0], device=k.device))

    def contrast(self, queries: Tensor, keys: Keys, loss_fn: LossFn, tau: float | None = None) -> Contrast:
        return shared_contrast(queries, keys.positive, keys.negatives, loss_fn, tau, keys.exclude)

    @torch.no_grad()
    def mean_exp(self, queries: Tensor, keys: Keys, tau: float) -> Tensor:
        return scores_mean_exp(*shared_scores(queries, keys.positive, keys.negatives, keys.exclude), tau)

    def update(self, keys: Keys, f: Tensor) -> None:
        """Nothing to update."""


def _gather_with_grad(t: Tensor) -> tuple[Tensor, int]:
    """Rows of `t` (n, ...) of every rank in rank order, differentiable (ranks may hold different n), and the
    position of this rank's first row among them."""
    counts = [int(c) for c in all_gather_rows(torch.tensor([t.shape[0]], device=t.device))[0]]
    padded = torch.cat([t, t.new_zeros((max(counts) - t.shape[0], *t.shape[1:]))])
    parts = dist_nn.all_gather(padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts)]), sum(counts[: dist.get_rank()])
