"""Export formats of a run's backbone: torchvision's ResNet keys, or Detectron2's (for its own detection configs).

Detectron2 names a ResNet `stem.conv1` (+ `stem.conv1.norm`) and `res2`..`res5` for torchvision's layer1..layer4;
inside a block each conv carries its BN as `.norm`, and the projection shortcut is `shortcut` (+ `shortcut.norm`):

    conv1.weight                    -> stem.conv1.weight
    bn1.running_mean                -> stem.conv1.norm.running_mean
    layer1.0.conv2.weight           -> res2.0.conv2.weight
    layer1.0.bn2.weight             -> res2.0.conv2.norm.weight
    layer3.0.downsample.0.weight    -> res4.0.shortcut.weight
    layer3.0.downsample.1.bias      -> res4.0.shortcut.norm.bias

BN's `num_batches_tracked` counters have no Detectron2 counterpart and are left out. The file is what Detectron2's
own `convert-torchvision-to-d2.py` writes: {"model": {name: array}, "__author__", "matching_heuristics": True}, a
pickle of numpy arrays for `.pkl` (load with `MODEL.WEIGHTS file.pkl`), a torch file otherwise. Detectron2 matches
the names to its `backbone.res2...` / `backbone.bottom_up.res2...` modules by suffix (matching_heuristics), and
its configs expect Caffe-style BGR 0-255 inputs (`MODEL.PIXEL_MEAN/STD`, `INPUT.FORMAT`) and MSRA's ResNet with
the stride in the first 1x1 conv of a block, while torchvision's (and this backbone) stride the 3x3: without
`MODEL.RESNETS.STRIDE_IN_1X1: False` a loaded res4 differs. `detectron2_config` writes the lines a fine-tuning config
needs (`FILE.yaml` beside the weights; `pirl-ablate export` prints them too): STRIDE_IN_1X1 False, INPUT.FORMAT RGB,
PIXEL_MEAN / PIXEL_STD the backbone's normalisation x 255, the depth and widths.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

from torch import Tensor

from pirl_ablate.errors import UserError
from pirl_ablate.models.backbone import Backbone
from pirl_ablate.runs import atomic_torch_save, atomic_write, atomic_write_text

FORMATS = ("torchvision", "detectron2")
_STAGE = re.compile(r"^layer(\d)\.(\d+)\.")


def detectron2_name(key: str) -> str | None:
    """Detectron2's name for one torchvision ResNet state_dict key (None for keys it has no counterpart of)."""
    if key.endswith("num_batches_tracked") or key.startswith("fc."):
        return None
    if key.startswith("conv1."):
        return "stem." + key
    if key.startswith("bn1."):
        return "stem.conv1.norm." + key[len("bn1."):]
    match = _STAGE.match(key)
    if match is None:
        raise KeyError(f"no Detectron2 name for backbone key {key!r}")
    stage, block = int(match.group(1)) + 1, match.group(2)
    rest = key[match.end():]
    rest = re.sub(r"^bn(\d)\.", r"conv\1.norm.", rest)
    rest = rest.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
    return f"res{stage}.{block}.{rest}"


def detectron2_state_dict(backbone: Backbone) -> dict[str, Tensor]:
    """The backbone's weights and BN statistics under Detectron2's names (every tensor but the BN counters)."""
    out = {}
    for key, value in backbone.state_dict().items():
        name = detectron2_name(key)
        if name is not None:
            out[name] = value.detach().cpu().clone()
    return out


def write_backbone(backbone: Backbone, path: str | Path, fmt: str = "torchvision") -> Path:
    """Write `backbone` to `path` (atomically) in format `fmt` (one of FORMATS); Detectron2's format also writes
    `detectron2_config` to `path` with the suffix .yaml."""
    if fmt == "torchvision":
        return atomic_torch_save(backbone.torchvision_state_dict(), path)
    if fmt != "detectron2":
        raise UserError(f"export --format {fmt!r}: valid formats are {', '.join(FORMATS)}")
    model = detectron2_state_dict(backbone)
    atomic_write_text(Path(path).with_suffix(".yaml"), detectron2_config(backbone, Path(path).resolve()))
    blob = {"__author__": "pirl-ablate", "matching_heuristics": True}
    if Path(path).suffix == ".pkl":
        blob["model"] = {k: v.numpy() for k, v in model.items()}
        return atomic_write(path, lambda fh: pickle.dump(blob, fh))
    return atomic_torch_save({**blob, "model": model}, path)


def detectron2_config(backbone: Backbone, weights: str | Path) -> str:
    """The Detectron2 config lines (YAML) that load `weights` as this backbone: torchvision's stride in the 3x3
    conv, RGB input, the backbone's normalisation on Detectron2's 0-255 scale, its depth and channel widths."""
    state = backbone.state_dict()
    lines = ["MODEL:", f"  WEIGHTS: {str(weights)!r}",
             "  PIXEL_MEAN: [" + ", ".join(f"{255 * m:.3f}" for m in backbone.mean.flatten().tolist()) + "]",
             "  PIXEL_STD: [" + ", ".join(f"{255 * s:.3f}" for s in backbone.std.flatten().tolist()) + "]",
             "  RESNETS:", "    STRIDE_IN_1X1: False",
             f"    DEPTH: {int(backbone.arch.removeprefix('resnet'))}",
             f"    STEM_OUT_CHANNELS: {state['conv1.weight'].shape[0]}",
             f"    RES2_OUT_CHANNELS: {_res2_out(state)}",
             f"    WIDTH_PER_GROUP: {state['layer1.0.conv1.weight'].shape[0]}",
             "INPUT:", "  FORMAT: 'RGB'"]
    if backbone.small_stem:
        lines.insert(0, "# this backbone has a 3x3 stride-1 stem without max-pool: Detectron2's stem is 7x7 stride 2")
    return "\n".join(lines) + "\n"


def _res2_out(state: dict[str, Tensor]) -> int:
    """Output channels of res2: its first block's last conv."""
    last = max(k for k in state if k.startswith("layer1.0.conv") and k.endswith(".weight"))
    return state[last].shape[0]
