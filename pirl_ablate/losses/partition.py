"""The partition estimate Z of the NCE estimator (paper Eq. 3; NPID Section 3.2, VISSL).

    Z_batch = mean over a batch's positive and negative scores of exp(s / tau), times |D|

"fixed" sets Z = Z_batch of the first batch and keeps it (NPID, VISSL); "ema" starts the same way, then after each
batch Z <- momentum * Z + (1 - momentum) * Z_batch, used from the next batch on (so a step gathers its negatives
once). Under torch.distributed every rank sets the average of the ranks' estimates, so all normalise alike.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pirl_ablate.distributed import initialized_world
from pirl_ablate.errors import ConfigError

Z_MODES = ("fixed", "ema")


class PartitionEstimate(nn.Module):
    """Z as a buffer (0 until the first batch sets it), saved with the method's state_dict.

    Args:
        mode: "fixed" or "ema" (see the module docstring).
        momentum: the EMA's momentum (0.99).
    """

    def __init__(self, mode: str = "fixed", momentum: float = 0.99):
        super().__init__()
        if mode not in Z_MODES:
            raise ConfigError(f"z = {mode!r}: must be one of {', '.join(Z_MODES)}")
        self.mode, self.momentum = mode, momentum
        self.register_buffer("Z", torch.zeros(()))

    @property
    def started(self) -> bool:
        return bool(self.Z > 0)

    def start(self, mean_exp: Tensor, dataset_size: int) -> None:
        """Z <- mean_exp * |D|: the first batch's own estimate."""
        self._set(mean_exp * dataset_size)

    def update(self, mean_exp: Tensor, dataset_size: int) -> None:
        """After a batch with mean(exp(s / tau)) = `mean_exp`: the EMA step ("ema"), nothing ("fixed")."""
        if self.mode == "ema":
            self._set(self.momentum * self.Z + (1 - self.momentum) * mean_exp * dataset_size)

    def _set(self, z: Tensor) -> None:
        z = z.detach().to(self.Z.device, self.Z.dtype)
        if initialized_world() > 1:
            dist.all_reduce(z)
            z = z / dist.get_world_size()
        self.Z.copy_(z)
