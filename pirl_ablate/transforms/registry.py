"""The pretext-transform registry: `@register_transform("name")` and `build_transform("a+b")`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from pirl_ablate.errors import ConfigError
from pirl_ablate.registry import PLAIN, Configuration, Registry

TRANSFORMS = Registry("transform")
register_transform = TRANSFORMS.register


def build_transform(spec: str, *, configuration: Configuration = PLAIN, **kwargs: Any) -> Callable:
    """A transform from a registered name ("jigsaw") or a chain of them ("rotation+jigsaw", applied left to right).

    A single name is built with `kwargs` (`build_transform("jigsaw", grid=2, crop_size=None)`); a chain takes
    one dict of keyword arguments per part (`build_transform("rotation+jigsaw", jigsaw={"grid": 2})`) and returns
    a `Compose`. `configuration` fills the arguments not given (the gin edge's: `jigsaw.num_permutations = 100`;
    the plain one: the defaults). The transform
    carries `spec = {"name": spec, "kwargs": kwargs}`, what a checkpoint records to build it again. Unknown names
    raise UnknownNameError with close matches.
    """
    importlib.import_module("pirl_ablate.transforms")  # registers the built-ins
    from pirl_ablate.transforms.compose import Compose

    names = [part.strip() for part in str(spec).split("+")]
    if not all(names):
        raise ConfigError(f"transform `{spec}`: expected a name or names joined by `+`, e.g. rotation+jigsaw")
    factories = [configuration.bind(TRANSFORMS.entry(name).gin_name or name, TRANSFORMS.get(name)) for name in names]
    if len(names) == 1:
        transform = factories[0](**kwargs)
    else:
        unknown = set(kwargs) - set(names)
        if unknown:
            raise ConfigError(f"transform `{spec}`: keyword arguments go by part name ({', '.join(names)}), "
                              f"not {sorted(unknown)[0]!r}")
        transform = Compose([(name, factory(**kwargs.get(name, {}))) for name, factory in zip(names, factories)])
    transform.spec = {"name": spec, "kwargs": kwargs}
    return transform
