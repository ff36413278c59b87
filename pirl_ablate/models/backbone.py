"""The ResNet trunk shared by every branch: torchvision's ResNet, optionally twice as wide or with a small stem.

`Backbone` *is* a `torchvision.models.ResNet` (same module names, same blocks, same initialisation) without the fc
layer, so its weights export as a plain torchvision checkpoint (`torchvision_state_dict()`), which any torchvision
or Detectron2 fine-tuning code loads. Inputs are images in [0, 1]; the trunk normalises them with its own mean/std
buffers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from pirl_ablate.errors import ConfigError, did_you_mean
from pirl_ablate.layers import LAYERS

ARCHS: dict[str, tuple[type[BasicBlock | Bottleneck], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(ResNet):
    """ResNet-18/50 trunk returning the feature maps of conv1, res2, res3, res4 and res5.

    Args:
        arch: "resnet18" (small data) or "resnet50" (the paper's trunk, Section 4).
        width_multiplier: 1, 2 for PIRL-c2x ("all channels doubled", 98M parameters, Section 4.1), or 0.5 (half
            width, for CPU smoke runs and tests). Every channel count is multiplied: stem 64w, stages
            64w/128w/256w/512w planes (bottleneck outputs 4x that). Note that
            torchvision's `width_per_group=128` ("wide_resnet50_2") doubles only the bottleneck's inner width,
            which is a different network; this one matches the paper's description.
        small_stem: replace the 7x7 stride-2 conv + max-pool stem by a 3x3 stride-1 conv and no max-pool, for
            32-96 px inputs (the usual CIFAR-style stem). The module names stay torchvision's (`conv1`, `maxpool`
            becomes `nn.Identity`).
        mean, std: per-channel normalisation applied inside `forward` to inputs in [0, 1] (ImageNet's by default;
            1-channel data is made 3-channel by the data layer).
    """

    def __init__(self, arch: str = "resnet50", width_multiplier: float = 1, small_stem: bool = False,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        if arch not in ARCHS:
            raise ConfigError(f"Backbone.arch = {arch!r}: unknown architecture{did_you_mean(arch, ARCHS)}")
        if width_multiplier not in (0.5, 1, 2):
            raise ConfigError(f"Backbone.width_multiplier = {width_multiplier!r}: must be 1, 2 (PIRL-c2x) or 0.5 "
                              "(half width, for CPU smoke runs)")
        block, depths = ARCHS[arch]
        nn.Module.__init__(self)  # ResNet.__init__ hard-codes 64 channels; build the same modules scaled by w
        self.arch, self.width_multiplier, self.small_stem = arch, width_multiplier, small_stem
        self._norm_layer = nn.BatchNorm2d
        self.dilation, self.groups, self.base_width = 1, 1, 64
        self.inplanes = int(64 * width_multiplier)
        if small_stem:
            self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        w = width_multiplier
        self.layer1 = self._make_layer(block, int(64 * w), depths[0])
        self.layer2 = self._make_layer(block, int(128 * w), depths[1], stride=2)
        self.layer3 = self._make_layer(block, int(256 * w), depths[2], stride=2)
        self.layer4 = self._make_layer(block, int(512 * w), depths[3], stride=2)
        self.feature_dim = int(512 * w) * block.expansion
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor, layers: Sequence[str] = ("res5",)) -> dict[str, Tensor]:
        """Feature maps of `layers` for images `x` (N, 3, H, W) in [0, 1].

        conv1 is the stem's ReLU output (before the max-pool); res2..res5 are the outputs of layer1..layer4, e.g.
        res5 (N, feature_dim, H/32, W/32) with the standard stem, (N, feature_dim, H/8, W/8) with the small one.
        Stops after the deepest requested layer.
        """
        unknown = [name for name in layers if name not in LAYERS]
        if unknown:
            raise ConfigError(f"backbone layer {unknown[0]!r} does not exist{did_you_mean(unknown[0], LAYERS)}")
        last = max(LAYERS.index(name) for name in layers)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        x = self.relu(self.bn1(self.conv1(x)))
        maps = {"conv1": x}
        x = self.maxpool(x)
        for name, stage in zip(LAYERS[1:last + 1], (self.layer1, self.layer2, self.layer3, self.layer4)):
            x = stage(x)
            maps[name] = x
        return {name: maps[name] for name in layers}

    def config(self) -> dict:
        """The constructor arguments, as plain values (recorded in checkpoints: `Backbone(**config)`)."""
        return {"arch": self.arch, "width_multiplier": self.width_multiplier, "small_stem": self.small_stem,
                "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    def torchvision_state_dict(self) -> dict[str, Tensor]:
        """A state_dict that loads with strict=True into `torchvision.models.resnet50()` / `resnet18()`.

        The trunk has no classifier, so `fc.weight` (1000, feature_dim) and `fc.bias` are zeros: replace the fc
        layer before fine-tuning. With width_multiplier=2 the shapes are the doubled ones (load into this class, or
        a torchvision ResNet built with every width doubled). With small_stem the target model needs
        `model.conv1 = nn.Conv2d(3, 64 * w, 3, 1, 1, bias=False)` and `model.maxpool = nn.Identity()` first (the
        keys are unchanged; only conv1.weight's shape differs).
        """
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        like = self.conv1.weight
        state["fc.weight"] = like.new_zeros(1000, self.feature_dim)
        state["fc.bias"] = like.new_zeros(1000)
        return state


def pooled_res5(backbone: Backbone, x: Tensor) -> Tensor:
    """Globally average-pooled res5 features (N, feature_dim) of images `x` (N, 3, H, W) in [0, 1]."""
    return backbone(x, ("res5",))["res5"].mean(dim=(2, 3))
