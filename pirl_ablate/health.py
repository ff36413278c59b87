"""The health of a run read from its metrics rows: pure Python, no torch, so that `pirl-ablate status`, reports and
sweep polling stay light. The numbers themselves are computed by `pirl_ablate.diagnostics` (which re-exports these).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

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
