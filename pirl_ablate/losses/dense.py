"""Scoring queries against a memory bank with one dense matrix product over the whole bank: the memory-bank
source's `scoring = "dense"` (`MemoryBankNegatives.scoring`, made for GPUs; "chunked", `bank_contrast`, is the
default).

Same contract as `pirl_ablate.losses.nce.bank_contrast` (per-query losses differentiable in the queries, the
positive and mean negative similarities, mean(exp(s / tau))), computed differently. Instead of gathering each
sample's N negative rows, (B, N, d) random reads of 512-byte rows in chunks of a few samples, it multiplies the
B K queries with the whole bank once and picks each sample's N scores out of the product:

    S = q @ bank^T                (B K, |D|)   one matrix product in `score_dtype` (bf16: the GPU's tensor cores)
    s_neg[b, k, j] = S[b k, negatives[b, j]]       s_pos[b, k] = q[b, k] . bank[positive[b]]  (in the bank's dtype)
    dL/dq[b, k] = dL/ds_pos bank[positive[b]] + W[b k] @ bank,   W[b k, i] = sum_{j: negatives[b, j] = i} dL/ds_j

so the gradient is a second product of the same shape (W reuses S's memory). At paper scale (B = 256, K = 2,
|D| = 1,281,167, d = 128) each product is 168 GFLOP (about 0.2 ms at an H100's bf16 rate) and the 1.3 GB block of
bf16 scores passes through memory about four times (written, gathered, zeroed and scattered into, read): about a
millisecond in all, against 128 gather chunks of 2 samples for `bank_contrast`, each a dozen small kernel launches.
On a CPU the product costs |D| / N = 40 times the arithmetic of the gather, so "auto" keeps the chunked path there
(`contrast_function`).

Precision: bf16 keeps 8 significant bits, so a negative score s is off by up to |s| 2^-9 (s / tau by up to 0.03 at
tau = 0.07); the N negatives' errors are independent and mostly cancel in the sum over j. The positive score, which
carries most of the gradient, is computed exactly in the bank's dtype. `score_dtype=None` scores in the bank's
dtype (float32: the same numbers as `bank_contrast` up to summation order).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pirl_ablate.errors import ConfigError
from pirl_ablate.losses.nce import Contrast, _KnownGradient, bank_contrast

SCORINGS = ("auto", "dense", "chunked")
DENSE_CHUNK_BYTES = 2 * 2**30  # the (rows x K, |D|) score block of one chunk of samples; one chunk at paper scale


def dense_bank_contrast(queries: Tensor, bank: Tensor, positive: Tensor, negatives: Tensor,
                        loss_fn: Callable[[Tensor, Tensor], Tensor], tau: float | None = None,
                        score_dtype: torch.dtype | None = torch.bfloat16, chunk_bytes: int | None = None
                        ) -> Contrast:
    """Per-query losses of `queries` (B, K, d) against bank entries, through dense products with the whole bank.

    Arguments and result as `bank_contrast`: query q[b, k] has positive bank[positive[b]] and negatives
    bank[negatives[b, j]], j < N, or bank[negatives[b, k, j]] for negatives (B, K, N) drawn per query (repeats
    allowed; each counts once per occurrence); `loss_fn(s_pos (c, K),
    s_neg (c, K, N)) -> (c, K)`; the result's `loss` back-propagates into `queries` only and the bank may change
    after this returns. `score_dtype`: dtype of the two dense products (bf16 by default, None: the bank's).
    Samples are scored `chunk_bytes` (default DENSE_CHUNK_BYTES) of score block at a time.
    """
    q = queries.detach().to(bank.dtype)
    batch, k, d = q.shape
    n = negatives.shape[-1]
    dense = bank.to(score_dtype or bank.dtype)  # (|D|, d); no copy when the dtypes agree
    rows_per_chunk = max(1, (chunk_bytes or DENSE_CHUNK_BYTES) // (k * bank.shape[0] * dense.element_size()))
    values = torch.empty(q.shape[:2], dtype=q.dtype, device=q.device)
    grad = torch.empty_like(q)
    pos_sim = torch.empty_like(values)
    neg_sim = torch.empty_like(values)
    exp_sum = q.new_zeros(())
    for start in range(0, batch, rows_per_chunk):
        rows = slice(start, min(start + rows_per_chunk, batch))
        per_sample = negatives[rows] if negatives.dim() == 3 else negatives[rows].unsqueeze(1).expand(-1, k, -1)
        columns = per_sample.reshape(-1, n)  # (c K, N): each query's negatives
        with torch.autocast(q.device.type, enabled=False):
            scores = q[rows].reshape(-1, d).to(dense.dtype) @ dense.T  # (c K, |D|)
            s_neg = scores.gather(1, columns).view(-1, k, n).to(q.dtype)
            with torch.enable_grad():
                q_rows = q[rows].requires_grad_()
                s_neg.requires_grad_()
                s_pos = (q_rows * bank.index_select(0, positive[rows]).unsqueeze(1)).sum(-1)  # (c, K), exact
                loss = loss_fn(s_pos, s_neg)
                grad_pos, grad_neg = torch.autograd.grad(loss.sum(), (q_rows, s_neg))
            weights = scores.zero_().scatter_add_(1, columns, grad_neg.reshape(-1, n).to(dense.dtype))
            grad[rows] = grad_pos + (weights @ dense).view(-1, k, d).to(q.dtype)
        values[rows] = loss.detach()
        pos_sim[rows] = s_pos.detach()
        neg_sim[rows] = s_neg.detach().mean(-1)
        if tau is not None:
            exp_sum += torch.exp(s_pos.detach() / tau).sum() + torch.exp(s_neg.detach() / tau).sum()
    mean_exp = exp_sum / (batch * k * (n + 1)) if tau is not None else None
    return Contrast(_KnownGradient.apply(queries, values, grad), pos_sim, neg_sim, mean_exp)


def contrast_function(scoring: str, device: torch.device | str) -> Callable[..., Contrast]:
    """The scoring of `scoring` on `device`: "dense" (`dense_bank_contrast`), "chunked" (`bank_contrast`) or
    "auto": dense on CUDA devices, chunked elsewhere (tests/test_device_parity.py checks both on the device,
    benchmarks/gpu_check.py times them)."""
    if scoring not in SCORINGS:
        raise ConfigError(f"scoring = {scoring!r}: must be one of {', '.join(SCORINGS)}")
    if scoring == "auto":
        scoring = "dense" if torch.device(device).type == "cuda" else "chunked"
    return dense_bank_contrast if scoring == "dense" else bank_contrast
