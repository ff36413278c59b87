"""Contrastive estimators against a memory bank, and a memory-light way to score N negatives per sample.

Scores are cosine similarities s = q . m of unit vectors. For a query q with positive entry m_pos and negatives
m_1..m_N drawn from a bank of |D| entries (paper Section 3.2, Eq. 3-4):

    nce:      p(s) = exp(s / tau) / Z,    h(s) = p(s) / (p(s) + N / |D|)
              L = -log h(s_pos) - sum_j log(1 - h(s_j))
    infonce:  L = -log( exp(s_pos / tau) / (exp(s_pos / tau) + sum_j exp(s_j / tau)) )

Z is a partition estimate, mean(exp(s / tau)) * |D| over a batch's scores (NPID, VISSL).

Memory: writing the negatives out as a (B, N, d) tensor costs 4.2 GB at paper scale (B = 256, N = 32,000, d = 128)
and autograd keeps it for the backward pass. `bank_contrast` never does: it walks the batch in chunks of a few
samples, gathers their (c, N, d) rows, computes their loss *and* its gradient with respect to the queries at once
(the bank gets no gradient, and each sample's loss depends only on its own queries), and drops the rows. The backward
pass then multiplies the stored (B, K, d) gradients by the incoming ones: no second gather, and the bank may be
updated before `backward()` runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

ESTIMATORS = ("nce", "infonce")
CHUNK_BYTES = 32 * 2**20  # size of one chunk of gathered negatives; small enough to stay cache- and malloc-friendly


def nce_loss(s_pos: Tensor, s_neg: Tensor, tau: float, log_z: Tensor | float, dataset_size: int) -> Tensor:
    """Per-query NCE loss (...,) from positive scores (...,) and negative scores (..., N).

    With p = exp(s / tau - log Z) and k = N / |D|:  -log h(s) = softplus(log k - log p) and
    -log(1 - h(s)) = softplus(log p - log k), written this way to stay finite for any score.
    """
    log_k = math.log(s_neg.shape[-1] / dataset_size)
    log_p_pos = s_pos / tau - log_z
    log_p_neg = s_neg / tau - log_z
    return F.softplus(log_k - log_p_pos) + F.softplus(log_p_neg - log_k).sum(dim=-1)


def infonce_loss(s_pos: Tensor, s_neg: Tensor, tau: float) -> Tensor:
    """Per-query InfoNCE loss (...,): softmax cross-entropy over [s_pos, s_1..s_N] / tau with the positive as target."""
    logits = torch.cat([s_pos.unsqueeze(-1), s_neg], dim=-1) / tau
    return torch.logsumexp(logits, dim=-1) - s_pos / tau


def estimator(name: str, tau: float, log_z: Tensor | float | None = None, dataset_size: int | None = None
              ) -> Callable[[Tensor, Tensor], Tensor]:
    """`loss_fn(s_pos, s_neg) -> (...,)` of the estimator `name` ("nce" needs log Z and |D|, "infonce" neither)."""
    if name == "nce":
        return partial(nce_loss, tau=tau, log_z=log_z, dataset_size=dataset_size)
    return partial(infonce_loss, tau=tau)


@dataclass
class Contrast:
    """Result of `bank_contrast`: `loss` (B, K) differentiable in the queries; detached: `pos_sim` (B, K), the
    positive's score, `neg_sim` (B, K), the mean score of the N negatives, and `mean_exp` (scalar, the mean of
    exp(s / tau) over every positive and negative score; None unless tau was given)."""

    loss: Tensor
    pos_sim: Tensor
    neg_sim: Tensor
    mean_exp: Tensor | None


class _KnownGradient(torch.autograd.Function):
    """y = values (B, K) with dy[b, k] / dq[b, k] = grad[b, k] (B, K, d), and y[b, k] independent of other queries."""

    @staticmethod
    def forward(ctx, queries: Tensor, values: Tensor, grad: Tensor) -> Tensor:
        ctx.save_for_backward(grad)
        ctx.dtype = queries.dtype
        return values.clone()

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None]:
        (grad,) = ctx.saved_tensors
        return (grad_out.unsqueeze(-1) * grad).to(ctx.dtype), None, None


def _chunks(bank: Tensor, positive: Tensor, negatives: Tensor, chunk_bytes: int | None
            ) -> Iterator[tuple[slice, Tensor, Tensor]]:
    """Yield (rows of the batch, positive entries (c, d), negative entries (c, N, d), or (c, K, N, d) for
    per-query negatives (B, K, N)) for chunks of c samples whose negatives take about `chunk_bytes` (default
    CHUNK_BYTES). They are gathered into one reused buffer, overwritten by the next chunk."""
    b, per_sample = negatives.shape[0], negatives[0].numel()
    d = bank.shape[1]
    c = max(1, min(b, (chunk_bytes or CHUNK_BYTES) // (per_sample * d * bank.element_size())))
    buffer = bank.new_empty(c * per_sample, d)
    for start in range(0, b, c):
        rows = slice(start, min(start + c, b))
        idx = negatives[rows].reshape(-1)
        neg = torch.index_select(bank, 0, idx, out=buffer[: idx.shape[0]])
        yield rows, bank.index_select(0, positive[rows]), neg.view(*negatives[rows].shape, d)


def _negative_scores(q: Tensor, neg: Tensor) -> Tensor:
    """(c, K, N) scores of queries q (c, K, d) against negatives shared by a sample's K queries (c, N, d) or drawn
    per query (c, K, N, d)."""
    if neg.dim() == 3:
        return torch.bmm(q, neg.transpose(1, 2))
    return torch.einsum("ckd,cknd->ckn", q, neg)


@torch.no_grad()
def mean_exp_score(queries: Tensor, bank: Tensor, positive: Tensor, negatives: Tensor, tau: float,
                   chunk_bytes: int | None = None) -> Tensor:
    """mean(exp(s / tau)) over the positive and negative scores of `queries` (B, K, d) (negatives (B, N) or
    (B, K, N) as `bank_contrast`); Z = this * |D|."""
    q = queries.detach().to(bank.dtype)
    total = q.new_zeros(())
    for rows, pos, neg in _chunks(bank, positive, negatives, chunk_bytes):
        with torch.autocast(q.device.type, enabled=False):
            total += torch.exp((q[rows] * pos.unsqueeze(1)).sum(-1) / tau).sum()
            total += torch.exp(_negative_scores(q[rows], neg) / tau).sum()
    return total / (q.shape[0] * q.shape[1] * (negatives.shape[-1] + 1))


def bank_contrast(queries: Tensor, bank: Tensor, positive: Tensor, negatives: Tensor,
                  loss_fn: Callable[[Tensor, Tensor], Tensor], tau: float | None = None,
                  chunk_bytes: int | None = None) -> Contrast:
    """Per-query losses of `queries` (B, K, d) against bank entries, never holding a (B, N, d) tensor.

    Query q[b, k] has positive bank[positive[b]] and negatives bank[negatives[b, j]], j < N (the same N entries
    for the K queries of a sample), or bank[negatives[b, k, j]] for negatives (B, K, N) drawn per query.
    `loss_fn(s_pos (c, K), s_neg (c, K, N)) -> (c, K)` is the estimator (e.g. a
    partial of `nce_loss`). The result's `loss` back-propagates into `queries` only; the bank may change after
    this returns without affecting the gradient. With `tau`, also mean(exp(s / tau)) for a partition estimate.
    """
    q = queries.detach().to(bank.dtype)
    values = torch.empty(q.shape[:2], dtype=q.dtype, device=q.device)
    grad = torch.empty_like(q)
    pos_sim = torch.empty_like(values)
    neg_sim = torch.empty_like(values)
    exp_sum = q.new_zeros(())
    for rows, pos, neg in _chunks(bank, positive, negatives, chunk_bytes):
        with torch.enable_grad(), torch.autocast(q.device.type, enabled=False):  # scores in the bank's dtype
            q_rows = q[rows].requires_grad_()
            s_pos = (q_rows * pos.unsqueeze(1)).sum(-1)  # (c, K)
            s_neg = _negative_scores(q_rows, neg)  # (c, K, N)
            loss = loss_fn(s_pos, s_neg)
            (grad[rows],) = torch.autograd.grad(loss.sum(), q_rows)
        values[rows] = loss.detach()
        pos_sim[rows] = s_pos.detach()
        neg_sim[rows] = s_neg.detach().mean(-1)
        if tau is not None:
            exp_sum += torch.exp(s_pos.detach() / tau).sum() + s_neg.detach().div(tau).exp_().sum()
    mean_exp = exp_sum / (q.shape[0] * q.shape[1] * (negatives.shape[-1] + 1)) if tau is not None else None
    return Contrast(_KnownGradient.apply(queries, values, grad), pos_sim, neg_sim, mean_exp)
