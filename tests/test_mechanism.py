"""PIRL's mechanism in a tiny real run: g(v_It) ends nearer its own memory entry than its negatives, and the
transformed view sits nearer its own image than a covariant Jigsaw network trained the same way puts it.

Both runs go through the public entry point (`run_training` with a gin config: tests/tiny_pirl.py's recipe). The
alignment is the training loop's own metrics row; the invariance is measured afresh from the run folder (the
checkpoint's network) with the definitions of pirl_ablate.diagnostics, which tests/test_diagnostics.py checks
against float64 transcriptions.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_pirl import COVARIANT_JIGSAW, MECHANISM

from pirl_ablate import checkpoint, config, diagnostics
from pirl_ablate.build import run_training
from pirl_ablate.data import build_dataset, to_device_batch
from pirl_ablate.evaluate.invariance import representations
from pirl_ablate.runs import RunDir
from pirl_ablate.transforms import build_transform


def _train(tmp_path: Path, name: str, extra: str = "") -> Path:
    path = tmp_path / f"{name}.gin"
    path.write_text(MECHANISM + extra)
    run_training(config.parse([path]), tmp_path / name)
    return tmp_path / name


def _relative_invariance(run: Path, images: torch.Tensor) -> float:
    """Of pooled res5 (the representation both methods train; Jigsaw has no f/g heads) between held-out images and
    their jigsaw views, eval mode, fixed draws."""
    net = checkpoint.load_method(run)
    with torch.no_grad():
        pair = representations(net, images, build_transform("jigsaw"), torch.Generator().manual_seed(3), "pooled")
    return diagnostics.relative_invariance(*pair)


@pytest.mark.slow
def test_pirl_aligns_its_transformed_term_and_is_more_invariant_than_jigsaw(tmp_path):
    pirl = _train(tmp_path, "pirl")
    jigsaw = _train(tmp_path, "jigsaw", COVARIANT_JIGSAW)
    last = RunDir(pirl).metrics()[-1]
    assert last["pos_sim_transformed"] > last["neg_sim_transformed"] + 0.02, last
    assert not any("transformed term not aligned" in w for w in last["warnings"])

    test_images = to_device_batch(build_dataset("synthetic", "test").images, "cpu", 32)
    pirl_inv, jigsaw_inv = _relative_invariance(pirl, test_images), _relative_invariance(jigsaw, test_images)
    assert pirl_inv < jigsaw_inv, (pirl_inv, jigsaw_inv)
