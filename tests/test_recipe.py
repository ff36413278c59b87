"""A scale is a complete recipe, and the paper scale is the paper's: the structure of gin/ (scales, method files,
smoke configs, paper twins), the recipe card of every paper config and of every run of every paper sweep against
the paper's values (pirl_ablate.recipe_card, written from the paper and VISSL, not from the code's defaults), and
what a real 0-epoch paper run records."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pirl_ablate import config
from pirl_ablate.cli import main
from pirl_ablate.recipe_card import recipe_card, sweep_cards

REPO = Path(__file__).resolve().parent.parent
GIN = REPO / "gin"
PAPER_CONFIGS = sorted((GIN / "paper").glob("*.gin"))
PAPER_SWEEPS = sorted((REPO / "sweeps" / "paper").glob("*.gin"))
SMOKE_FILES = {GIN / "scale" / "smoke.gin", GIN / "data" / "fashion_mnist.gin", *GIN.glob("*.gin"),
               *(REPO / "sweeps").glob("*.gin")}
DATASET_KEYS = re.compile(r"^(\w+/)?(fashion_mnist|imagefolder)\.")  # each scale's own dataset's settings
INCLUDE = re.compile(r"""^[ \t]*include\s+(['"])(?P<path>.+?)\1""", re.MULTILINE)


def _bound(*files: Path) -> dict:
    return config.bindings_of(config.parse(list(files), finalize=False))


def _closure(path: Path, parents: tuple[Path, ...] = ()) -> set[Path]:
    """Every file `path` includes, transitively (resolved as gin's loader does)."""
    chain = (path.parent, *parents)
    found = {path}
    for m in INCLUDE.finditer(path.read_text(encoding="utf-8")):
        found |= _closure(config.resolve_config_file(m.group("path"), base=chain), chain)
    return found


def test_every_scale_binds_the_same_keys():
    smoke, paper = _bound(GIN / "scale" / "smoke.gin"), _bound(GIN / "scale" / "paper.gin")
    keys = [{k for k in bound if not DATASET_KEYS.match(k)} for bound in (smoke, paper)]
    assert keys[0] == keys[1], f"bound by one scale only: {sorted(keys[0] ^ keys[1])}"


def test_method_files_include_nothing_and_bind_no_scale_key():
    scale_keys = set(_bound(GIN / "scale" / "smoke.gin")) | set(_bound(GIN / "scale" / "paper.gin"))
    for path in sorted((GIN / "method").glob("*.gin")):
        assert not INCLUDE.search(path.read_text()), path
        assert not set(_bound(path)) & scale_keys, path


@pytest.mark.parametrize("path", [*PAPER_CONFIGS, *PAPER_SWEEPS], ids=lambda p: p.relative_to(REPO).as_posix())
def test_paper_configs_and_sweeps_include_no_smoke_file(path):
    assert not _closure(path) & SMOKE_FILES


@pytest.mark.parametrize("path", [*sorted(GIN.glob("*.gin")), *PAPER_CONFIGS],
                         ids=lambda p: p.relative_to(GIN).as_posix())
def test_each_config_includes_exactly_one_scale(path):
    scales = {p for p in _closure(path) if p.parent.name == "scale"}
    assert scales == {GIN / "scale" / ("paper.gin" if path.parent.name == "paper" else "smoke.gin")}


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.name)
def test_recipe_card_of_every_paper_config_shows_no_difference(path):
    card = recipe_card([path])
    assert card.differences() == []
    # smoke-scale values that once leaked into the paper configs, read on the card
    ours = {ln.row.key: ln.ours for ln in card.lines}
    if "PIRL.tau" in ours:
        assert (ours["PIRL.tau"], ours["PIRL.z"]) == (0.07, "fixed")
    if "image.scale" in ours:
        assert tuple(ours["image.scale"]) == (0.08, 1.0)
    # the evaluation protocols the paper (Section 5, supplementary B) and VISSL's benchmark configs run
    linear = (ours["linear_eval.mode"], ours["linear_eval.epochs"], ours["linear_eval.lr_per_256"])
    assert linear == ("online", 28, 0.01)
    assert tuple(ours["linear_eval.milestones"]) == (8, 16, 24) and ours["linear_eval.weight_decay"] == 5e-4
    assert (ours["svm_eval.view"], ours["svm_eval.ap"], ours["svm_eval.view_size"]) == ("squash", "voc", 224)
    assert tuple(ours["svm_eval.costs"]) == (0.01, 0.1, 1, 2, 5, 10, 15, 20, 50, 100, 1000)
    assert (ours["detection_train.iterations"], tuple(ours["detection_train.steps"])) == (25000, (17000,))
    assert ours["detector.norm"] == "frozen"
    contrastive = ours["train.method"] in ("pirl", "npid")
    assert (ours["detection_train.lr"], ours["detection_train.warmup_iters"]) == ((0.003, 1000) if contrastive
                                                                                  else (0.02, 100))


@pytest.mark.parametrize("path", PAPER_SWEEPS, ids=lambda p: p.name)
def test_recipe_card_of_every_run_of_every_paper_sweep_shows_no_difference(path):
    for run, card in sweep_cards(path):
        assert card.differences() == [], (run.variant, run.bindings)


def test_recipe_card_marks_the_smoke_values_and_strict_fails_on_them(capsys):
    """The smoke config differs from the paper where the smoke scale chose otherwise (tau 0.1, an EMA Z, crops of
    at least 20%, ResNet-18): --strict exits 1 there and 0 on the paper twin."""
    differing = {ln.row.key: ln.ours for ln in recipe_card([GIN / "pirl_jigsaw.gin"]).differences()}
    assert differing["PIRL.tau"] == 0.1 and differing["PIRL.z"] == "ema"
    assert tuple(differing["image.scale"]) == (0.2, 1.0) and differing["Backbone.arch"] == "resnet18"
    assert main(["recipe", str(GIN / "pirl_jigsaw.gin"), "--strict"]) == 1
    assert main(["recipe", str(GIN / "paper" / "pirl_jigsaw.gin"), "--strict"]) == 0
    text = capsys.readouterr().out
    assert "DIFFERS" in text and "train.precision = 'fp32'" in text and "train.schedule_per = 'epoch'" in text
    # a --bind that changes a pre-training value of a paper config is caught
    assert main(["recipe", str(GIN / "paper" / "pirl_jigsaw.gin"), "--bind", "PIRL.tau=0.1", "--strict"]) == 1
    # on sweep files: one verdict line per run
    assert main(["recipe", str(REPO / "sweeps" / "paper" / "negatives.gin"), "--strict"]) == 0
    assert main(["recipe", str(REPO / "sweeps" / "negatives.gin"), "--strict"]) == 1
    verdicts = [line for line in capsys.readouterr().out.splitlines() if line.startswith("run ")]
    assert len(verdicts) == 5 + 4 and all("DIFFERS" in line for line in verdicts[5:])  # 5 paper N, 4 smoke N
    assert main(["recipe", "no_such.gin"]) == 2


def _imagenet_folder(root: Path, classes: int = 2, per_class: int = 5) -> Path:
    """An ImageNet-format folder: train/ and val/ with class folders of small JPEGs of assorted sizes."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            for i in range(per_class):
                h, w = rng.integers(20, 48, size=2)
                path = root / split / f"n{c:08d}" / f"{i}.JPEG"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=90)
    return root


def test_zero_epoch_paper_run_records_the_papers_values(tmp_path):
    """`pirl-ablate train gin/paper/pirl_jigsaw.gin` for 0 epochs on a tiny ImageNet-format folder, shrunk only
    through the documented knobs (the folder, the batch, N, loader workers, precise-BN batches): its config.gin
    records tau 0.07, a fixed Z, crops of 8-100% and the patches' BN statistics."""
    root = _imagenet_folder(tmp_path / "imagenet")
    run = tmp_path / "run"
    assert main(["-q", "train", str(GIN / "paper" / "pirl_jigsaw.gin"), "--out", str(run),
                 "--bind", f"imagefolder.root='{root}'", "--bind", "train.epochs=0", "--bind", "train.batch_size=4",
                 "--bind", "PIRL.num_negatives=8", "--bind", "loader.num_workers=0",
                 "--bind", "train.precise_bn_batches=0"]) == 0
    recorded = config.bindings_of((run / "config.gin").read_text())
    assert recorded["PIRL.tau"] == 0.07 and recorded["PIRL.z"] == "fixed"
    assert tuple(recorded["image.scale"]) == (0.08, 1.0) and recorded["heads.patch_bn_stats"] is True


def test_random_init_baseline_of_a_paper_sweep_needs_no_valid_negatives(tmp_path):
    """gin/paper/random_init.gin binds NPID's 4,096 negatives; on a 10-image folder a 0-epoch run still builds
    (it draws no negatives) and records a done result."""
    root = _imagenet_folder(tmp_path / "imagenet")
    run = tmp_path / "run"
    assert main(["-q", "train", str(GIN / "paper" / "random_init.gin"), "--out", str(run),
                 "--bind", f"imagefolder.root='{root}'", "--bind", "train.batch_size=4",
                 "--bind", "loader.num_workers=0", "--bind", "train.precise_bn_batches=0"]) == 0
    assert config.bindings_of((run / "config.gin").read_text())["NPID.num_negatives"] == 4096
    assert (run / "result.json").is_file()
