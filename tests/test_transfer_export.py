"""`pirl-ablate export --format detectron2`: every backbone tensor under Detectron2's name, exactly once."""

from __future__ import annotations

import pickle

import pytest
import torch
from tiny_pirl import untrained

from pirl_ablate import config
from pirl_ablate.build import run_training
from pirl_ablate.checkpoint import load_method
from pirl_ablate.cli import main
from pirl_ablate.export import detectron2_config, detectron2_state_dict
from pirl_ablate.models.backbone import Backbone

BN = ("weight", "bias", "running_mean", "running_var")


def detectron2_names(depths: list[int], convs_per_block: int) -> set[str]:
    """Detectron2's ResNet parameter names enumerated from the architecture (its stem / res<k> / shortcut layout)."""
    names = {"stem.conv1.weight", *(f"stem.conv1.norm.{p}" for p in BN)}
    for stage, depth in enumerate(depths, start=2):
        for block in range(depth):
            prefix = f"res{stage}.{block}."
            for conv in range(1, convs_per_block + 1):
                names |= {prefix + f"conv{conv}.weight", *(prefix + f"conv{conv}.norm.{p}" for p in BN)}
            if block == 0 and (stage > 2 or convs_per_block == 3):  # projection shortcut where shapes change
                names |= {prefix + "shortcut.weight", *(prefix + f"shortcut.norm.{p}" for p in BN)}
    return names


@pytest.mark.parametrize("arch, depths, convs", [("resnet18", [2, 2, 2, 2], 2), ("resnet50", [3, 4, 6, 3], 3)])
def test_detectron2_mapping_is_complete_and_one_to_one(arch, depths, convs):
    backbone = Backbone(arch=arch, width_multiplier=0.5)
    mapped = detectron2_state_dict(backbone)
    assert set(mapped) == detectron2_names(depths, convs)
    tensors = {k: v for k, v in backbone.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(mapped) == len(tensors)  # one Detectron2 name per backbone tensor
    # each tensor lands once: match by content (every tensor perturbed to be unique)
    with torch.no_grad():
        for i, t in enumerate(tensors.values()):
            t.copy_(torch.full_like(t, float(i)))
    mapped = detectron2_state_dict(backbone)
    assert sorted(float(v.flatten()[0]) for v in mapped.values()) == [float(i) for i in range(len(tensors))]
    assert torch.equal(mapped["res4.0.shortcut.norm.running_var"], backbone.layer3[0].downsample[1].running_var)
    assert torch.equal(mapped["res2.1.conv2.weight"], backbone.layer1[1].conv2.weight)
    assert torch.equal(mapped["stem.conv1.norm.bias"], backbone.bn1.bias)


TINY = untrained(size=8, train_image_size=16, negatives=4)


def test_export_command_writes_detectron2_pickle_and_torch_file(tmp_path):
    cfg = tmp_path / "tiny.gin"
    cfg.write_text(TINY)
    run_training(config.parse([str(cfg)]), tmp_path / "run")
    backbone = load_method(tmp_path / "run").backbone
    d2 = ["-q", "export", str(tmp_path / "run"), "--format", "detectron2", "--out"]
    assert main([*d2, str(tmp_path / "d2.pkl")]) == 0
    with open(tmp_path / "d2.pkl", "rb") as fh:
        blob = pickle.load(fh)
    assert blob["matching_heuristics"] is True
    assert set(blob["model"]) == detectron2_names([2, 2, 2, 2], 2)
    assert (blob["model"]["res5.1.conv2.weight"] == backbone.layer4[1].conv2.weight.detach().numpy()).all()
    assert "STRIDE_IN_1X1: False" in (tmp_path / "d2.yaml").read_text()  # the config lines beside the weights
    assert main([*d2, str(tmp_path / "d2.pth")]) == 0
    model = torch.load(tmp_path / "d2.pth", weights_only=True)["model"]
    assert torch.equal(model["res3.0.shortcut.weight"], backbone.layer2[0].downsample[0].weight)
    assert main(["-q", "export", str(tmp_path / "run"), "--out", str(tmp_path / "tv.pth")]) == 0
    assert "layer1.0.conv1.weight" in torch.load(tmp_path / "tv.pth", weights_only=True)  # the default format


def test_detectron2_config_lines_load_a_torchvision_resnet50():
    """torchvision's R-50 in Detectron2 (paper-recipe: tools/convert-torchvision-to-d2.py's note): the stride in the
    3x3 conv, RGB input, torchvision's ImageNet mean/std on the 0-255 scale: 255 x (0.485, 0.456, 0.406) and
    255 x (0.229, 0.224, 0.225)."""
    lines = detectron2_config(Backbone("resnet50"), "/x/r50.pkl").splitlines()
    for line in ("MODEL:", "  WEIGHTS: '/x/r50.pkl'", "  PIXEL_MEAN: [123.675, 116.280, 103.530]",
                 "  PIXEL_STD: [58.395, 57.120, 57.375]", "  RESNETS:", "    STRIDE_IN_1X1: False", "    DEPTH: 50",
                 "    STEM_OUT_CHANNELS: 64", "    RES2_OUT_CHANNELS: 256", "    WIDTH_PER_GROUP: 64", "INPUT:",
                 "  FORMAT: 'RGB'"):
        assert line in lines
