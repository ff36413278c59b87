"""The memory bank of NPID / PIRL (paper Section 3.2, "Using a memory bank of negative samples").

One `dim`-vector per training image, addressed by dataset index. It is updated from the untransformed view only,

    m_I <- normalise(mu * m_I + (1 - mu) * f(v_I)),    mu = 0.5,

and supplies the positive m_I and the N negatives m_I' of every NCE term.

Distributed training: every rank holds the whole bank. It is initialised on rank 0 and broadcast; each update
all-gathers the embeddings and indices of all ranks first, so every rank applies the same update and the banks stay
bitwise identical. The bank is a submodule of the method that uses it; DDP wraps the method with
`broadcast_buffers=False`, so it never broadcasts or synchronises the bank, which is saved with the method's
state_dict ("memory_bank.bank").
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from pirl_ablate.distributed import all_gather_rows, initialized_world
from pirl_ablate.errors import ConfigError

BANK_INITS = ("random", "features")


class MemoryBank(nn.Module):
    """(size, dim) bank of L2-normalised vectors, one per training image.

    Args:
        size: |D|, the number of training images.
        dim: entry size (the embedding size, 128).
        generator: draws the random initialisation (Gaussian, then L2-normalised: uniform on the sphere).
        momentum: mu of the update rule (0.5, Section 3.2 / NPID).
        exclude_positive: negatives of a sample never include its own entry (the paper and VISSL draw from the
            whole bank, so the default is False).
        init: "random" (uniform on the sphere: NPID, the paper, VISSL) or "features": the training loop then
            overwrites the random entries, before the first step, with f(v_I) of every image under the initial
            network (`fill`), so that from the first step the positive m_I is an embedding of image I instead
            of noise. With a random bank the first epoch scores every query against a random positive while the
            entries already written hold near-identical embeddings of a barely trained network, so the loss
            climbs far above chance before it falls; short (smoke-scale) runs never recover from it.
        device: where the bank lives (the network's device).
    """

    def __init__(self, size: int, dim: int, generator: torch.Generator, momentum: float = 0.5,
                 exclude_positive: bool = False, init: str = "random", device: torch.device | str | None = None):
        super().__init__()
        if init not in BANK_INITS:
            raise ConfigError(f"MemoryBank.init = {init!r}: must be one of {', '.join(BANK_INITS)}")
        self.momentum = momentum
        self.exclude_positive = exclude_positive
        self.init = init
        bank = torch.randn(size, dim, generator=generator, device=device)
        self.register_buffer("bank", F.normalize(bank, dim=1))
        if initialized_world() > 1:
            dist.broadcast(self.bank, src=0)

    @property
    def size(self) -> int:
        return self.bank.shape[0]

    def sample_negatives(self, index: Tensor, num: int, generator: torch.Generator) -> Tensor:
        """(B, num) long indices drawn uniformly (with replacement) for each sample `index` (B,).

        With `exclude_positive`, each row is uniform over the other size - 1 entries (draw from [0, size - 1)
        and skip the positive).
        """
        shape = (index.shape[0], num)
        if not self.exclude_positive:
            return torch.randint(0, self.size, shape, generator=generator, device=self.bank.device)
        draw = torch.randint(0, self.size - 1, shape, generator=generator, device=self.bank.device)
        return draw + (draw >= index[:, None]).long()

    @torch.no_grad()
    def fill(self, index: Tensor, embeddings: Tensor) -> None:
        """m[index] <- normalise(embeddings): entries replaced outright (the "features" initialisation); gathered
        over ranks like `update`."""
        self.update(index, embeddings, momentum=0.0)

    @torch.no_grad()
    def update(self, index: Tensor, embeddings: Tensor, momentum: float | None = None) -> None:
        """m[index] <- normalise(mu * m[index] + (1 - mu) * embeddings); `index` (B,), `embeddings` (B, dim);
        mu is `momentum`, by default the bank's.

        Under torch.distributed all ranks' rows are gathered first. An index that occurs more than once (e.g. the
        padding of DistributedSampler) takes its last occurrence in (rank, batch position) order, so the result
        does not depend on the order in which the device writes.
        """
        embeddings = embeddings.detach().to(self.bank.dtype)
        if initialized_world() > 1:
            index, embeddings = all_gather_rows(index, embeddings)
        unique, inverse = torch.unique(index, return_inverse=True)
        position = torch.arange(index.shape[0], device=index.device)
        last = torch.full_like(unique, -1).scatter_reduce_(0, inverse, position, reduce="amax")
        mu = self.momentum if momentum is None else momentum
        mixed = mu * self.bank[unique] + (1 - mu) * embeddings[last]
        self.bank[unique] = F.normalize(mixed, dim=1)
