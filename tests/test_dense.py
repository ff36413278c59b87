"""The dense scoring path (pirl_ablate.losses.dense, the memory-bank source's `scoring = "dense"`) against a float64
transcription of Eq. 3-4 and bank_contrast."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from pirl_ablate.errors import ConfigError
from pirl_ablate.losses import MemoryBank, MemoryBankNegatives, bank_contrast, infonce_loss, nce_loss
from pirl_ablate.losses.dense import contrast_function, dense_bank_contrast
from pirl_ablate.losses.negatives import Keys

D, DIM, B, K, N, TAU = 50, 16, 6, 2, 40, 0.07  # N close to D: every sample's negatives repeat entries


def problem(seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    bank = F.normalize(torch.randn(D, DIM, generator=g), dim=1)
    queries = F.normalize(torch.randn(B, K, DIM, generator=g), dim=2)
    return queries, bank, torch.randint(0, D, (B,), generator=g), torch.randint(0, D, (B, N), generator=g)


def paper_terms(queries: Tensor, bank: Tensor, positive: Tensor, negatives: Tensor, estimator: str,
                log_z: float) -> Tensor:
    """(B, K) float64 losses written from the paper: h(s) = p / (p + N/|D|), p = exp(s / tau) / Z, and
    L = -log h(s_pos) - sum_j log(1 - h(s_j)) (nce), or -log(e_pos / (e_pos + sum_j e_j)) (infonce)."""
    q, m = queries.double(), bank.double()
    s_pos = torch.einsum("bkd,bd->bk", q, m[positive])
    s_neg = torch.einsum("bkd,bnd->bkn", q, m[negatives])  # the (B, N, d) gather the fast paths avoid
    if estimator == "nce":
        def h(s: Tensor) -> Tensor:
            p = torch.exp(s / TAU) / math.exp(log_z)
            return p / (p + N / D)
        return -torch.log(h(s_pos)) - torch.log(1 - h(s_neg)).sum(-1)
    e_pos, e_neg = torch.exp(s_pos / TAU), torch.exp(s_neg / TAU)
    return -torch.log(e_pos / (e_pos + e_neg.sum(-1)))


def loss_function(estimator: str, log_z: float):
    if estimator == "nce":
        return partial(nce_loss, tau=TAU, log_z=log_z, dataset_size=D)
    return partial(infonce_loss, tau=TAU)


@pytest.mark.parametrize("estimator", ["nce", "infonce"])
# bf16 scores are off by up to |s| 2^-9, a logit s / tau by up to 0.028: losses of 5-15 move by well under 0.5%.
@pytest.mark.parametrize("score_dtype, loss_tol, grad_tol", [(None, 1e-5, 1e-5), (torch.bfloat16, 5e-3, 1e-2)],
                         ids=["fp32", "bf16"])
@pytest.mark.parametrize("chunk_bytes", [None, 3 * K * D * 4], ids=["one-chunk", "chunks-of-3"])
def test_dense_scoring_matches_float64_transcription(estimator, score_dtype, loss_tol, grad_tol, chunk_bytes):
    queries, bank, positive, negatives = problem(0)
    log_z = math.log(2.0)
    q64 = queries.double().requires_grad_()
    expected = paper_terms(q64, bank, positive, negatives, estimator, log_z)
    weights = torch.rand(B, K, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (expected * weights).sum().backward()
    q = queries.clone().requires_grad_()
    out = dense_bank_contrast(q, bank, positive, negatives, loss_function(estimator, log_z), TAU,
                              score_dtype=score_dtype, chunk_bytes=chunk_bytes)
    (out.loss * weights.float()).sum().backward()

    def rel(a: Tensor, b: Tensor) -> float:
        return float((a.detach().double() - b.detach()).norm() / b.detach().norm())

    assert rel(out.loss, expected) < loss_tol
    assert rel(q.grad, q64.grad) < grad_tol
    q_d, m_d = queries.double(), bank.double()
    pos64 = torch.einsum("bkd,bd->bk", q_d, m_d[positive])
    assert rel(out.pos_sim, pos64) < 1e-6  # the positive is scored exactly, whatever score_dtype
    neg64 = torch.einsum("bkd,bnd->bkn", q_d, m_d[negatives])
    assert rel(out.neg_sim, neg64.mean(-1)) < 10 * loss_tol  # the mean negative score, in score_dtype
    scores = torch.cat([pos64.unsqueeze(-1), neg64], dim=-1)
    assert float(out.mean_exp) == pytest.approx(float(torch.exp(scores / TAU).mean()), rel=10 * loss_tol)


@pytest.mark.parametrize("estimator", ["nce", "infonce"])
def test_dense_and_chunked_scoring_agree_and_leave_the_bank_free_to_change(estimator):
    queries, bank, positive, negatives = problem(2)
    fn = loss_function(estimator, math.log(3.0))
    results = []
    for contrast in (bank_contrast, partial(dense_bank_contrast, score_dtype=None)):
        q = queries.clone().requires_grad_()
        live = bank.clone()
        out = contrast(q, live, positive, negatives, fn, TAU)
        live.mul_(-1)  # the memory bank update runs before backward(); the gradient must not see it
        out.loss.sum().backward()
        results.append((out.loss.detach(), q.grad, out.pos_sim, out.mean_exp))
    for chunked, dense in zip(*results):
        torch.testing.assert_close(dense, chunked, rtol=1e-4, atol=1e-5)  # float32, another summation order


def test_dense_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(3)
    bank = F.normalize(torch.randn(12, 5, generator=g, dtype=torch.float64), dim=1)
    queries = F.normalize(torch.randn(3, 2, 5, generator=g, dtype=torch.float64), dim=2).requires_grad_()
    positive, negatives = torch.randint(0, 12, (3,), generator=g), torch.randint(0, 12, (3, 20), generator=g)
    fn = partial(nce_loss, tau=0.2, log_z=math.log(4.0), dataset_size=12)
    assert torch.autograd.gradcheck(
        lambda q: dense_bank_contrast(q, bank, positive, negatives, fn, score_dtype=None).loss, (queries,))


def test_contrast_function_picks_dense_on_cuda_and_chunked_elsewhere():
    assert contrast_function("auto", "cuda") is dense_bank_contrast
    assert contrast_function("auto", torch.device("cpu")) is bank_contrast
    assert contrast_function("dense", "cpu") is dense_bank_contrast
    assert contrast_function("chunked", "cuda:0") is bank_contrast
    with pytest.raises(ConfigError, match="scoring = 'sparse': must be one of auto, dense, chunked"):
        contrast_function("sparse", "cpu")


@pytest.mark.parametrize("per_term", [False, True], ids=["shared", "per-term"])
@pytest.mark.parametrize("scoring, loss_tol, grad_tol", [("chunked", 1e-5, 1e-5), ("dense", 5e-3, 1e-2)])
def test_the_memory_bank_source_scores_as_its_scoring_says(scoring, loss_tol, grad_tol, per_term):
    """`MemoryBankNegatives(scoring=...)`, the setting training reads, against the float64 transcription: the
    dense path (bf16 scores) within bf16's margin, for negatives shared by the terms (B, N) or drawn per term
    (B, K, N)."""
    queries, bank_rows, positive, negatives = problem(4)
    if per_term:
        negatives = torch.randint(0, D, (B, K, N), generator=torch.Generator().manual_seed(5))
    bank = MemoryBank(D, DIM, torch.Generator().manual_seed(6))
    bank.bank.copy_(bank_rows)
    source = MemoryBankNegatives(per_term=per_term, scoring=scoring)
    keys = Keys(positive=positive, negatives=negatives, dataset_size=D, memory_bank=bank)
    q = queries.clone().requires_grad_()
    out = source.contrast(q, keys, loss_function("infonce", 0.0), TAU)
    out.loss.sum().backward()

    q64 = queries.double().requires_grad_()
    s_pos = torch.einsum("bkd,bd->bk", q64, bank_rows.double()[positive])
    negative_rows = bank_rows.double()[negatives]  # (B, N, d) or (B, K, N, d)
    s_neg = torch.einsum("bkd,bknd->bkn", q64, negative_rows if per_term else negative_rows.unsqueeze(1).expand(
        -1, K, -1, -1))
    expected = -torch.log(torch.exp(s_pos / TAU) / (torch.exp(s_pos / TAU) + torch.exp(s_neg / TAU).sum(-1)))
    expected.sum().backward()
    assert float((out.loss.detach().double() - expected.detach()).norm() / expected.norm()) < loss_tol
    assert float((q.grad.double() - q64.grad).norm() / q64.grad.norm()) < grad_tol


def test_an_unknown_scoring_is_refused_when_the_source_is_built():
    with pytest.raises(ConfigError, match="scoring = 'sparse': must be one of auto, dense, chunked"):
        MemoryBankNegatives(scoring="sparse")
