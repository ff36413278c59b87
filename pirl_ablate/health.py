"""Health diagnostics of a contrastive run: cheap numbers that tell a working PIRL run from a broken one.

A falling loss does not show that PIRL's mechanism works (a run whose g(v_It) ends anti-aligned with its own memory
entry still lowers InfoNCE). These do, each from tensors the loss already has:

- alignment, per loss term: mean cosine of a query with its positive bank entry m_I against the mean cosine with
  its negatives m_I'. A working term has positive > negatives.
- uniformity of the memory bank (Wang & Isola 2020, Eq. 4 with t = 2): log E exp(-2 ||m - m'||^2) over pairs of
  distinct entries; about -4 for 128-d entries uniform on the sphere, 0 for a bank collapsed to one point.
- the partition estimate: NCE divides exp(s / tau) by Z; the batch's own estimate is mean exp(s / tau) * |D|
  (`pirl_ablate.losses.nce.mean_exp_score`). A fixed Z that drifts away from it by orders of magnitude makes the
  loss run away (`z_drift`).
- relative invariance: mean d(f(v_I), g(v_It)) / mean d(f(v_I), f(v_I')) on a fixed held-out batch, distances of
  L2-normalised vectors, I' another image of the batch. Below 1: the transformed view sits closer to its own image
  than other images do; a collapsed network (every vector alike) gets about 1, not the 0 of the raw distance.

`epoch_health(method, row, images, generator)` computes them for the training loop's metrics row (every epoch),
`health_warnings(row)` turns a row into plain-language warnings. Reading rows needs no torch (`pirl-ablate status`,
reports and sweep polling stay light): the functions that compute on tensors import it when called.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

UNIFORMITY_COLLAPSED = -0.5  # log E exp(-2 d^2) above this: typical squared distance under ~0.25 (cosine > ~0.87)
LOSS_RUNAWAY = 2.0  # a loss above this multiple of its chance value is running away
TERMS = ("transformed", "image")


def z_drift(z: float, mean_exp: float, dataset_size: int) -> float:
    """log10(Z / (mean_exp * |D|)): how far the partition estimate in use is from the batch's own estimate
    (0 = agrees; +-1 = a factor of ten)."""
    return math.log10(z / (mean_exp * dataset_size))


def chance_loss(estimator: str, num_negatives: int) -> float:
    """The loss of a query scored alike against its positive and its N negatives: ln(N + 1) for InfoNCE; for NCE
    with Z at its batch estimate (p = 1/|D|, so h = 1/(N + 1)) ln(N + 1) + N ln(1 + 1/N)."""
    n = num_negatives
    if estimator == "infonce":
        return math.log(n + 1)
    if estimator == "nce":
        return math.log(n + 1) + n * math.log1p(1 / n)
    raise ValueError(f"estimator must be 'nce' or 'infonce', got {estimator!r}")


def health_warnings(row: Mapping[str, float], *, chance: float | None = None) -> list[str]:
    """Warnings for one metrics row (an epoch's or a monitor's), [] for a healthy one.

    Reads, where present: `pos_sim_<term>` / `neg_sim_<term>` for term in "transformed", "image"; `loss` with
    `chance` (or the row's `loss_chance`); `uniformity`; `z_drift`.
    """
    out = []
    for term in TERMS:
        pos, neg = row.get(f"pos_sim_{term}"), row.get(f"neg_sim_{term}")
        if pos is not None and neg is not None and pos <= neg:
            out.append(f"{term} term not aligned: its positive similarity {pos:.3f} is not above its negatives' "
                       f"{neg:.3f}")
    chance = chance if chance is not None else row.get("loss_chance")
    loss = row.get("loss")
    if chance is not None and loss is not None and loss > LOSS_RUNAWAY * chance:
        out.append(f"loss {loss:.3g} is above {LOSS_RUNAWAY:g}x its chance value {chance:.3g}: running away")
    u = row.get("uniformity")
    if u is not None and u > UNIFORMITY_COLLAPSED:
        out.append(f"memory bank collapsed: uniformity {u:.3f} > {UNIFORMITY_COLLAPSED} (uniform on the sphere: "
                   f"about -4)")
    drift = row.get("z_drift")
    if drift is not None and abs(drift) > 1:
        out.append(f"partition estimate Z is 10^{drift:+.1f} times the batch's mean exp score x |D|: stale Z")
    return out


HEALTH_PAIRS = 4096  # bank entry pairs of the uniformity estimate (its standard error is well under 0.05)


def alignment(queries: Tensor, bank: Tensor, positive: Tensor, negatives: Tensor) -> tuple[float, float]:
    """(mean positive cosine, mean negative cosine) of unit `queries` (B, d) against unit `bank` entries (M, d):
    positive entries bank[positive] (B,), negatives bank[negatives] (B, N)."""
    import torch

    with torch.no_grad():
        q = queries.float()
        pos = (q * bank[positive].float()).sum(-1)
        neg = torch.einsum("bd,bnd->bn", q, bank[negatives].float())
    return float(pos.mean()), float(neg.mean())


def uniformity(entries: Tensor, num_pairs: int, generator: torch.Generator, t: float = 2.0) -> float:
    """log mean exp(-t ||x_i - x_j||^2) over `num_pairs` pairs i != j of `entries` (M, d), drawn uniformly with
    `generator` (on the entries' device). Wang & Isola (2020), Eq. 4; t = 2 as theirs."""
    import torch

    with torch.no_grad():
        m = entries.shape[0]
        i = torch.randint(0, m, (num_pairs,), generator=generator, device=entries.device)
        j = (i + torch.randint(1, m, (num_pairs,), generator=generator, device=entries.device)) % m  # j != i
        sq = (entries[i].double() - entries[j].double()).pow(2).sum(-1)
        return float(torch.logsumexp(-t * sq, dim=0) - math.log(num_pairs))


def relative_distances(a: Tensor, b: Tensor) -> Tensor:
    """d(a_i, b_i) / mean_j d(a_j, a_(j+1 mod B)) (B,) float64, distances of L2-normalised rows of a, b (B, D),
    B >= 2: a holds representations of the images, b of their transformed views; the denominator pairs each image
    with the next one of the batch (another image, no random draw)."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        a, b = F.normalize(a.double(), dim=1), F.normalize(b.double(), dim=1)
        return (a - b).norm(dim=1) / (a - a.roll(1, dims=0)).norm(dim=1).mean()


def relative_invariance(a: Tensor, b: Tensor) -> float:
    """mean_i d(a_i, b_i) / mean_i d(a_i, a_(i+1)): the mean of `relative_distances`."""
    return float(relative_distances(a, b).mean())


def epoch_health(method: nn.Module, row: Mapping[str, Any], images: Tensor | None, generator: torch.Generator,
                 num_pairs: int = HEALTH_PAIRS) -> dict[str, Any]:
    """The health numbers of `method` at the end of an epoch whose metrics `row` (epoch means of the loss parts)
    is given, and its `health_warnings`.

    method: a method (pirl_ablate.methods); what it lacks is left out: `uniformity` of its memory bank
        (`num_pairs` pairs); `loss_chance` (`chance_loss` of its estimator and the N of its negative source: the
        bank's num_negatives, the queue's K, in-batch's G - 1); `z_drift` from the row's mean `Z` and `mean_exp`
        (NCE) and the source's |D|; `rel_invariance` of f(v_I) against g(v_It) on `images`, a fixed held-out batch
        (B >= 2, on the method's device), with one draw of its pretext transform (methods training f and g only).
    generator: draws the pairs and the transform; seed it alike at every call so each epoch sees the same views.
        The method's own generators are not used, so the run is the same with or without these numbers.
    """
    import torch

    with torch.no_grad():
        return _epoch_health(method, row, images, generator, num_pairs)


def _epoch_health(method: nn.Module, row: Mapping[str, Any], images: Tensor | None, generator: torch.Generator,
                  num_pairs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    bank = getattr(method, "memory_bank", None)
    if bank is not None:
        out["uniformity"] = uniformity(bank.bank, num_pairs, generator)
    source = getattr(method, "negatives", None)  # PIRL / NPID: N and |D| are the source's (queue: K; in-batch: G - 1)
    noise_size = source.noise_size(method) if source is not None else bank.size if bank is not None else None
    if noise_size and "Z" in row and "mean_exp" in row:
        out["z_drift"] = z_drift(float(row["Z"]), float(row["mean_exp"]), noise_size)
    if getattr(method, "estimator", None) in ("nce", "infonce"):
        n = source.num_keys(method) if source is not None else method.num_negatives
        if n:
            out["loss_chance"] = chance_loss(method.estimator, n)
    if images is not None and {"image", "transformed"} <= set(method.views):
        was_training = method.training
        method.eval()
        f = method.embed_image(images)
        g = method.embed_transformed(method.transform(images, generator))
        method.train(was_training)
        out["rel_invariance"] = relative_invariance(f, g)
    out["warnings"] = health_warnings({**row, **out})
    return out
