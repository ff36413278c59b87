"""How invariant a representation is to a pretext transform (paper Figure 4).

For an image I and its transformed view I^t = t(I) (t drawn per image from the transform, e.g. a jigsaw shuffle),
the invariance distance is the l2 distance between the L2-normalised representations of the two:

    d(I, t) = || r(I) / ||r(I)|| - r'(I^t) / ||r'(I^t)|| ||_2   in [0, 2]   (0: invariant, sqrt 2: orthogonal)

with one of two definitions of (r, r'):

- "heads" (PIRL and any model trained with both heads): r = f(v_I) = `net.embed_image(I)`, r' = g(v_It) =
  `net.embed_transformed(view)` — the two embeddings PIRL's loss pulls together (paper Section 3 and Figure 4).
- "pooled" (covariant models such as Jigsaw or Rotation, NPID, supervised, random init, or any model): r = r' = the
  globally average-pooled res5 features of the backbone (`net.pooled`, `net.pooled_view`); for a patch view
  (B, P, C, h, w) r'(I^t) is the mean of the P patches' pooled features (one batched pass over the B*P patches).

A raw distance cannot tell invariance from collapse: a network that maps every input to nearly one point has
d(I, t) near 0 for every transform. So each distance is also taken relative to the distance between different
images, D = mean_i d(r(I_i), r(I_(i+1))) over the evaluated set (`pirl_ablate.health.relative_invariance`):

    relative d(I, t) = d(I, t) / D,     relative invariance = mean relative d   (below 1: I^t is nearer its own
                                                                                image than other images are)

Both representations are evaluated for every model (a model without trained heads has its initial ones), with
the same transform draws. The clean image I is the dataset image at the evaluation size, without augmentation.
`summarise` turns distances into mean, std and a histogram on fixed edges (so runs compare bin by bin);
`plot_invariance_histograms` draws several runs' histograms into one PNG.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pirl_ablate.runs import atomic_write

REPRESENTATIONS = ("heads", "pooled")
GROUPS = {"heads": "heads", "pooled": "res5"}  # the result's group name of each representation
RELATIVE_MAX = 3.0  # upper edge of the histogram of relative distances; larger values fall into its last bin


@torch.no_grad()
def representations(net: nn.Module, images: Tensor, transform, generator: torch.Generator,
                    representation: str = "pooled") -> tuple[Tensor, Tensor]:
    """(r(I) (B, D), r'(I^t) (B, D)) for a batch of clean images (B, C, H, W) and one draw of `transform` per image.

    net: a method (`.pooled`, `.pooled_view`; "heads" also `.embed_image`, `.embed_transformed`, as PIRL), in eval
        mode.
    transform: `transform(images, generator) -> View` (pirl_ablate.transforms); representation: "heads" | "pooled"
    (definitions in the module docstring).
    """
    view = transform(images, generator)
    if representation == "heads":
        return net.embed_image(images), net.embed_transformed(view)
    if representation == "pooled":
        b = net.pooled_view(view)
        return net.pooled(images), b.mean(dim=1) if view.is_patches else b  # (B, P, D) -> (B, D)
    raise ValueError(f"representation must be one of {REPRESENTATIONS}, got {representation!r}")


@torch.no_grad()
def invariance_distances(net: nn.Module, images: Tensor, transform, generator: torch.Generator,
                         representation: str = "pooled") -> Tensor:
    """Distances d(I, t) (B,) between the normalised `representations` of I and I^t."""
    return pair_distances(*representations(net, images, transform, generator, representation))


def pair_distances(a: Tensor, b: Tensor) -> Tensor:
    """||a_i / ||a_i|| - b_i / ||b_i|| || (B,) for rows of a, b (B, D)."""
    return (F.normalize(a.float(), dim=1) - F.normalize(b.float(), dim=1)).norm(dim=1)


def summarise(distances: Tensor, bins: int = 40, upper: float = 2.0) -> dict:
    """{"mean", "std", "n", "histogram": {"edges": bins+1 floats over [0, upper], "counts": bins ints}}; values
    above `upper` are counted in the last bin."""
    d = distances.double().cpu()
    counts = torch.histc(d.clamp(max=upper), bins=bins, min=0.0, max=upper)
    edges = torch.linspace(0.0, upper, bins + 1, dtype=torch.float64)
    return {"mean": d.mean().item(), "std": d.std(unbiased=len(d) > 1).item() if len(d) > 1 else 0.0,
            "n": len(d), "histogram": {"edges": edges.tolist(), "counts": [int(c) for c in counts.tolist()]}}


def plot_invariance_histograms(results: Mapping[str, dict], path: str | os.PathLike, *,
                               title: str = "Invariance to the pretext transform (paper Figure 4)") -> Path:
    """Draw each run's histogram (density, as a step line) into one PNG, written atomically.

    results: {label: an invariance eval result: a dict with "histogram": {"edges", "counts"} and optionally
    "metrics": {transform: {"mean", ...}}}, e.g. {"PIRL": read_json(run / "evals/invariance-fashion_mnist.json")}.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, result in results.items():
        hist = result["histogram"]
        edges = torch.tensor(hist["edges"], dtype=torch.float64)
        counts = torch.tensor(hist["counts"], dtype=torch.float64)
        density = counts / (counts.sum() * (edges[1:] - edges[:-1])).clamp_min(1e-12)
        mean = next(iter(result.get("metrics", {}).values()), {}).get("mean")
        name = f"{label} (mean {mean:.3f})" if mean is not None else label
        ax.stairs(density.numpy(), edges.numpy(), label=name, fill=False, linewidth=1.5)
    ax.set_xlabel("l2 distance between normalised representations of I and I^t")
    ax.set_ylabel("density")
    ax.set_xlim(0, max(float(r["histogram"]["edges"][-1]) for r in results.values()) if results else 2)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return atomic_write(path, lambda fh: fh.write(buf.getvalue()))
