"""The real Fashion-MNIST of Debian's `dataset-fashion-mnist` (.ci/run installs it): its folder, written here rather
than taken from the package so the data tests read the files independently, and a skip marker for the tests that
need it."""

from pathlib import Path

import pytest

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(not (FMNIST / "train-images-idx3-ubyte.gz").is_file(),
                                  reason="Debian dataset-fashion-mnist not installed (.ci/run installs it)")
