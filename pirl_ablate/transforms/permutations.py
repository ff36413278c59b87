"""The permutation set T of the jigsaw transform.

* All P! permutations (PIRL's choice, paper Section 4.1): a uniform draw is the argsort of uniform noise, and its
  class index is the lexicographic rank (Lehmer code), so `perm_index` is well defined without a table.
* A fixed set of K permutations chosen by Noroozi & Favaro's greedy algorithm (ECCV 2016, "maximal average Hamming
  distance"; needed by the covariant Jigsaw baseline and the |T| ablation, paper Figure 7). Start from a permutation
  drawn from `seed`; repeatedly add the candidate whose summed Hamming distance to the permutations chosen so far is
  largest. Ties are broken by the larger minimum distance to the chosen set, then by lexicographic order (the original
  takes the first index, which right after nine mutually disjoint permutations, where every candidate ties, adds a
  near-duplicate of the first at distance 2). The candidates are all P! permutations when P! <= 9! (exactly the
  original algorithm, which recomputes the full distance matrix; here the sums are updated incrementally, O(P P!)
  per step: K = 1000 of 9! takes a few seconds); for larger grids they are a fixed pool of 100,000 distinct random
  permutations drawn from `seed` (Noroozi & Favaro also sample candidates). The set for K is the first K rows of
  the set for any larger K with the same seed. Sets are cached as .npy files under `cache_dir()`.
"""

from __future__ import annotations

import functools
import io
import itertools
import math

import numpy as np
import torch
from torch import Tensor

from pirl_ablate.cache import cache_dir
from pirl_ablate.console import info
from pirl_ablate.errors import ConfigError
from pirl_ablate.runs import atomic_write

MAX_ENUMERATED = math.factorial(9)  # candidate pools up to 9! permutations are enumerated exactly
SAMPLED_POOL = 100_000  # candidates for larger grids


def random_permutations(batch: int, items: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """(batch, items) long: independent permutations, uniform over all items! (argsort of float64 uniform noise)."""
    noise = torch.rand(batch, items, generator=generator, device=device, dtype=torch.float64)
    return noise.argsort(dim=1)


def lehmer_rank(perm: Tensor) -> Tensor:
    """(..., P) permutations of 0..P-1 -> (...,) long lexicographic rank in [0, P!).

    rank = sum_i d_i (P - 1 - i)!, d_i = #{j > i : perm[j] < perm[i]}; the identity has rank 0.
    """
    items = perm.shape[-1]
    later = torch.ones(items, items, dtype=torch.bool, device=perm.device).triu(diagonal=1)
    digits = ((perm.unsqueeze(-1) > perm.unsqueeze(-2)) & later).sum(-1)
    # (P-1)!, ..., 1!, 0! made on the device: a tensor built from a Python list is a host-to-device copy (a sync)
    weights = torch.arange(items - 1, 0, -1, device=perm.device).flip(0).cumprod(0).flip(0)
    weights = torch.cat([weights, weights.new_ones(1)])
    return (digits * weights).sum(-1)


def hamming_set(k: int, items: int = 9, seed: int = 0) -> Tensor:
    """(k, items) long: Noroozi & Favaro's greedy maximal-average-Hamming-distance set, cached on disk."""
    if k < 1:
        raise ConfigError(f"jigsaw: num_permutations={k} must be >= 1 (or None for all {items}! permutations)")
    path = cache_dir() / "permutations" / f"hamming_p{items}_k{k}_seed{seed}.npy"
    try:
        perms = np.load(path)
        if perms.shape == (k, items) and (np.sort(perms, axis=1) == np.arange(items)).all():
            return torch.from_numpy(perms.astype(np.int64))
    except (OSError, ValueError):
        pass
    info(f"generating {k} maximal-Hamming permutations of {items} (seed {seed}) -> {path}")
    perms = greedy_hamming(k, items, seed)
    buffer = io.BytesIO()
    np.save(buffer, perms)
    atomic_write(path, lambda fh: fh.write(buffer.getvalue()))
    return torch.from_numpy(perms.astype(np.int64))


@functools.lru_cache(maxsize=1)
def all_permutations(items: int) -> np.ndarray:
    """(items!, items) uint8, every permutation in lexicographic order (row r has Lehmer rank r)."""
    return np.array(list(itertools.permutations(range(items))), dtype=np.uint8)


def greedy_hamming(k: int, items: int, seed: int) -> np.ndarray:
    """(k, items) uint8 permutations: the greedy max-average-Hamming selection (module docstring), uncached."""
    rng = np.random.default_rng(seed)
    if math.factorial(items) <= MAX_ENUMERATED:
        candidates = all_permutations(items)
    else:
        pool = rng.permuted(np.tile(np.arange(items, dtype=np.uint8), (SAMPLED_POOL, 1)), axis=1)
        candidates = np.unique(pool, axis=0)
    if k > len(candidates):
        raise ConfigError(f"jigsaw: num_permutations={k} is more than the {len(candidates)} permutations of "
                          f"{items} patches available")
    # equal[i, v] marks the candidates holding value v at position i: a distance update is `items` row adds.
    equal = np.stack([np.stack([candidates[:, i] == v for v in range(items)]) for i in range(items)])
    total = np.zeros(len(candidates), dtype=np.int32)  # summed distance to the chosen permutations
    nearest = np.full(len(candidates), items, dtype=np.int32)  # minimum distance to them (the tie-break)
    score = np.empty(len(candidates), dtype=np.int32)
    chosen = [int(rng.integers(len(candidates)))]
    while True:
        distance = items - equal[np.arange(items), candidates[chosen[-1]]].sum(0, dtype=np.int32)
        total += distance
        np.minimum(nearest, distance, out=nearest)
        if len(chosen) == k:
            return candidates[chosen]
        np.multiply(total, items + 1, out=score)
        score += nearest
        score[chosen] = -1
        chosen.append(int(np.argmax(score)))
