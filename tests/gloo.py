"""Two real torch.distributed (gloo) ranks as subprocesses, for the distributed tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from sweep_jobs import PATIENCE_S


def two_ranks(worker: str, folder: Path) -> tuple[dict, dict]:
    """Run `python -c worker RANK file://RENDEZVOUS OUT` for ranks 0 and 1 (one thread each) and return what each
    saved to OUT with torch.save."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    init = f"file://{folder / 'rendezvous'}"
    procs = [subprocess.Popen([sys.executable, "-c", worker, str(rank), init, str(folder / f"rank{rank}.pt")],
                              env=env, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=PATIENCE_S)
        assert p.returncode == 0, err
    r0, r1 = (torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(2))
    return r0, r1
