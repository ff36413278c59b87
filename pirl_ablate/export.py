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
its configs expect ImageNet-style BGR 0-255 inputs (`MODEL.PIXEL_MEAN/STD`, `INPUT.FORMAT`): set them to this
backbone's RGB [0, 1] normalisation (mean/std in the run's network config) when fine-tuning there.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

from torch import Tensor

from pirl_ablate.errors import UserError
from pirl_ablate.models.backbone import Backbone
from pirl_ablate.runs import atomic_torch_save, atomic_write

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
    """Write `backbone` to `path` (atomically) in format `fmt` (one of FORMATS)."""
    if fmt == "torchvision":
        return atomic_torch_save(backbone.torchvision_state_dict(), path)
    if fmt != "detectron2":
        raise UserError(f"export --format {fmt!r}: valid formats are {', '.join(FORMATS)}")
    model = detectron2_state_dict(backbone)
    blob = {"__author__": "pirl-ablate", "matching_heuristics": True}
    if Path(path).suffix == ".pkl":
        blob["model"] = {k: v.numpy() for k, v in model.items()}
        return atomic_write(path, lambda fh: pickle.dump(blob, fh))
    return atomic_torch_save({**blob, "model": model}, path)
