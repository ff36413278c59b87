"""PIRL's mechanism in a tiny real run: g(v_It) ends nearer its own memory entry than its negatives, and the
transformed view sits nearer its own image than a covariant Jigsaw network trained the same way puts it.

Both runs go through the public entry point (`run_training` with a gin config: tests/tiny_pirl.py's recipe). The
alignment is the training loop's own metrics row; the invariance is measured afresh from the run folder (the
checkpoint's network) with the definitions of pirl_ablate.diagnostics, which tests/test_diagnostics.py checks
against float64 transcriptions.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tiny_pirl import COVARIANT_JIGSAW, MECHANISM, NEGATIVES, TINY

from pirl_ablate import checkpoint, config, diagnostics
from pirl_ablate.build import run_training
from pirl_ablate.data import build_dataset, to_device_batch
from pirl_ablate.evaluate.invariance import representations
from pirl_ablate.runs import RunDir
from pirl_ablate.transforms import build_transform


def _train(tmp_path: Path, name: str, extra: str = "", base: str = MECHANISM) -> Path:
    path = tmp_path / f"{name}.gin"
    path.write_text(base + extra)
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


# The paper's estimator from the paper's random bank (tests/tiny_pirl.py's 48 images, 3 steps an epoch): the bank
# fills with the network's own, alike, embeddings, so the batches' exp scores grow by orders of magnitude over the
# first estimate of Z. A Z that tracks them (an EMA, its time constant about an epoch here as 0.99 is about 1.6
# epochs at smoke scale) keeps the loss bounded.
RANDOM_BANK_NCE = TINY + """
PIRLLoss.estimator = "nce"
PIRLLoss.tau = 0.07
MemoryBank.init = "random"
train.epochs = 12
train.monitor_every = 0
"""


def _margin(row: dict, term: str) -> float:
    return row[f"pos_sim_{term}"] - row[f"neg_sim_{term}"]


@pytest.mark.slow
def test_nce_from_a_random_bank_runs_away_under_a_fixed_z_and_stays_bounded_when_z_tracks(tmp_path):
    n = NEGATIVES
    chance = math.log(n + 1) + n * math.log1p(1 / n)  # Eq. 4 with every score alike and Z at its batch estimate
    fixed = RunDir(_train(tmp_path, "fixed", "PIRLLoss.z = 'fixed'\n", RANDOM_BANK_NCE)).metrics()
    ema = RunDir(_train(tmp_path, "ema", "PIRLLoss.z = 'ema'\nPIRLLoss.z_momentum = 0.5\n", RANDOM_BANK_NCE)).metrics()
    assert fixed[-1]["loss_chance"] == pytest.approx(chance) == ema[-1]["loss_chance"]

    # fixed Z: the loss climbs epoch after epoch, far past chance, as Z falls decades behind the batches' estimate
    losses = [r["loss"] for r in fixed]
    assert all(b > a for a, b in zip(losses, losses[1:6])) and max(losses) > 10 * chance, losses
    assert fixed[-1]["z_drift"] < -3 and any("stale Z" in w for w in fixed[-1]["warnings"])
    assert any("running away" in w for w in fixed[-1]["warnings"])

    # tracking Z: bounded throughout, back near chance at the end, Z within a factor 3 of the batches' estimate
    assert max(r["loss"] for r in ema) < 3 * chance and ema[-1]["loss"] < 1.25 * chance, [r["loss"] for r in ema]
    assert abs(ema[-1]["z_drift"]) < 0.5 and not any("running away" in w for w in ema[-1]["warnings"])
    # and alignment rises: the image term from below its negatives to above them, the transformed term above them
    assert _margin(ema[0], "image") < 0 < 0.02 < _margin(ema[-1], "image"), [_margin(r, "image") for r in ema]
    assert _margin(ema[-1], "transformed") > _margin(ema[0], "transformed")
    assert max(_margin(r, "transformed") for r in ema) > 0.03
