"""Detection metrics: PASCAL VOC AP as Detectron2's `PascalVOCDetectionEvaluator` computes it (the paper's Tables 1
and 6), and pycocotools' COCO-style AP kept beside it under `coco_*` names.

Inputs, per test image i: ground truth `Annotation`s (boxes (K, 4) xyxy continuous pixels, labels (K,), difficult
(K,)) and detections {"boxes": (D, 4), "scores": (D,), "labels": (D,)} in the same coordinates.

The VOC rule (Detectron2's detectron2/evaluation/pascal_voc_evaluation.py, after py-faster-rcnn's voc_eval):
- each detection is written as text, `{score:.3f} {xmin + 1:.1f} {ymin + 1:.1f} {xmax:.1f} {ymax:.1f}`, and read
  back: scores are rounded to 3 decimals and boxes to 0.1 px in VOC's 1-based inclusive pixel convention; ground
  truth keeps VOC's integer corners. IoU counts pixels inclusively (width = xmax - xmin + 1);
- per class, detections are sorted by descending score (ties, frequent after the rounding, keep image order, then
  the detector's order within an image: a stable sort, which is what Detectron2's `np.argsort(-score)` does for
  small tie groups; for large ones its order is numpy's implementation detail);
- down that list, a detection whose best-overlapping ground-truth box of its class in its image has IoU > t is a
  true positive if that box is not difficult and not matched yet, a false positive if it was matched (a duplicate),
  and neither if the box is difficult; IoU <= t (or no box of the class) is a false positive;
- recall is over the non-difficult boxes; AP at t is VOC07's 11-point interpolation (mean over recall r in {0, 0.1,
  ..., 1} of the highest precision at recall >= r, 0 where none) for VOC2007 test, the area under the precision
  envelope for later years;
- AP50 and AP75 are the mean over classes at t = 0.5 and 0.75, AP the mean of the ten class means at t = 0.50,
  0.55, ..., 0.95. A class without a non-difficult box gets AP 0 in those means, as in Detectron2 (where 0/0 recall
  compares false everywhere); its per-class entry is None here.

COCO (pycocotools' COCOeval, 101-point interpolation, IoU >= t): difficult boxes are `iscrowd` regions, so a
detection on one is neither rewarded nor penalised. Metrics are in percent.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np
from torch import Tensor

from pirl_ablate.data.voc import Annotation

IOU_THRESHOLDS = tuple(t / 100 for t in range(50, 100, 5))  # Detectron2: range(50, 100, 5)


def voc_text_round(detections: Sequence[dict], label: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class `label`'s detections as Detectron2 writes and reads them: (image index (D,), score (D,) rounded to
    3 decimals, box (D, 4) 1-based inclusive rounded to 0.1), in image order and the detector's order within one."""
    images, scores, boxes = [], [], []
    for i, d in enumerate(detections):
        keep = d["labels"] == label
        for box, score in zip(d["boxes"][keep].numpy().astype(np.float32), d["scores"][keep].tolist()):
            x0, y0, x1, y1 = box
            images.append(i)
            scores.append(float(f"{score:.3f}"))
            boxes.append([float(f"{x0 + np.float32(1):.1f}"), float(f"{y0 + np.float32(1):.1f}"),
                          float(f"{x1:.1f}"), float(f"{y1:.1f}")])
    return np.array(images, dtype=np.int64), np.array(scores, dtype=np.float64), np.array(boxes).reshape(-1, 4)


def _inclusive_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU (K,) of one 1-based inclusive box (4,) with boxes (K, 4): VOC's pixel-counting rule (+1 on each side)."""
    iw = np.maximum(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]) + 1.0, 0.0)
    inter = iw * ih
    union = ((box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
             + (boxes[:, 2] - boxes[:, 0] + 1.0) * (boxes[:, 3] - boxes[:, 1] + 1.0) - inter)
    return inter / union


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """AP (fraction) of a precision/recall curve: VOC07's 11-point interpolation, or the area under the precision
    envelope (VOC2010+)."""
    if use_07_metric:
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                              for t in np.linspace(0, 1, 11)]))
    r = np.concatenate(([0.0], recall, [1.0]))
    p = np.maximum.accumulate(np.concatenate(([0.0], precision, [0.0]))[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def voc_class_ap(detections: Sequence[dict], truths: Sequence[Annotation], label: int, iou_threshold: float = 0.5,
                 use_07_metric: bool = True) -> float | None:
    """VOC AP (fraction) of class `label` at IoU > `iou_threshold`; None when the class has no non-difficult box."""
    gt = [((a.boxes[a.labels == label].double().numpy() + [1.0, 1.0, 0.0, 0.0]).round(),
           a.difficult[a.labels == label].numpy()) for a in truths]  # VOC's integer 1-based corners
    npos = int(sum((~hard).sum() for _, hard in gt))
    if npos == 0:
        return None
    images, scores, boxes = voc_text_round(detections, label)
    order = np.argsort(-scores, kind="stable")
    matched = [np.zeros(len(b), dtype=bool) for b, _ in gt]
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for j, k in enumerate(order):
        truth, hard = gt[images[k]]
        overlaps = _inclusive_iou(boxes[k], truth) if len(truth) else np.zeros(0)
        if len(overlaps) == 0 or overlaps.max() <= iou_threshold:
            fp[j] = 1
            continue
        best = int(overlaps.argmax())
        if hard[best]:
            continue
        if matched[images[k]][best]:
            fp[j] = 1
        else:
            tp[j] = matched[images[k]][best] = 1
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    return voc_ap(tp / npos, tp / np.maximum(tp + fp, np.finfo(np.float64).eps), use_07_metric)


def voc_detection_metrics(detections: Sequence[dict], truths: Sequence[Annotation], num_classes: int,
                          use_07_metric: bool = True) -> dict:
    """{"AP", "AP50", "AP75"} (%, Detectron2's PascalVOCDetectionEvaluator) and "per_class_ap50" [% or None]."""
    per_iou = {t: [voc_class_ap(detections, truths, c, t, use_07_metric) for c in range(num_classes)]
               for t in IOU_THRESHOLDS}
    means = {t: 100.0 * float(np.mean([ap or 0.0 for ap in aps])) for t, aps in per_iou.items()}
    return {"AP": float(np.mean(list(means.values()))), "AP50": means[0.5], "AP75": means[0.75],
            "per_class_ap50": [None if ap is None else 100.0 * ap for ap in per_iou[0.5]]}


def coco_ap(detections: Sequence[dict], truths: Sequence[Annotation]) -> dict[str, float]:
    """{"coco_AP", "coco_AP50", "coco_AP75"} in percent from pycocotools' COCOeval (bbox), difficult boxes as
    iscrowd."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    labels = set()
    for i, (a, d) in enumerate(zip(truths, detections)):
        images.append({"id": i, "width": a.width, "height": a.height})
        for box, lab, hard in zip(a.boxes.tolist(), a.labels.tolist(), a.difficult.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": lab + 1,
                                "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": int(hard)})
            labels.add(lab)
        for box, score, lab in zip(d["boxes"].tolist(), d["scores"].tolist(), d["labels"].tolist()):
            results.append({"image_id": i, "category_id": int(lab) + 1, "score": score,
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    if not results:
        return {"coco_AP": 0.0, "coco_AP50": 0.0, "coco_AP75": 0.0}
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": c + 1} for c in sorted(labels | {int(r["category_id"]) - 1 for r in results})]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = evaluation.stats
    return {"coco_AP": 100.0 * max(float(stats[0]), 0.0), "coco_AP50": 100.0 * max(float(stats[1]), 0.0),
            "coco_AP75": 100.0 * max(float(stats[2]), 0.0)}


def cpu_detections(output: dict[str, Tensor]) -> dict[str, Tensor]:
    """A torchvision detector's output for one image, on the CPU (boxes (D, 4), scores (D,), labels (D,) 0-based)."""
    return {"boxes": output["boxes"].detach().cpu().float(), "scores": output["scores"].detach().cpu().float(),
            "labels": (output["labels"].detach().cpu() - 1).long()}
