"""Frozen features of a backbone's layers, pooled to about 9k dimensions, extracted once and cached in the run folder.

Two poolings (`POOLINGS`):

"vissl": VISSL's fixed average pools of its ResNet-50 linear evaluation (configs/config/benchmark/
linear_image_classification/imagenet1k/eval_resnet_8gpu_transfer_in1k_linear.yaml, also its VOC07 SVMs),
`AvgPool2d(kernel, stride, padding)` per layer as `VISSL_POOL`: on a 224 px input 64 x 112^2 -> 12^2 (9216),
256 x 56^2 -> 6^2 (9216), 512 x 28^2 -> 4^2 (8192), 1024 x 14^2 -> 3^2 (9216), 2048 x 7^2 -> 2^2 (8192). It is
meant for ResNet-50 at 224 px (a map smaller than its kernel is a ConfigError naming the other pooling).

"grid": each of conv1, res2, res3, res4 is average-pooled
on a square grid of side s = round(sqrt(9000 / C)) (C = the layer's channels), capped by the map's own height and
width, so that C * s * s ~= 9k; res5 is globally pooled (s = 1). `pooled_grid` computes it; the grids and the
resulting dimensions for the standard backbones:

    layer   ResNet-50 (224 px)      ResNet-18 (224 px)     ResNet-18, small stem (32 px)   ResNet-50 (32 px)
    conv1   64 x 112^2 -> 12^2 9216  64 x 112^2 -> 12^2 9216 64 x 32^2 -> 12^2 9216          64 x 16^2 -> 12^2 9216
    res2    256 x 56^2 -> 6^2  9216  64 x 56^2  -> 12^2 9216 64 x 32^2 -> 12^2 9216          256 x 8^2 -> 6^2  9216
    res3    512 x 28^2 -> 4^2  8192  128 x 28^2 -> 8^2  8192 128 x 16^2 -> 8^2 8192          512 x 4^2 -> 4^2  8192
    res4    1024 x 14^2 -> 3^2 9216  256 x 14^2 -> 6^2  9216 256 x 8^2 -> 6^2  9216          1024 x 2^2 -> 2^2 4096
    res5    2048 x 7^2 -> 1    2048  512 x 7^2  -> 1    512  512 x 4^2 -> 1    512           2048 x 1^2 -> 1   2048

(ResNet-50 at 224 px reproduces the paper's/VISSL's 9216/9216/8192/9216 dimensions; width multiplier 2 doubles C and
shrinks s accordingly.) A grid that does not divide the map uses torch's adaptive average pooling windows.

Cache: `features/<dataset>-<split>-<layer>.pt` in the run folder, written with `atomic_torch_save`, holding
{"features": (N, D) tensor (float16 by default), "labels": (N,) long, "key": {...}}. The key holds the fingerprint of
the backbone's weights and buffers (so a new checkpoint, or precise-BN statistics, invalidate it), the number of
images and a hash of their labels, the input size and the pooling grid; any mismatch means re-extraction.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pirl_ablate.console import console
from pirl_ablate.errors import ConfigError, did_you_mean
from pirl_ablate.layers import LAYERS
from pirl_ablate.runs import atomic_torch_save, no_link

TARGET_DIMS = 9000  # "about 9k dimensions" per layer (paper Section 5.1)
VISSL_POOL = {"conv1": (10, 10, 4), "res2": (16, 8, 0), "res3": (13, 5, 0), "res4": (8, 3, 0), "res5": (6, 1, 0)}
POOLINGS = ("grid", "vissl")


def check_layers(layers: Sequence[str]) -> tuple[str, ...]:
    """`layers` validated against conv1, res2..res5 (one-line ConfigError naming the bad one)."""
    for layer in layers:
        if layer not in LAYERS:
            raise ConfigError(f"unknown layer `{layer}`{did_you_mean(layer, LAYERS)}")
    if not layers:
        raise ConfigError(f"no layers given (choose from {', '.join(LAYERS)})")
    return tuple(dict.fromkeys(layers))


def pooled_grid(layer: str, channels: int, height: int, width: int, target_dims: int = TARGET_DIMS
                ) -> tuple[int, int]:
    """Output (h, w) of the average pool for `layer`: res5 -> (1, 1); else side round(sqrt(target / C)), capped."""
    if layer == "res5":
        return (1, 1)
    side = max(1, round(math.sqrt(target_dims / channels)))
    return (min(side, height), min(side, width))


def pool_map(layer: str, fmap: Tensor, target_dims: int = TARGET_DIMS, pooling: str = "grid") -> Tensor:
    """(B, C, H, W) feature map -> (B, C, h, w) pooled by `pooling` ("grid": `pooled_grid`; "vissl": `VISSL_POOL`)."""
    if pooling == "grid":
        return F.adaptive_avg_pool2d(fmap, pooled_grid(layer, *fmap.shape[1:], target_dims=target_dims))
    if pooling != "vissl":
        raise ConfigError(f"pooling {pooling!r}{did_you_mean(pooling, POOLINGS)} (valid: {', '.join(POOLINGS)})")
    kernel, stride, padding = VISSL_POOL[layer]
    if min(fmap.shape[-2:]) + 2 * padding < kernel:
        raise ConfigError(f"pooling 'vissl': {layer} is {fmap.shape[-2]} x {fmap.shape[-1]}, smaller than VISSL's "
                          f"{kernel} px pool (meant for ResNet-50 at 224 px); use pooling 'grid' at this size")
    return F.avg_pool2d(fmap, kernel, stride, padding)


def pool_feature_map(layer: str, fmap: Tensor, target_dims: int = TARGET_DIMS, pooling: str = "grid") -> Tensor:
    """(B, C, H, W) feature map -> (B, C * h * w), pooled by `pool_map`."""
    return pool_map(layer, fmap, target_dims, pooling).flatten(1)


@torch.no_grad()
def extract_features(backbone: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], layers: Sequence[str], *,
                     target_dims: int = TARGET_DIMS, dtype: torch.dtype = torch.float16, pooling: str = "grid",
                     max_bytes: int | None = None, num_images: int | None = None
                     ) -> tuple[dict[str, Tensor], Tensor]:
    """Pooled features of every layer in `layers`, in ONE pass of the frozen `backbone` (eval mode) over `batches`.

    batches: (images (B, C, H, W) float in [0, 1] on the backbone's device, labels (B,) long).
    max_bytes, num_images: after the first batch, features of `num_images` images that would take more than
    `max_bytes` are refused (ConfigError) before any more work.
    Returns ({layer: (N, D_layer) `dtype` on the device}, labels (N,) long on the device).
    """
    layers = check_layers(layers)
    was_training = backbone.training
    backbone.eval()
    chunks: dict[str, list[Tensor]] = {layer: [] for layer in layers}
    labels = []
    try:
        for images, y in batches:
            maps = backbone(images, layers=layers)
            for layer in layers:
                chunks[layer].append(pool_feature_map(layer, maps[layer].float(), target_dims, pooling).to(dtype))
            labels.append(y.to(images.device))
            if max_bytes is not None and num_images is not None and len(labels) == 1:
                _check_size(chunks, len(y), num_images, max_bytes)
    finally:
        backbone.train(was_training)
    if not labels:
        raise ValueError("extract_features: no batches")
    return {layer: torch.cat(c) for layer, c in chunks.items()}, torch.cat(labels)


def _check_size(chunks: dict[str, list[Tensor]], batch: int, num_images: int, max_bytes: int) -> None:
    """ConfigError when the features of `num_images` images (as the first batch of `batch` images is) exceed
    `max_bytes`."""
    per_image = sum(c[0].element_size() * c[0].shape[1] for c in chunks.values())
    total = per_image * num_images
    if total > max_bytes:
        dims = ", ".join(f"{layer} {c[0].shape[1]}" for layer, c in chunks.items())
        dtype = next(iter(chunks.values()))[0].dtype
        raise ConfigError(f"cached features of {num_images} images ({dims} dims, {dtype}) "
                          f"would take {total / 2**30:.3g} GB, over evaluation.max_cache_gb = "
                          f"{max_bytes / 2**30:g}: use the online linear protocol (linear_eval.mode = 'online', "
                          "no cache), fewer layers per evaluation, or a larger bound")


def fingerprint(module: nn.Module) -> str:
    """sha256 (first 16 hex digits) of the parameters and buffers of `module` that shape its output: names, dtypes,
    shapes and bytes (BatchNorm's `num_batches_tracked` counters left out)."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{t.numel()}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def labels_digest(labels: Tensor) -> str:
    """sha256 (16 hex digits) of a label vector: tells two subsets of a dataset apart in the cache key."""
    return hashlib.sha256(labels.detach().cpu().long().numpy().tobytes()).hexdigest()[:16]


class FeatureCache:
    """`features/<dataset>-<split>-<layer>.pt` files of one run folder (format in the module docstring)."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir) / "features"

    def path(self, dataset: str, split: str, layer: str) -> Path:
        return self.dir / f"{dataset}-{split}-{layer}.pt"

    def load(self, dataset: str, split: str, layer: str, key: dict, device: torch.device | str
             ) -> tuple[Tensor, Tensor] | None:
        """(features, labels) on `device` if the file exists and was written under `key`, else None."""
        p = self.path(dataset, split, layer)
        if not p.is_file():
            return None
        try:
            blob = torch.load(p, map_location=device, weights_only=True)
        except Exception as e:  # noqa: BLE001  a garbled file makes the unpickler raise anything
            return self._refused(p, f"unreadable, {type(e).__name__}")
        if not isinstance(blob, dict) or not isinstance(blob.get("features"), Tensor) \
                or not isinstance(blob.get("labels"), Tensor):
            return self._refused(p, "no features and labels tensors")
        if blob.get("key") != key:
            return None
        return blob["features"], blob["labels"]

    @staticmethod
    def _refused(path: Path, why: str) -> None:
        """A cache file that is not one of ours (the save is atomic, so it is foreign or garbled): say so in one
        line and extract again (the new file replaces it)."""
        console.print(f"ignoring feature cache {path} ({why}); extracting again", markup=False, soft_wrap=True)

    def save(self, dataset: str, split: str, layer: str, key: dict, features: Tensor, labels: Tensor) -> Path:
        blob = {"features": features.cpu(), "labels": labels.cpu(), "key": key}
        no_link(self.dir)
        return atomic_torch_save(blob, self.path(dataset, split, layer))


def cached_features(cache: FeatureCache, backbone: nn.Module, dataset: str, split: str, layers: Sequence[str],
                    batches: Iterable[tuple[Tensor, Tensor]], key: dict, *, device: torch.device | str,
                    target_dims: int = TARGET_DIMS, dtype: torch.dtype = torch.float16, pooling: str = "grid",
                    max_bytes: int | None = None, num_images: int | None = None
                    ) -> dict[str, tuple[Tensor, Tensor]]:
    """{layer: (features (N, D), labels (N,))} on `device`: read from `cache` where the key matches; the missing
    layers extracted together in one pass over `batches` (an iterable that is only consumed if needed) and saved.

    key: what identifies the features besides the layer (see the module docstring); `target_dims`, the dtype and
    the pooling are added to it. max_bytes, num_images: `extract_features`'s bound.
    """
    layers = check_layers(layers)
    key = {**key, "target_dims": target_dims, "dtype": str(dtype), "pooling": pooling}
    out: dict[str, tuple[Tensor, Tensor]] = {}
    for layer in layers:
        hit = cache.load(dataset, split, layer, key, device)
        if hit is not None:
            out[layer] = hit
    missing = [layer for layer in layers if layer not in out]
    if missing:
        feats, labels = extract_features(backbone, batches, missing, target_dims=target_dims, dtype=dtype,
                                         pooling=pooling, max_bytes=max_bytes, num_images=num_images)
        for layer in missing:
            cache.save(dataset, split, layer, key, feats[layer], labels)
            out[layer] = (feats[layer], labels)
    return {layer: out[layer] for layer in layers}
