"""pirl-ablate: a modular ablation framework for PIRL (Misra & van der Maaten, CVPR 2020).

Where things live:

    transforms/  pretext transforms (jigsaw, rotation, image views, Kornia): draw parameters, then apply them
    methods/     one file per method (PIRL, NPID, Jigsaw, Rotation, MoCo v2, ...): its heads, views and loss call
    losses/      NCE / InfoNCE on embeddings, the memory bank, the sources of negatives, chunked and dense scoring
    models/      the ResNet trunk, heads, momentum encoder, precise BN
    data/        datasets that return indices, the loader
    train.py     the pre-training loop (plain objects and a TrainSettings in, run folder out)
    build.py  config.py  gin_edge.py   the gin edge: objects built from gin, config parsing, gin registrations
    evaluate/    linear, kNN, invariance, semi-supervised, SVM, low-shot and detection protocols on a run
                 (@register_protocol)
    sweep/  report/   sweep files -> runs -> executors; results -> tables and figures of the paper
    commands/    one handler per `pirl-ablate` subcommand (cli.py only parses and dispatches)
    runs.py  files.py  health.py   the run folder, the safe file writes under it, a run's health numbers

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
    "register_protocol": "pirl_ablate.evaluate.registry",
    "PROTOCOLS": "pirl_ablate.evaluate.registry",
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
