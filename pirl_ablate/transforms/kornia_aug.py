"""Kornia's 2D augmentations as transforms: `kornia:RandomSolarize`, alone or in a chain (`rotation+kornia:...`).

Every `kornia.augmentation` 2D module (`AugmentationBase2D` subclass) is registered as `kornia:<ClassName>`, gin-
configurable as `kornia.<ClassName>` with Kornia's own constructor arguments (`kornia.RandomSolarize.p = 1.0`);
`@register_kornia()` registers one of your own subclasses the same way. `pirl-ablate list transforms` shows them.

Kornia draws its parameters from torch's global generator. To draw them from the run's explicit generator instead
(reproducible and resumable: the training loop checkpoints that generator), `sample` draws one seed from it and
runs Kornia's `forward_parameters` inside `torch.random.fork_rng` seeded with it; the global generator's state is
restored afterwards. `apply` calls the module with those parameters (`module(images, params=...)`), again under a
fork seeded with the same seed, so augmentations that draw inside their apply step (noise) are reproducible too.
The draws are returned in `View.params` under Kornia's names ("thresholds", "batch_prob", ...), each with leading
dim B (Kornia's batch-level entries, e.g. ColorJitter's "order", repeated per sample), plus "seed" (B,).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import kornia.augmentation as K
import torch
from torch import Tensor

from pirl_ablate.transforms.base import ImageBatch, Transform, View, centre_squares, with_sizes
from pirl_ablate.transforms.registry import register_transform

PREFIX = "kornia:"
SEED_KEY = "seed"
_INPUT_SHAPE = "forward_input_shape"  # Kornia's record of the input shape: rebuilt from the images in `apply`


class KorniaTransform(Transform):
    """A `kornia.augmentation` 2D module whose random parameters come from the run's generator (module docstring).

    Args: module: the Kornia augmentation (its `p`, `same_on_batch` and ranges as constructed); name: the
    registered name, e.g. "kornia:RandomSolarize".
    """

    produces_patches = False

    def __init__(self, module: K.AugmentationBase2D, name: str):
        self.module, self.name = module, name
        self._shared: frozenset[str] = frozenset()  # Kornia's batch-level parameters, repeated per sample

    def __call__(self, images: Tensor, generator: torch.Generator) -> View:
        """On a batch of own-size images (an ImageBatch): an intensity augmentation works pixel by pixel, so it runs
        on the canvas and its output keeps the images' sizes (a later part still crops each from its own extent);
        a geometric one runs on the images' centre squares (`centre_squares`), as rotation does."""
        if not isinstance(images, ImageBatch):
            return super().__call__(images, generator)
        if not isinstance(self.module, K.IntensityAugmentationBase2D):
            return super().__call__(centre_squares(images), generator)
        view = super().__call__(images, generator)
        view.data = with_sizes(view.data, images.sizes, images.side)
        return view

    def sample(self, shape: torch.Size, generator: torch.Generator, device: torch.device,
               sizes: Tensor | None = None) -> dict[str, Tensor]:
        """Kornia's parameters for `shape` (B, C, H, W), drawn under a global generator seeded from `generator`."""
        batch = shape[0]
        seed = torch.randint(0, 2**62, (1,), generator=generator, device=device)
        with _seeded(int(seed), device):
            drawn = self.module.forward_parameters(torch.Size(shape))
        per_sample = {k: v.to(device) for k, v in drawn.items()
                      if k != _INPUT_SHAPE and isinstance(v, Tensor) and v.dim() and v.shape[0] == batch}
        shared = {k: v.to(device).unsqueeze(0).expand(batch, *v.shape) for k, v in drawn.items()
                  if k != _INPUT_SHAPE and isinstance(v, Tensor) and k not in per_sample}
        self._shared = frozenset(shared)
        return {**per_sample, **shared, SEED_KEY: seed.expand(batch)}

    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        """The module applied with `params` (from `sample`) to images (B, C, H, W)."""
        drawn = {k: v[0] if k in self._shared else v for k, v in params.items() if k != SEED_KEY}
        drawn[_INPUT_SHAPE] = torch.tensor(images.shape, dtype=torch.long)
        with _seeded(int(params[SEED_KEY][0]), images.device):
            return self.module(images, params=drawn)

    def _apply_in_chunks(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        """The whole batch at once: Kornia is batched, and the seeded fork of the global generator must not run in
        several threads."""
        return self.apply(images, params)

    def __repr__(self) -> str:
        return f"KorniaTransform({self.module!r})"


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """torch's global generators (CPU, and `device`'s when it is CUDA) forked and seeded with `seed`."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
        torch.manual_seed(seed)
        yield


def register_kornia(name: str | None = None) -> Callable[[type], type]:
    """Class decorator: register a `kornia.augmentation` 2D module class as the transform `name` (default
    "kornia:<ClassName>"), gin-configurable with the class's constructor arguments as `kornia.<ClassName>` (or as
    `name` when given, which must then be a valid gin name)."""

    def decorator(cls: type) -> type:
        spec = name or f"{PREFIX}{cls.__name__}"

        def factory(**kwargs: Any) -> KorniaTransform:
            return KorniaTransform(cls(**kwargs), spec)

        factory.__signature__ = inspect.signature(cls)  # gin checks bindings against Kornia's own arguments
        factory.__doc__ = f"Kornia's {cls.__name__} ({inspect.getdoc(cls).splitlines()[0] if cls.__doc__ else ''})"
        factory.__name__ = factory.__qualname__ = cls.__name__
        register_transform(spec, gin_name=name or f"kornia.{cls.__name__}")(factory)
        return cls

    return decorator


def _kornia_2d_augmentations() -> list[type]:
    """Every concrete 2D augmentation class `kornia.augmentation` exports (not its base classes)."""
    return [cls for _, cls in sorted(inspect.getmembers(K, inspect.isclass))
            if issubclass(cls, K.AugmentationBase2D) and not cls.__name__.endswith("Base2D")]


for _cls in _kornia_2d_augmentations():
    register_kornia()(_cls)
