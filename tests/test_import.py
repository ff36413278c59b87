"""`pirl-ablate import`: published ResNet weights (VISSL's checkpoint layout, torchvision's state_dict) become a run
folder whose res5 features equal those of the same weights run by hand through torchvision's ResNet, and which
`eval` and the results loader take like a trained run; a foreign layout is one error line naming its first key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from pirl_ablate.checkpoint import load_method
from pirl_ablate.cli import main
from pirl_ablate.report.results import load_results
from pirl_ablate.runs import RunDir

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # ImageNet's, as VISSL and torchvision normalise
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _random_resnet(arch: str) -> torchvision.models.ResNet:
    """A torchvision ResNet with random weights and random BN statistics (so eval-mode BN is not the identity)."""
    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)()
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    return net.eval()


@torch.no_grad()
def _res5_by_hand(net: torchvision.models.ResNet, x: torch.Tensor) -> torch.Tensor:
    """torchvision's forward up to layer4, on ImageNet-normalised images."""
    h = net.maxpool(net.relu(net.bn1(net.conv1((x - MEAN) / STD))))
    return net.layer4(net.layer3(net.layer2(net.layer1(h))))


def _vissl_checkpoint(net: torchvision.models.ResNet, path: Path) -> Path:
    """The layout VISSL's vissl/utils/checkpoint.py writes: classy_state_dict.base_model.model.{trunk, heads},
    trunk keys prefixed `_feature_blocks.` (vissl/models/trunks/resnext.py)."""
    trunk = {f"_feature_blocks.{k}": v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    heads = {"0.clf.0.weight": torch.zeros(128, 512)}
    torch.save({"phase_idx": 3, "iteration": 100, "type": "checkpoint",
                "classy_state_dict": {"base_model": {"model": {"trunk": trunk, "heads": heads}}}}, path)
    return path


def _import(ckpt: Path, fmt: str, out: Path) -> int:
    return main(["-q", "import", str(ckpt), "--format", fmt, "--out", str(out), "--dataset", "synthetic",
                 "--image-size", "16"])


def test_vissl_checkpoint_imports_with_the_same_res5_features_and_evaluates_like_a_run(tmp_path):
    net = _random_resnet("resnet18")
    ckpt = _vissl_checkpoint(net, tmp_path / "model_final_checkpoint_phase3.torch")
    results = tmp_path / "runs"
    assert _import(ckpt, "vissl", results / "published" / "vissl_r18") == 0
    run = RunDir(results / "published" / "vissl_r18")
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = load_method(run.path).backbone(x, ("res5",))["res5"]
    assert torch.allclose(ours, _res5_by_hand(net, x), rtol=1e-4, atol=1e-5)
    assert run.result()["status"] == "done" and run.result()["epochs"] == 0
    assert main(["-q", "eval", str(run.path), "--protocol", "knn", "--bind", "synthetic.size = 16",
                 "--bind", "evaluation.batch_size = 16"]) == 0
    frame = load_results(results)
    knn = frame[(frame.run_id == "vissl_r18") & (frame.protocol == "knn")]
    assert (frame.status[frame.run_id == "vissl_r18"] == "done").all() and len(knn) > 0


def test_torchvision_resnet50_state_dict_imports_with_the_same_res5_features(tmp_path):
    net = _random_resnet("resnet50")
    torch.save(net.state_dict(), tmp_path / "resnet50.pth")
    assert _import(tmp_path / "resnet50.pth", "torchvision", tmp_path / "tv") == 0
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    backbone = load_method(tmp_path / "tv").backbone
    assert backbone.arch == "resnet50" and backbone.width_multiplier == 1 and not backbone.small_stem
    with torch.no_grad():
        ours = backbone(x, ("res5",))["res5"]
    assert torch.allclose(ours, _res5_by_hand(net, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fmt, layout, first_key", [
    ("torchvision", "vissl", "phase_idx"),  # a VISSL file read as torchvision: its first key
    ("vissl", "torchvision", "conv1.weight"),  # a torchvision file read as VISSL
    ("torchvision", "extra", "head.weight"),  # a key no ResNet trunk has
])
def test_foreign_layout_is_one_error_line_naming_the_first_unmatched_key(tmp_path, capsys, fmt, layout, first_key):
    net = _random_resnet("resnet18")
    path = tmp_path / "ckpt.pth"
    if layout == "vissl":
        _vissl_checkpoint(net, path)
    elif layout == "extra":
        torch.save({**net.state_dict(), "head.weight": torch.zeros(2)}, path)
    else:
        torch.save(net.state_dict(), path)
    assert _import(path, fmt, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and repr(first_key) in err
    assert not (tmp_path / "run").exists()  # nothing half-written
