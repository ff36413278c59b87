"""The pretext-transform registry: `@register_transform("name")` and `build_transform("a+b")`."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from pirl_ablate.errors import ConfigError
from pirl_ablate.registry import Registry

TRANSFORMS = Registry("transform")
register_transform = TRANSFORMS.register


def build_transform(spec: str) -> Callable:
    """A transform from a registered name ("jigsaw") or a chain of them ("rotation+jigsaw", applied left to right).

    Each part is built with no arguments, so gin bindings apply (`jigsaw.num_permutations = 100`). A single name
    returns that transform; a chain returns a `Compose`. Unknown names raise UnknownNameError with close matches.
    """
    importlib.import_module("pirl_ablate.transforms")  # registers the built-ins
    from pirl_ablate.transforms.compose import Compose

    names = [part.strip() for part in str(spec).split("+")]
    if not all(names):
        raise ConfigError(f"transform `{spec}`: expected a name or names joined by `+`, e.g. rotation+jigsaw")
    factories = [TRANSFORMS.get(name) for name in names]
    if len(names) == 1:
        return factories[0]()
    return Compose([(name, factory()) for name, factory in zip(names, factories)])
