"""Detection metrics: COCO-style AP / AP50 / AP75 (pycocotools' COCOeval) and PASCAL VOC07's 11-point AP.

Inputs, per test image i: ground truth `Annotation`s (boxes (K, 4) xyxy continuous pixels, labels (K,), difficult
(K,)) and detections {"boxes": (D, 4), "scores": (D,), "labels": (D,)} in the same coordinates.

VOC07 (the devkit's VOCevaldet, as Detectron2's voc_eval with use_07_metric): per class, detections are sorted by
score; each is a true positive if its best-overlapping ground-truth box of that class in its image has IoU > 0.5,
is not difficult and was not matched before; a match to an already matched box (a duplicate) or an IoU <= 0.5 is a
false positive; a best match that is difficult counts as neither. Recall is over the non-difficult boxes. AP is the
mean over recall thresholds t in {0, 0.1, ..., 1} of the maximum precision at recall >= t (0 where none).

COCO: difficult boxes are `iscrowd` regions, so a detection on one is neither rewarded nor penalised, the closest
COCO has to VOC's rule. Metrics are in percent.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np
from torch import Tensor

from pirl_ablate.data.voc import Annotation


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box (4,) with boxes (K, 4), continuous coordinates."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=1)
    area = (box[2:] - box[:2]).prod()
    areas = (boxes[:, 2:] - boxes[:, :2]).prod(axis=1)
    return inter / (area + areas - inter)


def voc07_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """The 11-point interpolated AP (fraction in [0, 1]) of a precision/recall curve."""
    points = [precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in np.linspace(0, 1, 11)]
    return float(np.mean(points))


def voc07_class_ap(detections: Sequence[dict], truths: Sequence[Annotation], label: int,
                   iou_threshold: float = 0.5) -> float | None:
    """VOC07 AP (fraction) of class `label`; None when the class has no non-difficult ground truth."""
    gt = [(a.boxes[a.labels == label].numpy(), a.difficult[a.labels == label].numpy()) for a in truths]
    npos = int(sum((~d).sum() for _, d in gt))
    if npos == 0:
        return None
    dets = [(float(s), i, b.numpy()) for i, d in enumerate(detections)
            for b, s, lab in zip(d["boxes"], d["scores"], d["labels"]) if int(lab) == label]
    dets.sort(key=lambda x: -x[0])
    matched = [np.zeros(len(b), dtype=bool) for b, _ in gt]
    tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
    for j, (_, i, box) in enumerate(dets):
        boxes, difficult = gt[i]
        if len(boxes) == 0:
            fp[j] = 1
            continue
        overlaps = _iou(box, boxes)
        best = int(overlaps.argmax())
        if overlaps[best] > iou_threshold:
            if difficult[best]:
                continue
            if matched[i][best]:
                fp[j] = 1
            else:
                tp[j] = matched[i][best] = 1
        else:
            fp[j] = 1
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / npos
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc07_ap(recall, precision)


def voc07_map(detections: Sequence[dict], truths: Sequence[Annotation], num_classes: int) -> dict:
    """{"mAP50": VOC07 11-point mAP over the classes that have ground truth (%), "per_class": [% or None]}."""
    per_class = [voc07_class_ap(detections, truths, c) for c in range(num_classes)]
    present = [ap for ap in per_class if ap is not None]
    return {"mAP50": 100.0 * float(np.mean(present)) if present else 0.0,
            "per_class": [None if ap is None else 100.0 * ap for ap in per_class]}


def coco_ap(detections: Sequence[dict], truths: Sequence[Annotation]) -> dict[str, float]:
    """{"AP", "AP50", "AP75"} in percent from pycocotools' COCOeval (bbox), difficult boxes as iscrowd."""
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
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
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
    return {"AP": 100.0 * max(float(stats[0]), 0.0), "AP50": 100.0 * max(float(stats[1]), 0.0),
            "AP75": 100.0 * max(float(stats[2]), 0.0)}


def cpu_detections(output: dict[str, Tensor]) -> dict[str, Tensor]:
    """A torchvision detector's output for one image, on the CPU (boxes (D, 4), scores (D,), labels (D,) 0-based)."""
    return {"boxes": output["boxes"].detach().cpu().float(), "scores": output["scores"].detach().cpu().float(),
            "labels": (output["labels"].detach().cpu() - 1).long()}

