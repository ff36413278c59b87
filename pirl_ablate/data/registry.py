"""The dataset registry: `@register_dataset("name")` and `build_dataset(name, split)`.

A dataset factory is a function `factory(split="train", subset=None, subset_seed=None, ...)` returning an
`ImageDataset`. `build_dataset` asks its `configuration` for the values configured in the scope named after the
split, so a gin config can bind the two splits apart::

    fashion_mnist.subset = 10000        # both splits
    test/fashion_mnist.subset = 2000    # the test split only (later, more specific bindings win)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pirl_ablate.registry import PLAIN, Configuration, Registry

if TYPE_CHECKING:
    from pirl_ablate.data.arrays import ImageDataset

DATASETS = Registry("dataset")
register_dataset = DATASETS.register

SPLITS = ("train", "test", "unlabeled")


def build_dataset(name: str, split: str = "train", *, configuration: Configuration = PLAIN,
                  **kwargs: Any) -> ImageDataset:
    """The registered dataset `name` for `split` with `kwargs`; `configuration` fills the arguments not given
    (scoped by split; the plain one: the factory's defaults)."""
    factory = DATASETS.get(name)
    gin_name = DATASETS.entry(name).gin_name or name
    return configuration.bind(gin_name, factory, scope=split)(split=split, **kwargs)
