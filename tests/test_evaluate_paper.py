"""The paper-scale evaluation settings end to end on the CPU, with only the counts shrunk: a random-init ResNet-50
run of gin/paper/random_init.gin (ImageNet-format folder, scale/paper.gin, eval/paper.gin) evaluated the way a sweep
job does it (under the run's own config), by the online linear protocol on an ImageNet-format folder and by VISSL's
VOC07 SVMs on a generated VOCdevkit. What a cluster run would hit first (shapes, pooling, inputs, the schedule's
bindings) fails here. Expectations: VISSL's dimensions and settings (shared reference paper-recipe.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pirl_ablate import config
from pirl_ablate.build import run_training
from pirl_ablate.data.voc import VOC_CLASSES, write_synthetic_voc
from pirl_ablate.gin_edge import run_evaluations
from pirl_ablate.layers import LAYERS

# VISSL's eval_resnet_8gpu_transfer_in1k_linear.yaml pools of ResNet-50 at 224 px
VISSL_DIMS = {"conv1": 9216, "res2": 9216, "res3": 8192, "res4": 9216, "res5": 8192}
VISSL_COSTS = [0.01, 0.1, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 50.0, 100.0, 1000.0]


def _imagenet_folder(root: Path, per_class: dict[str, int]) -> Path:
    """root/{train,val}/<wnid>/*.JPEG: class 0 reddish, class 1 bluish, 72 x 96 (not square) noise images."""
    gen = np.random.default_rng(0)
    for split, n in per_class.items():
        for c, wnid in enumerate(("n01440764", "n01443537")):
            (root / split / wnid).mkdir(parents=True)
            for i in range(n):
                pixels = gen.integers(0, 120, (72, 96, 3))
                pixels[..., 2 * c] += 120
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / wnid / f"{wnid}_{i}.JPEG")
    return root


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    """(run folder, its config text, the ImageNet-format folder): a random ResNet-50 at the paper's settings."""
    tmp = tmp_path_factory.mktemp("paper")
    images = _imagenet_folder(tmp / "imagenet", {"train": 4, "val": 2})
    text = config.parse(["paper/random_init.gin"], [f"imagefolder.root = '{images}'", "loader.num_workers = 0",
                                                     "train.precise_bn_batches = 0", "NPID.num_negatives = 4",
                                                     "train.batch_size = 4"])
    run_training(text, tmp / "run")
    return tmp / "run", text, tmp


@pytest.mark.slow
def test_paper_linear_evaluation_runs_online_on_every_layer(paper_run):
    run, text, _ = paper_run
    shrunk = ["linear_eval.epochs = 2", "linear_eval.batch_size = 4", "linear_eval.milestones = [1]",
              "evaluation.batch_size = 4"]
    result = run_evaluations(run, ["linear"], layers=LAYERS, bindings=[text, *shrunk])["linear-imagefolder"]
    assert result["mode"] == "online"
    assert result["feature_dims"] == VISSL_DIMS
    assert result["num_train"] == 8 and result["num_test"] == 4
    assert all(0.0 <= m["top1"] <= 100.0 for m in result["metrics"].values())
    settings = result["hyperparameters"]  # eval/paper.gin's, except what was shrunk here
    assert settings["pooling"] == "vissl" and settings["crop_size"] == 224 and settings["nesterov"] is True
    assert settings["lr_per_256"] == 0.01 and settings["weight_decay"] == 5e-4 and settings["momentum"] == 0.9


@pytest.mark.slow
def test_paper_voc07_svms_run_as_vissl_on_a_vocdevkit(paper_run):
    run, text, tmp = paper_run
    voc = write_synthetic_voc(tmp / "voc", num_trainval=18, num_test=6, image_size=64)
    bindings = [text, f"voc2007.root = '{voc}'", f"voc2007.classes = {VOC_CLASSES[:3]!r}",
                "evaluation.batch_size = 6", "svm_eval.max_iter = 100"]  # liblinear's iterations shrunk
    result = run_evaluations(run, ["svm"], dataset="voc2007", layers=("res5",), bindings=bindings)["svm-voc2007"]
    assert result["feature_dims"] == {"res5": 8192}
    settings = result["hyperparameters"]
    assert settings["costs"] == VISSL_COSTS and settings["ap"] == "voc" and settings["folds"] == 3
    assert settings["max_iter"] == 100
    assert settings["view"] == "squash" and settings["view_size"] == 224 and settings["pooling"] == "vissl"
    assert result["num_train"] == 18 and result["num_test"] == 6
    assert 0.0 < result["metrics"]["res5"]["mAP"] <= 100.0
    assert set(result["chosen_cost"]["res5"]) <= set(VISSL_COSTS)
