"""The `detection` protocol: fine-tune Faster R-CNN from a run's backbone on VOC, score it on VOC07 test.

    pirl-ablate eval RUN --protocol detection --gin gin/transfer/voc0712_c4.gin --bind "detection_eval.root='/data'"
    pirl-ablate eval RUN --protocol detection --gin gin/transfer/voc07_c4.gin  ...     # paper Table 6
    pirl-ablate eval RUN --protocol detection --gin gin/transfer/smoke_c4.gin          # a synthetic VOCdevkit, CPU

The detector trains in `RUN/detection/<name>/` (checkpoints there; a killed evaluation resumes from the last one)
and its result lands in `RUN/evals/detection-<name>.json`: metrics {arch: {"AP", "AP50", "AP75" (COCO-style,
pycocotools), "mAP50_voc07" (11-point)}}, per-class VOC07 AP, the training summary and the bindings used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import gin

from pirl_ablate.data.voc import VOC_CLASSES, read_voc, write_synthetic_voc
from pirl_ablate.errors import DataError
from pirl_ablate.evaluate.detection import build_detector, evaluate_detector, train_detector

if TYPE_CHECKING:
    from pirl_ablate.evaluate.protocols import EvalContext


@gin.configurable("detection_eval", denylist=["ctx"])
def detection_protocol(ctx: EvalContext, name: str = "voc0712", root: str | None = None,
                       train_sets: Sequence[Sequence[str]] = (("2007", "trainval"), ("2012", "trainval")),
                       test_set: Sequence[str] = ("2007", "test"), classes: Sequence[str] = VOC_CLASSES,
                       synthetic: bool = False) -> dict:
    """Train on `train_sets` ((year, image set) pairs under `root`/VOCdevkit), test on `test_set`.

    synthetic: write (once) and use the synthetic VOCdevkit of `pirl_ablate.data.voc.write_synthetic_voc` under
    `RUN/detection/<name>/voc` instead of `root` (gin `synthetic_voc.*` sets its size and classes).
    """
    out_dir = ctx.run.path / "detection" / name
    classes = tuple(classes)
    if synthetic:
        root = str(out_dir / "voc")
        if not (Path(root) / "VOCdevkit").is_dir():
            write_synthetic_voc(root, classes=classes, years=tuple(sorted({y for y, _ in train_sets})))
    if root is None:
        raise DataError("detection: bind detection_eval.root to the folder holding VOCdevkit/ "
                        "(or detection_eval.synthetic = True for the synthetic smoke set)")
    train = [a for year, image_set in train_sets for a in read_voc(root, year, image_set, classes)]
    test = read_voc(root, test_set[0], test_set[1], classes)
    model = build_detector(ctx.net.backbone, len(classes))
    arch = gin.get_bindings("detector").get("arch", "c4")
    test_scale = model.transform.min_size[0]
    training = train_detector(model, train, out_dir, ctx.device)
    metrics = evaluate_detector(model, test, len(classes), ctx.device, test_scale)
    per_class = metrics.pop("per_class_ap50_voc07")
    return {"dataset": name, "metrics": {arch: metrics}, "per_class_ap50_voc07": per_class,
            "classes": list(classes), "num_train": len(train), "num_test": len(test), "training": training,
            "hyperparameters": {"detector": gin.get_bindings("detector"),
                                "detection_train": gin.get_bindings("detection_train")}}
