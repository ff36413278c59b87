"""Weighted k-nearest-neighbour classification on L2-normalised features (NPID, Wu et al. 2018, Section 3.4).

For a test feature x and its k most cosine-similar training features x_i (labels c_i, similarities s_i), each
neighbour votes for its class with weight exp(s_i / sigma); the class with the largest summed weight wins. k = 200,
sigma = 0.07 as in NPID (and PIRL's kNN monitor). The (M, N) similarity matrix is computed `chunk` test rows at a
time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def knn_scores(train_x: Tensor, train_y: Tensor, test_x: Tensor, num_classes: int, *, k: int = 200,
               sigma: float = 0.07, chunk: int = 512) -> Tensor:
    """Class scores (M, num_classes) of the weighted kNN vote: sum over the k neighbours of exp(s_i / sigma).

    train_x: (N, D), train_y: (N,) long, test_x: (M, D); any float dtype (computed in float32), normalised here.
    k is capped at N.
    """
    bank = F.normalize(train_x.float(), dim=1)
    train_y = train_y.to(bank.device)
    k = min(k, len(bank))
    out = []
    for i in range(0, len(test_x), chunk):
        q = F.normalize(test_x[i:i + chunk].float().to(bank.device), dim=1)
        sims, idx = (q @ bank.T).topk(k, dim=1)  # (m, k)
        votes = torch.zeros(len(q), num_classes, device=bank.device)
        votes.scatter_add_(1, train_y[idx], (sims / sigma).exp())
        out.append(votes)
    return torch.cat(out)


def knn_top1(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, num_classes: int, *, k: int = 200,
             sigma: float = 0.07) -> float:
    """Top-1 accuracy (a fraction) of the weighted kNN vote of `knn_scores` (the training loop's kNN monitor)."""
    scores = knn_scores(train_x, train_y, test_x, num_classes, k=k, sigma=sigma)
    return float((scores.argmax(dim=1) == test_y.to(scores.device)).float().mean())
