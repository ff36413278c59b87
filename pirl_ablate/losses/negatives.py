"""Where the positive key and the negatives of a contrastive term come from: an ablation axis of PIRL / NPID.

    memory_bank     (paper Section 3.2) positive m_I, the bank entry of image I; N entries drawn uniformly per sample;
                    after the step m_I <- normalise(0.5 m_I + 0.5 f(v_I)), or with `momentum_encoder` the key
                    encoder's f_k(v_I) in place of f(v_I).
    momentum_queue  (MoCo, He et al. 2020) positive k_I = f_k(v_I'), the momentum encoder's embedding of another view
                    of the same image; negatives: the K keys of the previous batches in a FIFO queue, shared by all
                    queries; after the step the batch's keys (all ranks') are enqueued and the oldest dropped.
    in_batch        (SimCLR, Chen et al. 2020) positive k_I = f(v_I'), the network's own embedding of another view of
                    the same image, with gradient; negatives: the keys of the other images of the global batch.

A source is a submodule of the method that uses it (its state, e.g. the queue and the key encoder, is in the
method's state_dict). It reads from the method the parts it needs: `memory_bank`, `num_negatives` and `generator`
(the bank), `image_encoder()` (the module f's embedding is, copied by a momentum encoder), `image_view` and
`embed_image` (a second view and its embedding). Every source has the same surface, so the method reads the same
whichever is plugged in:

    source.bind(method)                                          # once, at the end of the method's __init__
    keys = source.keys(method, images, v_i, index, generator)    # this step's positives and negatives
    c = source.contrast(torch.stack([g, f], 1), keys, loss_fn, tau)   # c.loss (B, 2), c.pos_sim (B, 2), ...
    source.update(keys, f.detach())                              # bank write / enqueue / nothing

`loss_fn(s_pos (B, K), s_neg (B, K, N)) -> (B, K)` is a partial of `nce_loss` or `infonce_loss`; for the first
batch's partition estimate `source.mean_exp(queries, keys, tau)` is mean(exp(s / tau)) over its scores.

N / |D| in the NCE estimator. For the bank, N entries are drawn from the |D| = dataset-size entries. For the queue
(N = K) and in-batch (N = G - 1 for a global batch of G) the noise samples are the keys themselves, and the source
states |D| := N (`Keys.dataset_size`), so N / |D| = 1 and Z = N mean(exp(s / tau)). The choice does not matter: with
Z = mean(exp(s / tau)) |D| (fixed after the first batch, or its EMA) |D| cancels,
h(s) = exp(s / tau) / (exp(s / tau) + N mean(exp(s / tau))), whatever |D| is stated.

Distributed training: every rank holds the same bank / queue / key encoder. Initial states are drawn on rank 0 and
broadcast; updates all-gather the rows of every rank first (as the memory bank does), so every rank applies the same
update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from torch import Tensor, nn

from pirl_ablate.distributed import all_gather_rows, initialized_world
from pirl_ablate.errors import ConfigError
from pirl_ablate.losses.dense import contrast_function
from pirl_ablate.losses.memory_bank import MemoryBank
from pirl_ablate.losses.nce import Contrast, mean_exp_score
from pirl_ablate.models.momentum import MomentumEncoder
from pirl_ablate.registry import Registry, signature_parameters

NEGATIVES = Registry("negative source")
register_negatives = NEGATIVES.register

LossFn = Callable[[Tensor, Tensor], Tensor]


def build_negatives(name: str, **kwargs: Any) -> NegativeSource:
    """The negative source registered as `name` ("memory_bank", "momentum_queue", "in_batch"), built with `kwargs`
    (gin bindings fill the ones not given); an unknown name raises UnknownNameError with close matches."""
    return NEGATIVES.get(name)(**kwargs)


@dataclass
class Keys:
    """One step's positives and negatives, as a source's `contrast` and `update` read them.

    positive:  memory_bank: (B,) long bank rows (the dataset index); queue / in-batch: (B, d) key embeddings.
    negatives: memory_bank: (B, N) long bank rows per sample; queue: (K, d) keys shared by every query;
               in-batch: (G, d) keys of the global batch, shared.
    dataset_size: the |D| of the NCE estimator's N / |D| (see the module docstring).
    exclude:   in-batch: (B,) column of `negatives` that is the sample's own key (left out of its negatives).
    write:     (B, d) detached embeddings `update` stores (the key encoder's keys), or None: `update` stores f(v_I).
    memory_bank: memory_bank: the method's `MemoryBank` the rows index.
    """

    positive: Tensor
    negatives: Tensor
    dataset_size: int
    exclude: Tensor | None = None
    write: Tensor | None = None
    memory_bank: MemoryBank | None = None


class NegativeSource(nn.Module):
    """The common surface (module docstring). `uses_memory_bank`: the method must be given a `MemoryBank`."""

    uses_memory_bank = False

    @property
    def spec(self) -> dict[str, Any]:
        """{"name", "kwargs"}: `build_negatives(**spec)` builds it again (what a checkpoint records)."""
        name = next(e.name for e in NEGATIVES.describe() if e.obj is type(self))
        params = signature_parameters(type(self)) or {}
        return {"name": name, "kwargs": {key: getattr(self, key) for key, p in params.items()
                                         if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}}

    def bind(self, method: nn.Module) -> None:
        """Allocate the state for `method` (nothing by default)."""

    def keys(self, method: nn.Module, images: Tensor, view: Tensor, index: Tensor, generator: torch.Generator
             ) -> Keys:
        """This step's keys for the batch `images` (B, C, s, s) with dataset `index` (B,); `view` is the query's
        image view v_I, `generator` the view generator (for a second view)."""
        raise NotImplementedError

    def contrast(self, queries: Tensor, keys: Keys, loss_fn: LossFn, tau: float | None = None) -> Contrast:
        raise NotImplementedError

    def mean_exp(self, queries: Tensor, keys: Keys, tau: float) -> Tensor:
        raise NotImplementedError

    def update(self, keys: Keys, f: Tensor) -> None:
        """After the loss: store what the next steps draw from (nothing by default)."""

    def num_keys(self, method: nn.Module) -> int | None:
        """N, the negatives each query is scored against (None before the first step where it depends on the
        batch): what a query's chance loss ln(N + 1) is of."""
        raise NotImplementedError

    def noise_size(self, method: nn.Module) -> int | None:
        """The |D| of the NCE estimator's N / |D| (`Keys.dataset_size`): N for the sources whose noise samples are
        the keys themselves."""
        return self.num_keys(method)


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
    return Contrast(loss, s_pos.detach(), s_neg.detach().mean(-1),
                    scores_mean_exp(s_pos, s_neg, tau) if tau is not None else None)


@register_negatives("memory_bank", gin_name="MemoryBankNegatives")
class MemoryBankNegatives(NegativeSource):
    """PIRL's memory bank: positive m_I, N entries drawn uniformly per sample (the method's `memory_bank` and
    `num_negatives`).

    Args:
        momentum_encoder: entries are written with a key encoder's f_k(v_I) instead of f(v_I).
        encoder_momentum, shuffle_bn: that key encoder's m and BN shuffle (`MomentumEncoder`).
        per_term: a fresh draw of N entries for each term of the loss (negatives (B, K, N); VISSL's nce_loss.py
            samples inside each term's forward), instead of one draw shared by the terms (B, N) as Eq. 5 writes it.
        scoring: how queries are scored against the bank (`pirl_ablate.losses.dense.contrast_function`): "chunked"
            (`bank_contrast`, gathering each sample's N rows, in the bank's dtype), "dense" (one bf16 product with
            the whole bank, `dense_bank_contrast`: for GPUs) or "auto" (dense on CUDA, chunked elsewhere).
    """

    uses_memory_bank = True

    def __init__(self, momentum_encoder: bool = False, encoder_momentum: float = 0.999, shuffle_bn: bool = True,
                 per_term: bool = False, scoring: str = "chunked"):
        super().__init__()
        self.momentum_encoder, self.encoder_momentum, self.shuffle_bn = momentum_encoder, encoder_momentum, shuffle_bn
        self.per_term = per_term
        contrast_function(scoring, "cpu")  # an unknown name: ConfigError now, not at the first step
        self.scoring = scoring
        self.encoder: MomentumEncoder | None = None

    def bind(self, method: nn.Module) -> None:
        """With `momentum_encoder`, copy the method's f encoder into the key encoder."""
        if self.momentum_encoder:
            self.encoder = MomentumEncoder(method.image_encoder(), self.encoder_momentum, self.shuffle_bn)

    def keys(self, method: nn.Module, images: Tensor, view: Tensor, index: Tensor, generator: torch.Generator
             ) -> Keys:
        """(B, N) negatives drawn for `index` from the method's generator, or with `per_term` (B, K, N): one draw
        per term of `method.views` in that order; with the momentum encoder, first step it and embed `view` for the
        bank write."""
        write = None
        if self.encoder is not None:
            self.encoder.update(method.image_encoder())
            write = self.encoder(view, method.generator)
        bank = method.memory_bank
        if self.per_term:
            draws = [bank.sample_negatives(index, method.num_negatives, method.generator) for _ in method.views]
            negatives = torch.stack(draws, dim=1)
        else:
            negatives = bank.sample_negatives(index, method.num_negatives, method.generator)
        return Keys(positive=index, negatives=negatives, dataset_size=bank.size, write=write, memory_bank=bank)

    def contrast(self, queries: Tensor, keys: Keys, loss_fn: LossFn, tau: float | None = None) -> Contrast:
        """`queries` (B, K, d) scored against the bank as `scoring` says; never a (B, N, d) tensor."""
        contrast = contrast_function(self.scoring, queries.device)
        return contrast(queries, keys.memory_bank.bank, keys.positive, keys.negatives, loss_fn, tau)

    def mean_exp(self, queries: Tensor, keys: Keys, tau: float) -> Tensor:
        return mean_exp_score(queries, keys.memory_bank.bank, keys.positive, keys.negatives, tau)

    def update(self, keys: Keys, f: Tensor) -> None:
        """m_I <- normalise(mu m_I + (1 - mu) x), x the key encoder's embedding or else `f` (B, d), detached."""
        keys.memory_bank.update(keys.positive, keys.write if keys.write is not None else f.detach())

    def num_keys(self, method: nn.Module) -> int:
        return method.num_negatives

    def noise_size(self, method: nn.Module) -> int:
        return method.memory_bank.size


@register_negatives("momentum_queue", gin_name="MomentumQueue")
class MomentumQueue(NegativeSource):
    """MoCo's negatives: a FIFO queue of the K most recent keys of a momentum encoder of f.

    Args:
        size: K, the number of keys in the queue (65,536, MoCo / MoCo v2); at most |D|: a larger queue would hold
            older keys of the query's own image among its negatives, and training refuses it
            (`pirl_ablate.build.check_queue_size`).
        momentum: m of the key encoder (0.999, MoCo).
        shuffle_bn: MoCo's shuffling BN under torch.distributed (`MomentumEncoder`).

    The queue starts as K random unit vectors drawn from the method's generator (MoCo's initialisation) and `pointer`
    is the row the next key goes to; rows pointer, pointer + 1, ... (mod K) are overwritten in order, so the oldest
    key leaves first. The positive is the key of a second view v_I' of the image (`method.image_view`).
    """

    def __init__(self, size: int = 65536, momentum: float = 0.999, shuffle_bn: bool = True):
        super().__init__()
        if size < 1:
            raise ConfigError(f"MomentumQueue.size = {size!r}: must be at least 1")
        self.size, self.momentum, self.shuffle_bn = size, momentum, shuffle_bn
        self.encoder: MomentumEncoder | None = None
        self.register_buffer("queue", torch.empty(0))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    def bind(self, method: nn.Module) -> None:
        """Copy the method's f encoder into the key encoder; draw the (size, embed_dim) queue on its device."""
        encoder = method.image_encoder()
        self.encoder = MomentumEncoder(encoder, self.momentum, self.shuffle_bn)
        device = next(encoder.parameters()).device
        queue = torch.randn(self.size, method.embed_dim, generator=method.generator, device=device)
        queue = F.normalize(queue, dim=1)
        if initialized_world() > 1:
            dist.broadcast(queue, src=0)
        self.queue = queue
        self.pointer = torch.zeros((), dtype=torch.long, device=device)

    def keys(self, method: nn.Module, images: Tensor, view: Tensor, index: Tensor, generator: torch.Generator
             ) -> Keys:
        """Step the key encoder, then embed a second view of `images`: positives (B, d); negatives: a copy of the
        queue (K, d), so that `update` may run before `backward()`."""
        self.encoder.update(method.image_encoder())
        k = self.encoder(method.image_view(images, generator), method.generator)
        return Keys(positive=k, negatives=self.queue.clone(), dataset_size=self.size, write=k)

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
        if initialized_world() > 1:
            (k,) = all_gather_rows(k)
        n = k.shape[0]
        if n > self.size:
            raise ConfigError(f"MomentumQueue.size = {self.size} is smaller than the global batch of {n} keys: "
                              f"bind MomentumQueue.size >= {n}")
        rows = (self.pointer + torch.arange(n, device=k.device)) % self.size
        self.queue[rows] = k.to(self.queue.dtype)
        self.pointer.copy_((self.pointer + n) % self.size)

    def num_keys(self, method: nn.Module) -> int:
        return self.size


@register_negatives("in_batch", gin_name="InBatchNegatives")
class InBatchNegatives(NegativeSource):
    """SimCLR's negatives: the keys of the other images of the global batch; no state.

    The keys are the network's own f(v_I') of a second view (with gradient), gathered from every rank with autograd
    (the gradient of a key reaches the rank that computed it); a sample's negatives are the other G - 1 keys.
    """

    def __init__(self):
        super().__init__()
        self.last_num_keys: int | None = None  # G - 1 of the last step (not state: the next step sets it again)

    def keys(self, method: nn.Module, images: Tensor, view: Tensor, index: Tensor, generator: torch.Generator
             ) -> Keys:
        """f(v_I') (B, d) as positives; the (G, d) keys of all ranks, in rank order, as shared negatives."""
        k = method.embed_image(method.image_view(images, generator))
        offset, everyone = 0, k
        if initialized_world() > 1:
            everyone, offset = _gather_with_grad(k)
        exclude = offset + torch.arange(k.shape[0], device=k.device)
        self.last_num_keys = everyone.shape[0] - 1
        return Keys(positive=k, negatives=everyone, dataset_size=everyone.shape[0] - 1, exclude=exclude)

    def contrast(self, queries: Tensor, keys: Keys, loss_fn: LossFn, tau: float | None = None) -> Contrast:
        return shared_contrast(queries, keys.positive, keys.negatives, loss_fn, tau, keys.exclude)

    @torch.no_grad()
    def mean_exp(self, queries: Tensor, keys: Keys, tau: float) -> Tensor:
        return scores_mean_exp(*shared_scores(queries, keys.positive, keys.negatives, keys.exclude), tau)

    def num_keys(self, method: nn.Module) -> int | None:
        """G - 1 for the global batch G of the last step; None before the first."""
        return self.last_num_keys


def _gather_with_grad(t: Tensor) -> tuple[Tensor, int]:
    """Rows of `t` (n, ...) of every rank in rank order, differentiable (ranks may hold different n), and the
    position of this rank's first row among them."""
    counts = [int(c) for c in all_gather_rows(torch.tensor([t.shape[0]], device=t.device))[0]]
    padded = torch.cat([t, t.new_zeros((max(counts) - t.shape[0], *t.shape[1:]))])
    parts = dist_nn.all_gather(padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts)]), sum(counts[: dist.get_rank()])
