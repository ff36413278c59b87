"""pirl-ablate: a modular ablation framework for PIRL (Misra & van der Maaten, CVPR 2020).

The public entry points are loaded lazily so that `pirl-ablate --help` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "register_transform": "pirl_ablate.transforms.registry",
    "build_transform": "pirl_ablate.transforms.registry",
    "TRANSFORMS": "pirl_ablate.transforms.registry",
    "register_method": "pirl_ablate.methods.base",
    "build_method": "pirl_ablate.methods.base",
    "METHODS": "pirl_ablate.methods.base",
    "Method": "pirl_ablate.methods.base",
    "MemoryBank": "pirl_ablate.losses.memory_bank",
    "Backbone": "pirl_ablate.models.backbone",
    "build_dataset": "pirl_ablate.data.registry",
    "pretrain": "pirl_ablate.train",
    "TrainSettings": "pirl_ablate.train",
    "parameter_groups": "pirl_ablate.train",
    "load_method": "pirl_ablate.checkpoint",
    "register_dataset": "pirl_ablate.data.registry",
    "DATASETS": "pirl_ablate.data.registry",
    "register_table": "pirl_ablate.report.registry",
    "TABLES": "pirl_ablate.report.registry",
    "RunDir": "pirl_ablate.runs",
    "UserError": "pirl_ablate.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pirl_ablate' has no attribute {name!r}")
