"""The `detection` protocol: fine-tune Faster R-CNN from a run's backbone on VOC, score it on VOC07 test.

    pirl-ablate eval RUN --protocol detection --gin gin/transfer/voc0712_c4.gin --bind "detection_eval.root='/data'"
    torchrun --no-python --nproc_per_node 8 pirl-ablate eval RUN --protocol detection --gin ...   # data parallel
    pirl-ablate eval RUN --protocol detection --gin gin/transfer/voc07_c4.gin  ...     # paper Table 6
    pirl-ablate eval RUN --protocol detection --gin gin/transfer/smoke_c4.gin          # a synthetic VOCdevkit, CPU

Under a launcher that sets RANK / WORLD_SIZE (torchrun, also inside a SLURM allocation) `pirl-ablate eval` sets up
the process group (`pirl_ablate.distributed.setup`) and every rank trains its share of each batch and detects its
share of the test images; without a process group (one process, or a sweep job's evaluation on its rank 0) one
process does it all. The learning rate and warm-up follow the run's method (`detection_eval.per_method`, the
paper's two regimes) unless `detection_train.*` binds them. The detector
trains in `RUN/detection/<name>/` (checkpoints there; a killed evaluation resumes from the last one, a run that
trained further or other settings start a new detector) and its result lands in `RUN/evals/detection-<name>.json`:
metrics {arch: {"AP", "AP50", "AP75" (Detectron2's PascalVOCDetectionEvaluator), "coco_AP", "coco_AP50",
"coco_AP75" (pycocotools)}}, per-class AP50, the training summary and the settings used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from pirl_ablate.data.voc import VOC_CLASSES, read_voc, write_synthetic_voc
from pirl_ablate.distributed import initialized_world
from pirl_ablate.errors import ConfigError, DataError
from pirl_ablate.evaluate.context import EvalContext
from pirl_ablate.evaluate.detection import build_detector, evaluate_detector, train_detector
from pirl_ablate.evaluate.features import fingerprint
from pirl_ablate.evaluate.registry import register_protocol

# Paper supplementary B: PIRL and NPID++ fine-tune with lr 0.003 and a linear warm-up over 1,000 iterations from
# lr / 3; supervised and Jigsaw with lr 0.02 over 100 iterations (the paper gives no start factor for these:
# Detectron2's default WARMUP_FACTOR 0.001). Methods the paper does not fine-tune take the regime of their family:
# NPID (and the random-init baseline, an NPID run of 0 epochs) PIRL's; Rotation, Jigsaw's; MoCo v2 its own paper's
# (lr 0.02, Detectron2's warm-up).
PAPER_PER_METHOD = {
    "pirl": {"lr": 0.003, "warmup_iters": 1000, "warmup_factor": 1 / 3},
    "npid": {"lr": 0.003, "warmup_iters": 1000, "warmup_factor": 1 / 3},
    "supervised": {"lr": 0.02, "warmup_iters": 100, "warmup_factor": 0.001},
    "jigsaw": {"lr": 0.02, "warmup_iters": 100, "warmup_factor": 0.001},
    "rotation": {"lr": 0.02, "warmup_iters": 100, "warmup_factor": 0.001},
    "moco_v2": {"lr": 0.02, "warmup_iters": 100, "warmup_factor": 0.001},
}


def method_settings(method: str, per_method: Mapping[str, Mapping[str, float]],
                    bound: Mapping[str, Any]) -> dict:
    """The `detection_train` values of `method` from `per_method`, less those `bound` explicitly (the configured
    `detection_train.*`: a sweep's `detection_train.lr` wins over the method's)."""
    if method not in per_method:
        raise ConfigError(f"detection_eval.per_method has no entry for the run's method `{method}` (entries: "
                          f"{', '.join(sorted(per_method))}); add one or bind detection_train.lr / warmup_iters / "
                          f"warmup_factor")
    return {k: v for k, v in per_method[method].items() if k not in bound}


@register_protocol("detection", gin_name="detection_eval", data_parallel=True)
def detection_protocol(ctx: EvalContext, name: str = "voc0712", root: str | None = None,
                       train_sets: Sequence[Sequence[str]] = (("2007", "trainval"), ("2012", "trainval")),
                       test_set: Sequence[str] = ("2007", "test"), classes: Sequence[str] = VOC_CLASSES,
                       synthetic: bool = False, per_method: Mapping[str, Mapping[str, float]] = PAPER_PER_METHOD,
                       seed: int = 0) -> dict:
    """Train on `train_sets` ((year, image set) pairs under `root`/VOCdevkit), test on `test_set` (VOC07 11-point AP
    for VOC2007, the area under the curve for later years, as Detectron2).

    synthetic: write (once) and use the synthetic VOCdevkit of `pirl_ablate.data.voc.write_synthetic_voc` under
    `RUN/detection/<name>/voc` instead of `root` (gin `synthetic_voc.*` sets its size and classes).
    per_method: {method: {detection_train argument: value}} for the run's method (its checkpoint record).
    seed: seeds torch's generator before the detector's new heads are created and every draw of the fine-tuning.
    """
    world = initialized_world()
    configuration = ctx.configuration
    device = ctx.device
    if device.type == "cuda" and device.index is None:  # DDP names its device: the one the launcher set
        device = torch.device("cuda", torch.cuda.current_device())
    out_dir = ctx.run.path / "detection" / name
    classes = tuple(classes)
    if synthetic:
        root = str(out_dir / "voc")
        if (world == 1 or dist.get_rank() == 0) and not (Path(root) / "VOCdevkit").is_dir():
            years = tuple(sorted({y for y, _ in train_sets}))
            configuration.bind("synthetic_voc", write_synthetic_voc)(root, classes=classes, years=years)
        if world > 1:
            dist.barrier()
    if root is None:
        raise DataError("detection: bind detection_eval.root to the folder holding VOCdevkit/ "
                        "(or detection_eval.synthetic = True for the synthetic smoke set)")
    train = [a for year, image_set in train_sets for a in read_voc(root, year, image_set, classes)]
    test = read_voc(root, test_set[0], test_set[1], classes)
    method = ctx.record["method"]["name"]
    training_bound = configuration.values("detection_train")
    regime = method_settings(method, per_method, training_bound)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = configuration.bind("detector", build_detector)(ctx.net.backbone, len(classes))
    detector = configuration.settings("detector", build_detector)
    test_scale = model.transform.min_size[0]
    source = {"backbone": fingerprint(ctx.net.backbone), "classes": list(classes),  # the detector checkpoint's key
              "train_sets": [list(s) for s in train_sets], "detector": configuration.values("detector")}
    training = configuration.bind("detection_train", train_detector)(model, train, out_dir, device, source, seed=seed,
                                                                      **regime)
    metrics = evaluate_detector(model, test, len(classes), device, test_scale,
                                use_07_metric=str(test_set[0]) == "2007")
    per_class = metrics.pop("per_class_ap50")
    return {"dataset": name, "metrics": {detector["arch"]: metrics}, "per_class_ap50": per_class, "method": method,
            "classes": list(classes), "num_train": len(train), "num_test": len(test), "training": training,
            "hyperparameters": {
                "detection_eval": {"name": name, "train_sets": [list(s) for s in train_sets],
                                   "test_set": list(test_set), "synthetic": synthetic, "seed": seed},
                **({"synthetic_voc": configuration.settings("synthetic_voc", write_synthetic_voc)} if synthetic
                   else {}),
                "detector": detector,
                "detection_train": {**configuration.settings("detection_train", train_detector), **regime,
                                    "seed": seed}}}
