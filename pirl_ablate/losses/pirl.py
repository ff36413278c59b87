"""PIRL's objective (paper Eq. 5) against a memory bank, as a pure function of the embeddings.

    L = lambda * L_NCE(m_I, g(v_It)) + (1 - lambda) * L_NCE(m_I, f(v_I))

    L_NCE(m_I, q) = -log h(m_I, q) - sum_{I' in D_N} log(1 - h(q, m_I'))        (Eq. 4, one term per query)

f(v_I) and g(v_It) are the L2-normalised embeddings of the image and of its transformed view, m_I the memory-bank
entry of image I (the positive), D_N a set of N bank entries per sample (the negatives, shared by the two terms as
in Eq. 5's notation), h the NCE probability of `nce.py` (or InfoNCE's softmax). NPID is the image term alone.
With another negative source (`negatives.py`: a momentum queue, in-batch keys) both terms take that source's
positive key in place of m_I: `pirl_terms` of the source's `contrast` of `pirl_queries(f, g)`.

    loss, parts = pirl_loss(f, g, bank.bank, index, negatives, lam=0.5, loss_fn=estimator("infonce", tau=0.07),
                            tau=0.07)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pirl_ablate.losses.nce import Contrast, bank_contrast


def pirl_queries(f: Tensor, g: Tensor | None) -> Tensor:
    """The queries of Eq. 5's terms (B, K, d): [g(v_It), f(v_I)], or [f(v_I)] for NPID (g None)."""
    return torch.stack([g, f], dim=1) if g is not None else f[:, None]


def pirl_terms(c: Contrast, lam: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 5 from the per-query losses of `pirl_queries` against any negatives (`c.loss` (B, K), K = 2 or 1):
    the scalar loss and detached parts per term, as `pirl_loss` returns them."""
    names = ("transformed", "image") if c.loss.shape[1] == 2 else ("image",)
    terms = c.loss.mean(dim=0)  # (K,): L_NCE(m_I, g(v_It)), L_NCE(m_I, f(v_I))
    loss_f = terms[-1]
    if len(names) == 1:
        loss = loss_f
    else:
        loss_g = terms[0]
        loss = lam * loss_g + (1 - lam) * loss_f  # Eq. 5
    parts = {"mean_exp": c.mean_exp}
    for k, name in enumerate(names):
        parts[f"loss_{name}"] = terms[k].detach()
        parts[f"pos_sim_{name}"] = c.pos_sim[:, k].mean()
        parts[f"neg_sim_{name}"] = c.neg_sim[:, k].mean()
    return loss, parts


def pirl_loss(f: Tensor, g: Tensor | None, memory: Tensor, index: Tensor, negatives: Tensor, lam: float,
              loss_fn: Callable[[Tensor, Tensor], Tensor], tau: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 5 for f = f(v_I) (B, d) and g = g(v_It) (B, d) (None: NPID, the image term alone, lambda = 0).

    memory (|D|, d) is the bank, index (B,) the positives' entries, negatives (B, N) the negatives' entries;
    `loss_fn(s_pos, s_neg)` the estimator (`nce.estimator`). Returns the scalar loss and detached parts per term
    ("transformed" for g, "image" for f): `loss_*`, `pos_sim_*`, `neg_sim_*` (mean negative score), and
    `mean_exp`, the batch's mean exp(s / tau) over every score (the partition estimate's input).
    """
    c = bank_contrast(pirl_queries(f, g), memory, index, negatives, loss_fn, tau)  # one gather for both terms
    return pirl_terms(c, lam)
