"""Checkpoints: everything a run needs to continue bit-identically, saved atomically, loaded with weights_only.

A checkpoint is a dict of tensors and plain values only (RNG states are the uint8 tensors torch returns), so
`torch.load(weights_only=True)` reads it without unpickling arbitrary objects from a shared file system::

    {"version": 2, "epoch": completed epochs, "step": optimiser steps,
     "method": the method's state_dict (trunk, heads, memory bank, Z), "optimizer": ..., "scheduler": ...,
     "rng": {"view": ..., "method": ..., "torch": ..., "cuda": [...]}, "world_size": int, "dataset_size": int,
     "record": {"method": {"name", "config"}, "backbone": {...},
                "transform": {"name", "kwargs"} | None (the pretext transform: the config's train.transform, else
                the method's own),
                "image_transform": ... | None, "negatives": {"name", "kwargs"} | None (the source of negatives),
                "dataset": {"name", "kwargs": {split: {...}}}, "image_size": int, "dataset_size": int}}

The record is what evaluation needs (`load_method`, `run_record`), so nothing re-parses the run's gin config.
The data order needs no state: it is a function of (seed, epoch) (pirl_ablate.data.loader).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pirl_ablate.errors import UserError
from pirl_ablate.runs import RunDir, atomic_torch_save, no_link

if TYPE_CHECKING:
    from pirl_ablate.methods import Method

VERSION = 2
LAST = "last.pt"
KEYS = ("epoch", "step", "method", "optimizer", "scheduler", "rng", "world_size", "dataset_size", "record")


def rng_states(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """The states of the named generators plus torch's global CPU (and CUDA) generators, as uint8 tensors."""
    states: dict[str, Any] = {name: g.get_state() for name, g in generators.items()}
    states["torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    for name, g in generators.items():
        g.set_state(states[name])
    torch.set_rng_state(states["torch"])
    if torch.cuda.is_available() and "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


def save(state: dict[str, Any], checkpoint_dir: str | os.PathLike) -> Path:
    """Write `state` atomically as checkpoint_dir/last.pt (a kill leaves the previous one intact)."""
    return atomic_torch_save({"version": VERSION, **state}, no_link(checkpoint_dir) / LAST)


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu",
         keys: tuple[str, ...] = KEYS) -> dict[str, Any]:
    """A checkpoint read with weights_only=True; a file that is not one, or lacks one of `keys` (a training
    checkpoint's by default; other loops, e.g. detection fine-tuning, name theirs), raises UserError naming it."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001  garbage makes the unpickler raise anything (IndexError, KeyError, ...)
        raise UserError(f"{path}: not a readable pirl-ablate checkpoint ({type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
    if isinstance(state, dict) and state.get("version") == 1:
        raise UserError(f"{path}: a checkpoint of format 1 (network + loss state, before methods/), which this "
                        f"version cannot load: retrain the run into a new folder")
    if not isinstance(state, dict) or state.get("version") != VERSION:
        raise UserError(f"{path}: not a pirl-ablate checkpoint of version {VERSION}")
    missing = [k for k in keys if k not in state]
    if missing or ("record" in keys and not isinstance(state["record"], dict)):
        what = ", ".join(missing) if missing else "record as a dict"
        raise UserError(f"{path}: not a complete pirl-ablate checkpoint (missing {what})")
    if isinstance(state.get("record"), dict):
        state["record"] = current_record(state["record"])
    return state


def current_record(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with the keys of this version: a run recorded before "transform" was the record's one pretext
    transform holds it under "pretext_transform" (the config's `train.transform`), beside the method's own
    transform under "transform"; the config's wins, as evaluation read it then."""
    if "pretext_transform" not in record:
        return record
    old = dict(record)
    pretext = old.pop("pretext_transform")
    return {**old, "transform": pretext or old.get("transform")}


def last(checkpoint_dir: str | os.PathLike) -> Path | None:
    """checkpoint_dir/last.pt if it exists."""
    path = Path(checkpoint_dir) / LAST
    return path if path.is_file() else None


def method_record(method: Method) -> dict[str, Any]:
    """What rebuilds `method` without gin: its registered name and hyperparameters, the backbone's arguments and
    the transforms' specs (`build_transform(**spec)`; None for a callable not made by `build_transform`)."""
    from pirl_ablate.methods import METHODS

    name = next((e.name for e in METHODS.describe() if e.obj is type(method)), None)
    if name is None:
        raise UserError(f"{type(method).__name__} is not a registered method: decorate it with @register_method")
    negatives = getattr(method, "negatives", None)
    return {"method": {"name": name, "config": method.config()}, "backbone": method.backbone.config(),
            "transform": getattr(method.transform, "spec", None),
            "image_transform": getattr(method.image_transform, "spec", None),
            "negatives": negatives.spec if negatives is not None else None}


def _last_state(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    run = RunDir(run_dir)
    path = last(run.checkpoint_dir)
    if path is None:
        raise UserError(f"{run.checkpoint_dir}: no checkpoint (last.pt); train the run first")
    return load(path, map_location=map_location)


def run_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The record of a run's last checkpoint (see the module docstring)."""
    return _last_state(run_dir)["record"]


def load_method(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> Method:
    """The trained method (trunk + heads) of a run folder's last checkpoint, in eval mode; no gin needed."""
    from pirl_ablate.losses import MemoryBank, build_negatives
    from pirl_ablate.methods.base import assemble_method
    from pirl_ablate.models import Backbone
    from pirl_ablate.transforms import build_transform

    state = _last_state(run_dir)
    record = state["record"]
    config = record["method"]["config"]

    def part(key: str) -> Any:
        if key == "memory_bank":
            return MemoryBank(record["dataset_size"], config["embed_dim"], torch.Generator())
        spec = record.get(key)  # no "negatives" in runs recorded before the negative sources: the memory bank
        if spec is None:
            return None
        return (build_negatives if key == "negatives" else build_transform)(spec["name"], **spec["kwargs"])

    method = assemble_method(record["method"]["name"], Backbone(**record["backbone"]), torch.Generator(), part, config)
    method.load_state_dict(state["method"])
    return method.to(map_location).eval()
