"""Detection transfer (paper Tables 1 and 6): Faster R-CNN fine-tuned from a run's backbone, on VOC.

The model is assembled from torchvision's detection modules (`FasterRCNN`, `AnchorGenerator`, `MultiScaleRoIAlign`,
`FastRCNNPredictor`), in the paper's R50-C4 layout (Detectron2's `Res5ROIHeads`):

    images -> stem, res2, res3, res4 (stride 16)           `C4Trunk`, the RPN's and RoIAlign's feature map
    RoIAlign 14 x 14 on res4 -> res5 (stride 2) -> 7 x 7 -> average pool -> box classifier / regressor  `Res5Head`

or, with `arch = "fpn"`, torchvision's `BackboneWithFPN` over res2-res5 with its default two-layer box head.
Every layer is trained. BatchNorm is frozen by default (`norm = "frozen"`: torchvision's `FrozenBatchNorm2d` with
the backbone's statistics and affine parameters, the paper's setting, supplementary B); `"sync"` is SyncBN across
the ranks (VISSL's VOC07 config), `"batch"` per-process batch statistics. Images enter in [0, 1]; the detector's own
transform normalises them with the backbone's mean/std and resizes the shorter side to `scales` (one drawn per
iteration in training, 480-800 at paper scale) and to `test_scale` at test time.

Training is `iterations` SGD steps of `batch_size` images in all, split evenly over the torch.distributed ranks
(DistributedDataParallel; 16 images on 8 processes = 2 per process at paper scale), with linear warm-up and
x`gamma` steps. Iteration i's images, flips and scale are drawn from a generator seeded with (seed, i) and rank r
takes the r-th slice of them; torchvision's RPN / RoI samplers draw from torch's global generator, which is seeded
with (seed, i, r) before each iteration, so a run resumed from `DIR/checkpoints/last.pt` (written atomically by rank 0
every `checkpoint_every` iterations) ends as an uninterrupted one would. The checkpoint carries the key of the
backbone and settings it was trained from; one with another key is not resumed (a new detector starts).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pirl_ablate import checkpoint
from pirl_ablate.console import info, progress
from pirl_ablate.data.voc import Annotation
from pirl_ablate.distributed import initialized_world
from pirl_ablate.errors import ConfigError, UserError, did_you_mean
from pirl_ablate.evaluate.detection_metrics import coco_ap, cpu_detections, voc_detection_metrics
from pirl_ablate.models.backbone import Backbone

ARCHS = ("c4", "fpn")
NORMS = ("frozen", "sync", "batch")


class DetectionDiverged(UserError):
    """The fine-tuning loss became NaN or infinite on some rank; the weights and checkpoint stay as before it."""


class C4Trunk(nn.Module):
    """stem + res2 + res3 + res4 of a `Backbone` (its modules, shared): images (B, 3, H, W) -> {"0": res4}."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool)
        self.res2, self.res3, self.res4 = backbone.layer1, backbone.layer2, backbone.layer3
        self.out_channels = _stage_channels(backbone.layer3)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"0": self.res4(self.res3(self.res2(self.stem(x))))}


class Res5Head(nn.Module):
    """res5 of a `Backbone` as the box head: RoI features (K, C4, 14, 14) -> res5 (K, C5, 7, 7) -> pool (K, C5)."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.res5 = backbone.layer4
        self.out_channels = _stage_channels(backbone.layer4)

    def forward(self, x: Tensor) -> Tensor:
        return self.res5(x).mean(dim=(2, 3))


def _stage_channels(stage: nn.Sequential) -> int:
    """Output channels of a torchvision ResNet stage (its last block's last BN)."""
    last = stage[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).weight.shape[0]


def build_detector(backbone: Backbone, num_classes: int, *, arch: str = "c4", norm: str = "frozen",
                   anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
                   aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), test_scale: int = 800, max_size: int = 1333,
                   rpn_pre_nms_top_n_train: int = 12000, rpn_post_nms_top_n_train: int = 2000,
                   rpn_pre_nms_top_n_test: int = 6000, rpn_post_nms_top_n_test: int = 1000,
                   roi_size: int = 14, box_batch_size_per_image: int = 512, fpn_channels: int = 256) -> nn.Module:
    """A torchvision `FasterRCNN` whose trunk (and, for C4, box head) are `backbone`'s modules (deep-copied).

    num_classes: object classes (background added). norm: the trunk's BatchNorm, one of NORMS ("frozen", the
    paper's; "sync" converts to SyncBatchNorm, which needs a process group when it trains; "batch"). Defaults are
    Detectron2's R50-C4 (Base-RCNN-C4.yaml: anchors 32-512 with ratios 0.5/1/2 on res4, RPN top-k 12000/2000 train
    and 6000/1000 test, test scale 800, max 1333, RoIAlign 14 x 14 before res5, 512 sampled RoIs per image). Smoke
    scale binds smaller ones (gin: `detector.*`). Heads are initialised from torch's global generator: seed it first.
    """
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    if arch not in ARCHS:
        raise ConfigError(f"detector.arch = {arch!r}{did_you_mean(arch, ARCHS)}")
    if norm not in NORMS:
        raise ConfigError(f"detector.norm = {norm!r}{did_you_mean(norm, NORMS)}")
    backbone = copy.deepcopy(backbone)
    if norm == "frozen":
        freeze_batchnorm(backbone)
    elif norm == "sync":
        backbone = nn.SyncBatchNorm.convert_sync_batchnorm(backbone)
    common = dict(min_size=test_scale, max_size=max_size, image_mean=backbone.mean.flatten().tolist(),
                  image_std=backbone.std.flatten().tolist(), rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
                  rpn_post_nms_top_n_train=rpn_post_nms_top_n_train, rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
                  rpn_post_nms_top_n_test=rpn_post_nms_top_n_test, box_batch_size_per_image=box_batch_size_per_image)
    if arch == "c4":
        trunk, head = C4Trunk(backbone), Res5Head(backbone)
        anchors = AnchorGenerator(sizes=(tuple(anchor_sizes),), aspect_ratios=(tuple(aspect_ratios),))
        return FasterRCNN(trunk, rpn_anchor_generator=anchors,
                          box_roi_pool=MultiScaleRoIAlign(["0"], output_size=roi_size, sampling_ratio=0), box_head=head,
                          box_predictor=FastRCNNPredictor(head.out_channels, num_classes + 1), **common)
    if len(anchor_sizes) != 5:
        raise ConfigError(f"detector.anchor_sizes = {tuple(anchor_sizes)}: the FPN needs one size per level "
                          "(res2, res3, res4, res5, pool), 5 in all")
    ordered = nn.Sequential(OrderedDict(conv1=backbone.conv1, bn1=backbone.bn1, relu=backbone.relu,
                                        maxpool=backbone.maxpool, layer1=backbone.layer1, layer2=backbone.layer2,
                                        layer3=backbone.layer3, layer4=backbone.layer4))
    stages = (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4)
    fpn = BackboneWithFPN(ordered, {f"layer{i}": str(i - 1) for i in range(1, 5)},
                          [_stage_channels(s) for s in stages], fpn_channels)
    anchors = AnchorGenerator(sizes=tuple((s,) for s in anchor_sizes), aspect_ratios=(tuple(aspect_ratios),) * 5)
    return FasterRCNN(fpn, num_classes=num_classes + 1, rpn_anchor_generator=anchors, **common)


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in `module` (in place) by torchvision's FrozenBatchNorm2d holding its running
    statistics and affine parameters as buffers (Detectron2's FrozenBN: y = (x - mean) / sqrt(var + eps) * w + b)."""
    from torchvision.ops import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for buffer in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, buffer).copy_(getattr(child, buffer).detach())
            setattr(module, name, frozen.to(child.running_mean.device))
        else:
            freeze_batchnorm(child)
    return module


def trunk_modules(model: nn.Module) -> dict[str, nn.Module]:
    """{"layer1".."layer4", "conv1", "bn1"}: the detector's modules that came from the backbone (for checks)."""
    body = model.backbone
    if isinstance(body, C4Trunk):
        return {"conv1": body.stem[0], "bn1": body.stem[1], "layer1": body.res2, "layer2": body.res3,
                "layer3": body.res4, "layer4": model.roi_heads.box_head.res5}
    return {name: getattr(body.body, name) for name in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")}


# ------------------------------------------------------------------------------------------------------ data
def load_image(path: Path) -> Tensor:
    """uint8 (3, H, W) RGB at the file's own size."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)


def _batch(annotations: Sequence[Annotation], idx: Sequence[int], flips: Sequence[bool], device: torch.device
           ) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    images, targets = [], []
    for i, flip in zip(idx, flips):
        a = annotations[i]
        image = load_image(a.path).to(device).float().div_(255)
        boxes = a.boxes.clone()
        if flip:
            image = image.flip(-1)
            boxes[:, [0, 2]] = image.shape[-1] - a.boxes[:, [2, 0]]
        images.append(image)
        targets.append({"boxes": boxes.to(device), "labels": (a.labels + 1).to(device)})
    return images, targets


# -------------------------------------------------------------------------------------------------- training
def lr_at(iteration: int, lr: float, warmup_iters: int, warmup_factor: float, steps: Sequence[int],
          gamma: float) -> float:
    """Detectron2's WarmupMultiStepLR: linear warm-up from lr * warmup_factor, then x gamma at each step."""
    factor = gamma ** sum(iteration >= s for s in steps)
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        factor *= warmup_factor * (1 - alpha) + alpha
    return lr * factor


def detector_key(source: dict, settings: dict) -> str:
    """sha256 (16 hex digits) of what a detector checkpoint was built from: `source` (the backbone's fingerprint,
    classes, datasets, detector settings) and the training `settings` that shape its weights."""
    text = json.dumps([source, settings], sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_detector(model: nn.Module, annotations: Sequence[Annotation], out_dir: str | Path, device: torch.device,
                   source: dict | None = None, *, iterations: int = 25000, batch_size: int = 16, lr: float = 0.003,
                   momentum: float = 0.9, weight_decay: float = 1e-4, warmup_iters: int = 1000,
                   warmup_factor: float = 1 / 3, steps: Sequence[int] = (17000,), gamma: float = 0.1,
                   scales: Sequence[int] = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800),
                   flip: bool = True, checkpoint_every: int = 1000, seed: int = 0) -> dict:
    """Fine-tune `model` (in place) on `annotations`, data parallel over the initialised process group if any.

    Resumes from `out_dir/checkpoints/last.pt` when its key (`detector_key(source, settings)`) is this call's; a
    checkpoint of another backbone or other settings is left to be overwritten by the new detector's first save.
    Defaults are the paper's VOC07+12 schedule for PIRL / NPID++ (supplementary B): 16 images per iteration over all
    ranks, lr 0.003 with a linear warm-up over 1,000 iterations from lr / 3, 25,000 iterations, x0.1 at 17,000,
    shorter side drawn from 480..800 (step 32), flips; SGD momentum 0.9, weight decay 1e-4 (Detectron2's).
    Returns {"iterations", "loss" (this rank's last), "wall_s", "resumed_from", "key", "world_size"}.
    """
    world = initialized_world()
    rank = dist.get_rank() if world > 1 else 0
    if batch_size % world:
        raise ConfigError(f"detection_train.batch_size = {batch_size}: not a multiple of the {world} processes "
                          f"(each takes batch_size / world_size images)")
    settings = dict(iterations=iterations, batch_size=batch_size, lr=lr, momentum=momentum,
                    weight_decay=weight_decay, warmup_iters=warmup_iters, warmup_factor=warmup_factor,
                    steps=list(steps), gamma=gamma, scales=list(scales), flip=flip, seed=seed)
    key = detector_key(source or {}, settings)
    ckpt_dir = Path(out_dir) / "checkpoints"
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    start, loss_value = 0, float("nan")
    if checkpoint.last(ckpt_dir) is not None:
        state = checkpoint.load(checkpoint.last(ckpt_dir), map_location=device, keys=("detector", "iteration"))
        if state.get("key") == key:  # a checkpoint without a key predates keys: another detector
            model.load_state_dict(state["detector"])
            optimizer.load_state_dict(state["optimizer"])
            start, loss_value = int(state["iteration"]), float(state["loss"])
        elif rank == 0:
            info(f"{ckpt_dir}: a detector of another backbone or other settings (key {state.get('key')}, this one "
                 f"{key}); training a new one")
    resumed_from = start
    net = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if world > 1 else model
    per_rank = batch_size // world
    model.train()
    began = time.perf_counter()
    with progress() as bar:
        task = bar.add_task("detection fine-tune", total=iterations, completed=start)
        for it in range(start, iterations):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + it)
            idx = torch.randperm(len(annotations), generator=gen)[:batch_size].tolist()
            flips = (torch.rand(len(idx), generator=gen) < 0.5).tolist() if flip else [False] * len(idx)
            scale = scales[int(torch.randint(len(scales), (1,), generator=gen))]
            mine = slice(rank * per_rank, (rank + 1) * per_rank)
            torch.manual_seed((seed * 1_000_003 + it) * 4096 + rank)  # torchvision's RPN and RoI samplers
            model.transform.min_size = (scale,)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(it, lr, warmup_iters, warmup_factor, steps, gamma)
            images, targets = _batch(annotations, idx[mine], flips[mine], device)
            losses = net(images, targets)
            loss = sum(losses.values())
            finite = torch.isfinite(loss.detach()).float().reshape(1)
            if world > 1:
                dist.all_reduce(finite, op=dist.ReduceOp.MIN)
            if not bool(finite):
                raise DetectionDiverged(f"detection fine-tune: loss {float(loss):.4g} at iteration {it} (lr "
                                        f"{optimizer.param_groups[0]['lr']:.4g}) on some rank; {ckpt_dir}/last.pt "
                                        f"keeps the last checkpoint before it")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_value = float(loss.detach())
            bar.advance(task)
            done = it + 1
            if rank == 0 and (done % checkpoint_every == 0 or done == iterations):
                checkpoint.save({"detector": model.state_dict(), "optimizer": optimizer.state_dict(),
                                 "iteration": done, "key": key, "loss": loss_value}, ckpt_dir)
    if world > 1:
        dist.barrier()  # rank 0's last checkpoint is on disk before anyone reads it
    return {"iterations": iterations, "loss": loss_value, "wall_s": time.perf_counter() - began,
            "resumed_from": resumed_from, "key": key, "world_size": world}


@torch.no_grad()
def detect(model: nn.Module, annotations: Sequence[Annotation], device: torch.device, test_scale: int,
           batch_size: int = 8) -> list[dict[str, Tensor]]:
    """The detector's output on every image (boxes in the image's own pixels, 0-based labels), in eval mode.

    With a process group, rank r detects images r, r + world, ... and the outputs are gathered on every rank."""
    world = initialized_world()
    rank = dist.get_rank() if world > 1 else 0
    was_training = model.training
    model.eval()
    model.transform.min_size = (test_scale,)
    mine = list(range(rank, len(annotations), world))
    out = []
    for i in range(0, len(mine), batch_size):
        images = [load_image(annotations[j].path).to(device).float().div_(255) for j in mine[i:i + batch_size]]
        out.extend(cpu_detections(o) for o in model(images))
    model.train(was_training)
    if world == 1:
        return out
    parts: list[list[dict[str, Tensor]]] = [[] for _ in range(world)]
    dist.all_gather_object(parts, out)
    return [parts[j % world][j // world] for j in range(len(annotations))]


def evaluate_detector(model: nn.Module, annotations: Sequence[Annotation], num_classes: int, device: torch.device,
                      test_scale: int, use_07_metric: bool = True) -> dict:
    """{"AP", "AP50", "AP75" (Detectron2's PascalVOCDetectionEvaluator: VOC07 11-point AP with `use_07_metric`),
    "coco_AP", "coco_AP50", "coco_AP75" (pycocotools)} in percent, and "per_class_ap50" [% or None]."""
    dets = detect(model, annotations, device, test_scale)
    return {**voc_detection_metrics(dets, annotations, num_classes, use_07_metric), **coco_ap(dets, annotations)}
