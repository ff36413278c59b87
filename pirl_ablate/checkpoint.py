"""Checkpoints: everything a run needs to continue bit-identically, saved atomically, loaded with weights_only.

A checkpoint is a dict of tensors and plain values only (RNG states are the uint8 tensors torch returns), so
`torch.load(weights_only=True)` reads it without unpickling arbitrary objects from a shared file system::

    {"version": 1, "epoch": completed epochs, "step": optimiser steps,
     "network": PIRLNet state_dict, "network_config": {constructor arguments}, "loss": loss state_dict (bank, Z,
     classifier heads), "optimizer": ..., "scheduler": ..., "rng": {"transform": ..., "loss": ..., "torch": ...,
     "cuda": [...]}, "world_size": int, "dataset_size": int}

The data order needs no state: it is a function of (seed, epoch) (pirl_ablate.data.loader).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from pirl_ablate.errors import UserError
from pirl_ablate.runs import atomic_torch_save

VERSION = 1
LAST = "last.pt"
KEYS = ("epoch", "step", "network", "network_config", "loss", "optimizer", "scheduler", "rng", "world_size",
        "dataset_size")


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
    return atomic_torch_save({"version": VERSION, **state}, Path(checkpoint_dir) / LAST)


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint read with weights_only=True; a file that is not one raises UserError naming it."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:  # weights_only refusals too
        raise UserError(f"{path}: not a readable pirl-ablate checkpoint ({type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
    if not isinstance(state, dict) or state.get("version") != VERSION:
        raise UserError(f"{path}: not a pirl-ablate checkpoint of version {VERSION}")
    missing = [k for k in KEYS if k not in state]
    if missing or not isinstance(state["network_config"], dict):
        what = ", ".join(missing) if missing else "network_config as a dict"
        raise UserError(f"{path}: not a complete pirl-ablate checkpoint (missing {what})")
    return state


def last(checkpoint_dir: str | os.PathLike) -> Path | None:
    """checkpoint_dir/last.pt if it exists."""
    path = Path(checkpoint_dir) / LAST
    return path if path.is_file() else None
