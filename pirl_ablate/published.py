"""Published ResNet weights as a run folder (`pirl-ablate import`), so they sit beside your own runs in every table.

Two layouts are read:

- vissl: a VISSL checkpoint (`model_final_checkpoint_phase*.torch`, the model zoo's PIRL / NPID++ / Jigsaw
  files). VISSL's `vissl/utils/checkpoint.py` saves the model under
  `checkpoint["classy_state_dict"]["base_model"]["model"]` as {"trunk": {...}, "heads": {...}}; its ResNe(X)t trunk
  (`vissl/models/trunks/resnext.py`) keeps torchvision's modules in `_feature_blocks`, so the trunk's keys are
  torchvision's with that prefix (`_feature_blocks.conv1.weight`, `_feature_blocks.layer1.0.bn1.running_mean`).
  A bare trunk dict with those keys is read too. The heads are left out.
- torchvision: a `torchvision.models.resnet18/50()` state_dict (`fc.*` left out).

The architecture is read from the weights: Bottleneck blocks (`layer1.0.conv3`) make a ResNet-50, else a ResNet-18;
the width is conv1's output channels / 64; a 3x3 conv1 is the small stem. Inputs are normalised with ImageNet's
mean and std inside the trunk, as both VISSL and torchvision train them.

The run folder holds what a trained run's does (`pirl_ablate.runs`): config.gin (a comment naming the source),
meta.json, checkpoints/last.pt with the `imported` method (`pirl_ablate.methods.imported`) and a record naming the
dataset and image size evaluation uses by default, and result.json ("done", 0 epochs, "bn": "train": the
checkpoint's own BN statistics).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pirl_ablate import checkpoint
from pirl_ablate.errors import UserError
from pirl_ablate.models import Backbone
from pirl_ablate.runs import RunDir

FORMATS = ("vissl", "torchvision")
VISSL_PREFIX = "_feature_blocks."


def trunk_state_dict(obj: Any, fmt: str, path: str | os.PathLike) -> dict[str, Tensor]:
    """The trunk's weights under torchvision's names from a loaded checkpoint `obj` in layout `fmt`; a layout that
    is not `fmt`'s raises UserError naming the first key that does not fit."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: unknown (valid: {', '.join(FORMATS)})")
    if fmt == "vissl" and isinstance(obj, dict) and "classy_state_dict" in obj:
        try:
            obj = obj["classy_state_dict"]["base_model"]["model"]["trunk"]
        except (KeyError, TypeError):
            raise UserError(f"{path}: a VISSL checkpoint without classy_state_dict.base_model.model.trunk") from None
    if not isinstance(obj, dict) or not obj:
        raise UserError(f"{path}: not a {fmt} ResNet checkpoint (expected a dict of tensors)")
    foreign = next((k for k, v in obj.items() if not isinstance(v, Tensor)), None)
    if foreign is not None:
        hint = "; a VISSL checkpoint: use --format vissl" if "classy_state_dict" in obj else ""
        raise UserError(f"{path}: key {foreign!r} is not a {fmt} ResNet trunk key (not a tensor){hint}")
    if fmt == "vissl":
        foreign = next((k for k in obj if not k.startswith(VISSL_PREFIX)), None)
        if foreign is not None:
            raise UserError(f"{path}: key {foreign!r} is not a VISSL ResNet trunk key ({VISSL_PREFIX}...)")
        return {k[len(VISSL_PREFIX):]: v for k, v in obj.items()}
    return {k: v for k, v in obj.items() if not k.startswith("fc.")}


def backbone_from(state: dict[str, Tensor], path: str | os.PathLike) -> Backbone:
    """A `Backbone` of the architecture `state` describes, holding its weights; a key with no place in it (or a
    missing or wrongly shaped one) raises UserError naming the first such key."""
    conv1 = state.get("conv1.weight")
    if conv1 is None or conv1.dim() != 4:
        first = next(iter(state))
        raise UserError(f"{path}: key {first!r} is not a ResNet trunk key (no conv1.weight: not a ResNet checkpoint)")
    arch = "resnet50" if "layer1.0.conv3.weight" in state else "resnet18"
    width = conv1.shape[0] / 64
    try:
        backbone = Backbone(arch, width_multiplier=width if width != int(width) else int(width),
                            small_stem=conv1.shape[-1] == 3)
    except UserError:
        raise UserError(f"{path}: conv1.weight {tuple(conv1.shape)} is not a ResNet-18/50 stem of width 0.5, 1 or "
                        "2") from None
    own = backbone.state_dict()
    unmatched = next((k for k in state if k not in own), None)
    if unmatched is not None:
        raise UserError(f"{path}: key {unmatched!r} has no place in a {arch} trunk")
    missing = next((k for k in own if k not in state and not k.endswith("num_batches_tracked")), None)
    if missing is not None:
        raise UserError(f"{path}: no weights for {missing!r} of a {arch} trunk")
    wrong = next((k for k, v in state.items() if v.shape != own[k].shape), None)
    if wrong is not None:
        raise UserError(f"{path}: key {wrong!r} has shape {tuple(state[wrong].shape)}, a {arch} trunk's is "
                        f"{tuple(own[wrong].shape)}")
    backbone.load_state_dict(state, strict=False)  # (BN counters a checkpoint leaves out keep their zero)
    return backbone.eval()


def import_checkpoint(path: str | os.PathLike, fmt: str, out: str | os.PathLike, *, dataset: str,
                      image_size: int) -> RunDir:
    """Write the run folder `out` for the ResNet weights in `path` (layout `fmt`); `dataset` and `image_size`
    are what evaluation uses unless told otherwise (`pirl-ablate eval --dataset`, `evaluation.image_size`)."""
    from pirl_ablate.methods import build_method

    run = RunDir(out)
    if run.path.exists() and any(run.path.iterdir()):
        raise UserError(f"--out {out}: exists and is not empty; import into a new folder")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except Exception as e:  # noqa: BLE001  garbage makes the unpickler raise anything
        raise UserError(f"{path}: not a readable torch checkpoint ({type(e).__name__})") from None
    backbone = backbone_from(trunk_state_dict(obj, fmt, path), path)
    source = f"{Path(path).resolve()} ({fmt})"
    method = build_method("imported", backbone=backbone, source=source)
    record = {"dataset": {"name": dataset}, **checkpoint.method_record(method), "image_size": image_size,
              "dataset_size": 0}
    run.start(f"# pirl-ablate import {source}: published weights, not trained here\n", seed=None,
              imported=source)
    checkpoint.save({"epoch": 0, "step": 0, "method": method.state_dict(), "optimizer": {}, "scheduler": {},
                     "rng": {}, "world_size": 1, "dataset_size": 0, "record": record}, run.checkpoint_dir)
    run.update_meta(record=record)
    run.finish(epochs=0, steps=0, final={}, warnings=[], bn="train", imported=source)
    return run
