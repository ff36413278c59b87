"""Sweeps: sweep files -> runs -> executors (submitit: slurm, local, debug) -> run folders.

Importing this package registers the gin configurables `sweep`, `local` and `slurm`; the executors and the job
(which import submitit) load when a sweep runs.
"""

from pirl_ablate.sweep.spec import (
    LocalSettings,
    Run,
    SlurmSettings,
    Sweep,
    SweepSettings,
    load_sweep,
    run_id,
)

__all__ = ["LocalSettings", "Run", "SlurmSettings", "Sweep", "SweepSettings", "load_sweep", "run_id"]
