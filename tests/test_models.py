"""The trunk and PIRL's heads: layer shapes, torchvision export, batched patch pass, BN statistics option."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from pirl_ablate.errors import ConfigError
from pirl_ablate.losses import MemoryBank
from pirl_ablate.methods import PIRL
from pirl_ablate.models import Backbone
from pirl_ablate.transforms import View, build_transform


@pytest.mark.parametrize("arch, width, small_stem, size, expected", [
    # torchvision's ResNet: stem stride 2 + max-pool 2, stages /1 /2 /2 /2; channels 64w, 64w*e .. 512w*e
    ("resnet18", 1, False, 64, {"conv1": (64, 32), "res2": (64, 16), "res3": (128, 8), "res4": (256, 4),
                                "res5": (512, 2)}),
    ("resnet18", 2, True, 16, {"conv1": (128, 16), "res2": (128, 16), "res3": (256, 8), "res4": (512, 4),
                               "res5": (1024, 2)}),
    ("resnet18", 0.5, True, 16, {"conv1": (32, 16), "res2": (32, 16), "res3": (64, 8), "res4": (128, 4),
                                 "res5": (256, 2)}),
    ("resnet50", 1, True, 16, {"conv1": (64, 16), "res2": (256, 16), "res3": (512, 8), "res4": (1024, 4),
                               "res5": (2048, 2)}),
])
def test_backbone_returns_each_requested_layer_with_its_shape(arch, width, small_stem, size, expected):
    device = "cpu" if arch == "resnet18" and width == 1 else "meta"  # the big ones: shapes only, no compute
    with torch.device(device):
        net = Backbone(arch, width_multiplier=width, small_stem=small_stem).eval()
        maps = net(torch.rand(2, 3, size, size), layers=tuple(expected))
    assert list(maps) == list(expected)
    for name, (channels, side) in expected.items():
        assert maps[name].shape == (2, channels, side, side), name
    assert net.feature_dim == expected["res5"][0]


def test_backbone_rejects_unknown_layer_and_arch():
    with pytest.raises(ConfigError, match="res5"):
        Backbone("resnet18")(torch.rand(1, 3, 32, 32), layers=("res6",))
    with pytest.raises(ConfigError, match="resnet50"):
        Backbone("resnet5O")


def test_c2x_has_the_papers_98m_parameters():
    """PIRL-c2x: ResNet-50 with all channels doubled has 98M parameters (paper Section 4.1), counting the fc."""
    with torch.device("meta"):  # shapes only
        state = Backbone("resnet50", width_multiplier=2).torchvision_state_dict()
    params = sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k)
    assert round(params / 1e6) == 98


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_export_loads_strictly_into_torchvision_and_computes_the_same_features(arch):
    ours = Backbone(arch).eval()
    theirs = getattr(torchvision.models, arch)()
    theirs.load_state_dict(ours.torchvision_state_dict(), strict=True)
    theirs.eval()
    x = torch.rand(2, 3, 64, 64)
    normalised = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    trunk = nn.Sequential(*list(theirs.children())[:-2])  # up to layer4
    with torch.no_grad():
        torch.testing.assert_close(ours(x)["res5"], trunk(normalised), rtol=1e-4, atol=1e-5)


def test_small_stem_export_loads_into_torchvision_with_the_documented_stem():
    ours = Backbone("resnet18", small_stem=True)
    theirs = torchvision.models.resnet18()
    theirs.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    theirs.maxpool = nn.Identity()
    theirs.load_state_dict(ours.torchvision_state_dict(), strict=True)
    with pytest.raises(RuntimeError, match="conv1.weight"):
        torchvision.models.resnet18().load_state_dict(ours.torchvision_state_dict(), strict=True)


def tiny_net(transform: str = "jigsaw", **kw) -> PIRL:
    """PIRL's f and g on a tiny trunk; g is a patch head for jigsaw (2 x 2 patches), an image head for rotation."""
    torch.manual_seed(0)
    t = build_transform("jigsaw", grid=2, crop_size=None, patch_size=None) if transform == "jigsaw" \
        else build_transform(transform)
    return PIRL(Backbone("resnet18", width_multiplier=0.5, small_stem=True), MemoryBank(8, 128, torch.Generator()),
                t, generator=torch.Generator(), num_negatives=4, num_patches=4, **kw)


def test_embeddings_are_unit_vectors_of_embed_dim():
    net = tiny_net(mlp_heads=True)
    assert [m.out_features for m in net.f if isinstance(m, nn.Linear)] == [256, 128]
    f = net.embed_image(torch.rand(3, 3, 16, 16))
    g_patch = net.embed_transformed(View(torch.rand(3, 4, 3, 8, 8)))
    g_image = tiny_net("rotation", mlp_heads=True).embed_transformed(View(torch.rand(3, 3, 16, 16)))
    for e in (f, g_patch, g_image):
        assert e.shape == (3, 128)
        torch.testing.assert_close(e.norm(dim=1), torch.ones(3))


def test_patch_view_is_one_batched_pass_concatenated_in_the_given_order():
    net = tiny_net().eval()
    patches = torch.rand(2, 4, 3, 8, 8)
    calls = []
    net.backbone.register_forward_hook(lambda m, args, out: calls.append(args[0].shape))
    with torch.no_grad():
        g = net.embed_transformed(View(patches))
    assert calls == [(8, 3, 8, 8)]  # B * P patches, one forward
    with torch.no_grad():  # independent composition: patch j alone -> pool -> linear, concatenated j = 0..P-1
        per_patch = [net.g.patch(net.backbone(patches[:, j])["res5"].mean(dim=(2, 3))) for j in range(4)]
        expected = F.normalize(net.g.mix(torch.cat(per_patch, dim=1)), dim=1)
        swapped = net.embed_transformed(View(patches[:, [1, 0, 2, 3]]))
    torch.testing.assert_close(g, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(g, swapped, atol=1e-3)  # the order of the patches matters


def test_patch_count_mismatch_is_a_config_error():
    with pytest.raises(ConfigError, match="num_patches = 9"):
        tiny_net().embed_transformed(View(torch.rand(2, 9, 3, 8, 8)))


@pytest.mark.parametrize("patch_bn_stats", [True, False])
def test_patch_pass_updates_bn_running_stats_only_when_asked(patch_bn_stats):
    net = tiny_net(patch_bn_stats=patch_bn_stats).train()
    bn = net.backbone.bn1
    before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    patches = torch.rand(2, 4, 3, 8, 8) * 0.5 + 0.4
    g = net.embed_transformed(View(patches))
    changed = not torch.equal(bn.running_mean, before[0])
    assert changed == patch_bn_stats
    if not patch_bn_stats:
        assert torch.equal(bn.running_var, before[1]) and int(bn.num_batches_tracked) == before[2]
        assert bn.momentum == 0.1  # restored
    # either way the pass normalises with the patches' batch statistics: same embedding as with updates on
    torch.testing.assert_close(g, tiny_net(patch_bn_stats=True).train().embed_transformed(View(patches)))
    net.embed_image(torch.rand(2, 3, 16, 16))  # full images still update the statistics
    assert not torch.equal(bn.running_mean, before[0])
