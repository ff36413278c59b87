"""A sweep's pre-flight: what every run needs from this machine, checked once before anything is submitted, so a
missing dataset is one line now rather than the same error from every run later."""

from __future__ import annotations

from collections.abc import Sequence

from pirl_ablate import config
from pirl_ablate.sweep.spec import TRAINING_JOB, Run

TRAIN_DEFAULT_DATASET = "fashion_mnist"  # pirl_ablate.build.train's default


def ensure_datasets(runs: Sequence[Run], job: str = TRAINING_JOB) -> None:
    """Make sure the files of every Fashion-MNIST the runs pre-train on are here (found, downloaded, or installed
    from Debian's package); raise its one-line DataError otherwise. Another `job` (sweep.job) is left alone. Leaves
    gin holding the last run's config."""
    from pirl_ablate.data.fashion_mnist import ensure_available

    if job != TRAINING_JOB:
        return
    wanted = set()
    for text in dict.fromkeys(r.config for r in runs):
        config.parse_text(text, finalize=False)
        if config.bound_kwargs("train").get("dataset", TRAIN_DEFAULT_DATASET) == "fashion_mnist":
            data = config.bound_kwargs("fashion_mnist")
            wanted.add((data.get("root"), data.get("download", True)))
    for root, download in sorted(wanted, key=repr):
        ensure_available(root, download)

