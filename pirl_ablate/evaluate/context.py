"""What every evaluation protocol is handed: `EvalContext`, one loaded run and evaluation dataset.

A protocol (`pirl_ablate.evaluate.registry.register_protocol`) is `protocol(ctx, **settings) -> dict`: `ctx` gives
the run's network (`ctx.net`, eval mode, on `ctx.device`), its checkpoint record, the evaluation dataset's splits
(`ctx.split("train")`), batches of them (`ctx.batches`), cached features per layer (`ctx.features`) and the layers
asked for (`ctx.layers`); `ctx.configuration` fills in the configured values of whatever the protocol builds by
name (`ctx.configuration.bind("linear_probe", train_linear_probe)`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

from pirl_ablate.console import track
from pirl_ablate.data import DEFAULT_LOADER, ImageDataset, LoaderOptions, build_dataset, make_loader, to_device_batch
from pirl_ablate.errors import DataError
from pirl_ablate.evaluate.features import FeatureCache, cached_features, fingerprint, labels_digest
from pirl_ablate.evaluate.inputs import View, eval_view
from pirl_ablate.registry import PLAIN, Configuration
from pirl_ablate.runs import RunDir


@dataclass(frozen=True)
class EvalSettings:
    """How a run is evaluated (gin: `evaluation.*`).

    batch_size: images per forward pass (extraction, precise-BN, invariance).
    image_size: evaluation input size in pixels; None = the run's pre-training size.
    precise_bn_batches: clean train-split batches (seeded shuffle, `batch_size` images each) to recompute BN
        statistics on before evaluating (e.g. 16 at smoke scale); 0 (default) keeps the checkpoint's statistics.
        Results record "bn": "precise" when recomputed here, else what the run's result.json says training left
        ("precise" when `train.precise_bn_batches` > 0, else "train").
    device: "cuda", "cpu", ...; None = CUDA when available.
    cache_dtype: dtype of the cached features ("float16" halves the cache of 9k-dim layers; "float32").
    max_cache_gb: the most a protocol's cached features of one split may take (all its layers, on the device and
        in the run folder); more is refused before extraction with a message naming the online linear protocol.
        ImageNet's 1.28M train images at 9k fp16 dims are 23 GB per layer, 115 GB for five: one 80 GB device fits
        two layers.
    seed: seeds every random draw of the evaluation (precise-BN batch order, invariance transforms).
    """

    batch_size: int = 128
    image_size: int | None = None
    precise_bn_batches: int = 0
    device: str | None = None
    cache_dtype: str = "float16"
    max_cache_gb: float = 48.0
    seed: int = 0


@dataclass
class EvalContext:
    """One loaded run and evaluation dataset, shared by the protocols of one `run_evaluations` call."""

    run: RunDir
    net: torch.nn.Module  # the run's Method on `device`, eval mode
    record: dict[str, Any]  # the checkpoint's record (pirl_ablate.checkpoint)
    dataset: str
    image_size: int
    device: torch.device
    settings: EvalSettings
    bn: str = "train"
    layers: tuple[str, ...] = ("res5",)  # the layers a per-layer protocol (linear, svm, low-shot) evaluates
    configuration: Configuration = PLAIN  # the values of the configurables built here (datasets, probes, ...)
    loader_options: LoaderOptions = DEFAULT_LOADER
    _splits: dict[str, ImageDataset] = field(default_factory=dict)

    def split(self, name: str) -> ImageDataset:
        if name not in self._splits:
            kwargs = self.record["dataset"].get("kwargs", {}) if self.dataset == self.record["dataset"]["name"] \
                else {}
            self._splits[name] = build_dataset(self.dataset, name, configuration=self.configuration,
                                               **kwargs.get(name, {}))
            if self._splits[name].num_classes is None:
                raise DataError(f"evaluation dataset `{self.dataset}` ({name}) has no labels")
        return self._splits[name]

    @property
    def num_classes(self) -> int:
        return int(self.split("train").num_classes)

    def batches(self, dataset: ImageDataset, *, seed: int | None = None, epoch: int = 0, batch_size: int | None = None,
                description: str | None = None, view: View | None = None, rank: int = 0, world_size: int = 1,
                drop_last: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
        """(images (B, 3, S, S) float [0, 1] on the device, labels (B,)) over `dataset` (this rank's share): in order,
        or shuffled by (seed, epoch) when `seed` is given (the last partial batch dropped only with `drop_last`).

        view: None resizes the decoded images to the evaluation's `image_size`; else `view(images, sizes)` of
        `pirl_ablate.evaluate.inputs` makes them from the decoded images at their own size (sizes None: the loader
        delivers images that fill the batch).
        """
        loader = make_loader(dataset, batch_size or self.settings.batch_size, seed=seed, shuffle=seed is not None,
                             drop_last=drop_last, rank=rank, world_size=world_size, **asdict(self.loader_options))
        loader.set_epoch(epoch)
        items = track(loader, description, total=len(loader)) if description else loader
        for images, _, labels in items:
            if view is None:
                yield to_device_batch(images, self.device, self.image_size), labels.to(self.device)
            else:
                yield view(to_device_batch(images, self.device, None), None), labels.to(self.device)

    @cached_property
    def cache(self) -> FeatureCache:
        return FeatureCache(self.run.path)

    @cached_property
    def backbone_fingerprint(self) -> str:
        """Of the backbone's weights and BN statistics as evaluated (after precise-BN); part of the cache key."""
        return fingerprint(self.net.backbone)

    def features(self, split: str, layers: Sequence[str], *, view: str = "centre_crop", view_size: int | None = None,
                 pooling: str = "grid") -> dict[str, tuple[Tensor, Tensor]]:
        """{layer: (features (N, D), labels (N,))} of `split`, from the run's feature cache or one extraction.

        view: "centre_crop" (the decoded square resized to the evaluation's `image_size`), "squash" (VISSL's SVM
        input) or "resize_crop" (resize 256 * size / 224, centre crop; the linear evaluation's test input), the
        last two at `view_size` (None: `image_size`); pooling: "grid" or "vissl" (`pirl_ablate.evaluate.features`).
        """
        ds = self.split(split)
        size = view_size or self.image_size
        key = {"fingerprint": self.backbone_fingerprint, "num_images": len(ds),
               "labels": labels_digest(ds.labels), "image_size": self.image_size}
        if view != "centre_crop":
            key.update(view=view, view_size=size)
        return cached_features(self.cache, self.net.backbone, self.dataset, split, layers,
                               self.batches(ds, description=f"features {self.dataset}/{split}",
                                            view=eval_view(view, size)), key,
                               device=self.device, dtype=getattr(torch, self.settings.cache_dtype), pooling=pooling,
                               max_bytes=int(self.settings.max_cache_gb * 2**30), num_images=len(ds))
