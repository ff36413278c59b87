"""The dataset registry: `@register_dataset("name")`."""

from __future__ import annotations

from pirl_ablate.registry import Registry

DATASETS = Registry("dataset")
register_dataset = DATASETS.register
