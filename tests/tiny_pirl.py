"""The tiny PIRL config the training tests and the SLURM DDP test share (gin text to write into a file)."""

from __future__ import annotations

from pathlib import Path

SIZE, BATCH, NEGATIVES = 48, 16, 32

# A tiny PIRL run on procedural images: 16 px, half-width ResNet-18, 3 steps per epoch. One thread: on a shared
# 2-core machine OpenMP threads of tiny ops wait on each other (5x slower than one thread). InfoNCE, whose chance
# value ln(N + 1) the training tests compare the loss with (the smoke scale itself uses NCE).
TINY = f"""
include 'pirl_jigsaw.gin'
train.dataset = "synthetic"
synthetic.size = {SIZE}
synthetic.image_size = 16
test/synthetic.size = 64
train.image_size = 16
image.size = 16
train.batch_size = {BATCH}
train.base_lr = 0.03
train.base_batch = {BATCH}
PIRL.num_negatives = {NEGATIVES}
NPID.num_negatives = {NEGATIVES}
PIRL.estimator = "infonce"
NPID.estimator = "infonce"
"""

# PIRL's mechanism in a run this small (tests/test_mechanism.py): 16 images, every other one a negative, 40 steps at
# lr 0.12, so each image's own entry is visited often enough for g(v_It) to single it out. 32 px (3x3 cells of
# 10 px, 8 px patches, as the smoke scale): at 16 px the patches are too small for res5 to tell them apart, and
# InfoNCE at tau 0.2: at tau 0.07 the scores of 16 entries saturate early (pos 0.13 vs neg 0.11 after 40 steps).
MECHANISM_SIZE = 16
MECHANISM = TINY + f"""
synthetic.size = {MECHANISM_SIZE}
synthetic.image_size = 32
train.image_size = 32
image.size = 32
PIRL.num_negatives = {MECHANISM_SIZE - 1}
PIRL.tau = 0.2
train.base_lr = 0.12
train.epochs = 40
train.monitor_every = 0
"""

def untrained(size: int, train_image_size: int, negatives: int) -> str:
    """An untrained (epochs 0) NPID run of `size` synthetic 16 px images: what the transfer tests evaluate."""
    return f"""
train.dataset = "synthetic"
synthetic.size = {size}
synthetic.image_size = 16
train.image_size = {train_image_size}
train.batch_size = 8
train.epochs = 0
train.monitor_every = 0
Backbone.arch = "resnet18"
Backbone.width_multiplier = 0.5
Backbone.small_stem = True
train.method = "npid"
NPID.num_negatives = {negatives}
"""


def tiny_config(folder: Path, extra: str = "", *, epochs: int = 1, name: str = "tiny.gin") -> Path:
    """`folder`/`name`: the tiny PIRL run for `epochs` epochs, then the gin lines `extra`."""
    path = folder / name
    path.write_text(TINY + f"train.epochs = {epochs}\n" + extra)
    return path


def train_tiny(folder: Path, extra: str = "") -> tuple[Path, Path]:
    """(config, run folder) of the tiny PIRL run of `tiny_config(folder, extra)` trained by the CLI in `folder`/run."""
    from pirl_ablate.cli import main

    config = tiny_config(folder, extra)
    assert main(["--quiet", "train", str(config), "--out", str(folder / "run")]) == 0
    return config, folder / "run"
