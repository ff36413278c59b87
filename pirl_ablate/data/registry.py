"""The dataset registry: `@register_dataset("name")` and `build_dataset(name, split)`.

A dataset factory is a gin-configurable function `factory(split="train", subset=None, subset_seed=None, ...)`
returning an `ImageDataset`. `build_dataset` calls it inside the gin scope named after the split, so a config can
bind the two splits apart::

    fashion_mnist.subset = 10000        # both splits
    test/fashion_mnist.subset = 2000    # the test split only (later, more specific bindings win)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gin

from pirl_ablate.registry import Registry

if TYPE_CHECKING:
    from pirl_ablate.data.arrays import ImageDataset

DATASETS = Registry("dataset")
register_dataset = DATASETS.register

SPLITS = ("train", "test", "unlabeled")


def build_dataset(name: str, split: str = "train", **kwargs: Any) -> ImageDataset:
    """The registered dataset `name` for `split`, with gin bindings (scoped by split) and `kwargs` applied."""
    factory = DATASETS.get(name)
    with gin.config_scope(split):
        return factory(split=split, **kwargs)
