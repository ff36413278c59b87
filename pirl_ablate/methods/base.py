"""What a pre-training method is: the shared trunk, the heads it owns, the views it makes, its loss; the registry.

    method = build_method("npid", backbone=Backbone("resnet18"), memory_bank=MemoryBank(len(data), 128, g),
                          image_transform=build_transform("image", size=32), generator=g, num_negatives=4096)
    loss, parts = method(images, index, labels, generator)      images (B, 3, s, s) float in [0, 1]

A method is one file: a `Method` subclass with `@register_method("name")` that builds only the heads it uses in
`__init__`, names in `views` what it makes from a batch ("image": f's augmented view, "transformed": the pretext
view, "labels": the dataset's labels), and implements `forward`: the batch in, the scalar loss and a dict of
detached named parts (each term, similarities, accuracy, Z) out. Views are drawn from the `generator` given to
`forward`; anything else random (negatives, head initialisation) from the method's own `generator`, whose state the
training loop checkpoints. A method keeps each keyword argument of its constructor under the same name (`config`
records them, `pirl_ablate.checkpoint.load_method` rebuilds the method from them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from pirl_ablate.losses import MemoryBank
from pirl_ablate.models import Backbone, ImageEncoder, frozen_bn_stats, pooled_res5
from pirl_ablate.registry import PLAIN, Configuration, Registry, signature_parameters
from pirl_ablate.transforms import View, centre_squares

METHODS = Registry("method")
register_method = METHODS.register

# Constructor arguments that are objects (built by the caller), not hyperparameters recorded by `Method.config`.
PARTS = ("backbone", "memory_bank", "negatives", "transform", "image_transform", "generator")


def build_method(name: str, configuration: Configuration = PLAIN, **kwargs: Any) -> Method:
    """The method registered as `name`, built with `kwargs`; `configuration`'s values for its gin name fill the
    arguments not given (the plain one: the constructor's defaults)."""
    entry = METHODS.entry(name)
    return (configuration.bind(entry.gin_name, entry.obj) if entry.gin_name else entry.obj)(**kwargs)


# The parts `assemble_method` has its caller build, in the order they are built (each may draw from the global RNG
# as it is initialised, so the order is part of a run's reproducibility).
BUILT_PARTS = ("negatives", "memory_bank", "transform", "image_transform")


def assemble_method(name: str, backbone: Backbone, generator: torch.Generator, part: Callable[[str], Any],
                    hyperparameters: Mapping[str, Any], configuration: Configuration = PLAIN) -> Method:
    """The method registered as `name` on `backbone`, with the method's own `generator`, given the parts its
    constructor takes: the one place that asks, for the training builder (`pirl_ablate.build`: parts from the gin
    config) and checkpoint loading (`pirl_ablate.checkpoint.load_method`: parts from a run's record).

    part: builds the named part ("negatives", "memory_bank", "transform", "image_transform"), or returns None where
        the run has none; called only for the parts the method's constructor takes, in `BUILT_PARTS` order, and for
        the memory bank only when the source of negatives uses one (a method without a source: always).
    hyperparameters: constructor keyword arguments (a run's recorded `Method.config`, head settings, num_classes);
        those the method does not take are left out.
    configuration: fills the constructor's arguments given neither as a part nor a hyperparameter (the builder's
        gin config; checkpoint loading passes every value and keeps the plain one).
    """
    params = METHODS.entry(name).params
    kwargs: dict[str, Any] = {"backbone": backbone, "generator": generator}
    for key in BUILT_PARTS:
        if key not in params:
            continue
        if key == "memory_bank" and not getattr(kwargs.get("negatives"), "uses_memory_bank", True):
            continue
        built = part(key)
        if built is not None:
            kwargs[key] = built
    return build_method(name, configuration, **kwargs, **{k: v for k, v in hyperparameters.items() if k in params})


class Method(nn.Module):
    """The trunk plus a method's heads and loss; `forward(images, index, labels, generator) -> (loss, parts)`.

    Args:
        backbone: the shared trunk.
        transform: the pretext transform making v_It (`transform(images, generator) -> View`), if the method uses it.
        image_transform: the augmentation making f's view v_I; None uses the images as they are.
        generator: the method's own random draws (on the trunk's device).
        patch_bn_stats: when False, the batched patch forward normalises with the patches' batch statistics but
            leaves the BatchNorm running statistics untouched (so they describe full images only).
    """

    views: tuple[str, ...] = ()

    def __init__(self, backbone: Backbone, *, transform: Any = None, image_transform: Any = None,
                 generator: torch.Generator | None = None, patch_bn_stats: bool = True):
        super().__init__()
        self.backbone = backbone
        self.transform, self.image_transform, self.generator = transform, image_transform, generator
        self.patch_bn_stats = patch_bn_stats
        self.memory_bank: MemoryBank | None = None  # a memory-bank method's bank (the kNN monitor reads it)

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim

    def forward(self, images: Tensor, index: Tensor, labels: Tensor, generator: torch.Generator
                ) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss of a batch: `images` (B, 3, s, s) in [0, 1], dataset `index` (B,), `labels` (B,) long."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The constructor's hyperparameters (every keyword argument except the objects in PARTS), as stored."""
        params = signature_parameters(type(self)) or {}
        return {name: getattr(self, name) for name, p in params.items()
                if name not in PARTS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    # --------------------------------------------------------------------------------------------- the trunk
    def pooled(self, x: Tensor) -> Tensor:
        """Globally average-pooled res5 features (N, feature_dim) of images `x` (N, 3, H, W) in [0, 1]."""
        return pooled_res5(self.backbone, x)

    def pooled_view(self, view: View) -> Tensor:
        """Pooled res5 features of a transformed view: (B, P, feature_dim) for patch views (one batched trunk
        pass over the B*P patches, in the view's permuted order), (B, feature_dim) for image views."""
        if not view.is_patches:
            return self.pooled(view.data)
        b, p = view.data.shape[:2]
        frozen = not self.patch_bn_stats and self.training
        with frozen_bn_stats(self.backbone) if frozen else contextlib.nullcontext():
            feats = self.pooled(view.data.flatten(0, 1))
        return feats.view(b, p, -1)

    def image_encoder(self) -> ImageEncoder:
        """normalise(f(pool(res5(x)))) as one module over this method's trunk and its `f` head (methods with one):
        what a momentum encoder copies and updates from."""
        return ImageEncoder(self.backbone, self.f)

    def image_view(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """v_I (B, 3, h, w): `image_transform`'s view of the images, or the images themselves (of own-size images,
        their centre squares)."""
        return self.image_transform(images, generator).data if self.image_transform is not None else \
            centre_squares(images)
