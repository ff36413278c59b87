"""VOC07 11-point AP and COCO-style AP on fixed detections against hand-computed answers."""

from __future__ import annotations

import pytest
import torch

from pirl_ablate.data.voc import Annotation
from pirl_ablate.evaluate.detection_metrics import coco_ap, voc07_ap, voc07_class_ap, voc07_map


def ann(boxes, labels, difficult) -> Annotation:
    return Annotation(path=None, boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                      labels=torch.tensor(labels, dtype=torch.long), difficult=torch.tensor(difficult),
                      width=100, height=100)


def dets(boxes, scores, labels) -> dict:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels, dtype=torch.long)}


def test_eleven_point_interpolation_by_hand():
    # precision 1 up to recall 0.2, 0.5 up to 0.4, nothing beyond: (3 * 1 + 2 * 0.5 + 6 * 0) / 11
    assert voc07_ap(torch.tensor([0.2, 0.4]).numpy(), torch.tensor([1.0, 0.5]).numpy()) == pytest.approx(4 / 11)


def test_voc07_ap_with_a_duplicate_a_difficult_box_and_a_miss():
    truths = [ann([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0], [False, True]), ann([[0, 0, 10, 10]], [0], [False])]
    detections = [dets([[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [0, 0, 0]),
                  dets([[50, 50, 60, 60], [0, 0, 10, 10]], [0.6, 0.5], [0, 0])]
    # by score: TP, duplicate (FP), on the difficult box (ignored), miss (FP), TP; 2 non-difficult boxes
    # recall .5 .5 .5 .5 1, precision 1 .5 .5 1/3 .5: 11-point = (6 * 1 + 5 * 0.5) / 11
    assert voc07_class_ap(detections, truths, 0) == pytest.approx(8.5 / 11)
    assert voc07_class_ap(detections, truths, 1) is None  # no ground truth of class 1
    result = voc07_map(detections, truths, 2)
    assert result["mAP50"] == pytest.approx(100 * 8.5 / 11) and result["per_class"][1] is None


def test_voc07_iou_threshold_is_strictly_above_half():
    truths = [ann([[0, 0, 10, 10]], [0], [False])]
    # IoU of [0,0,10,5] with [0,0,10,10] is exactly 0.5: not a match; [0,0,10,6] has 0.6: a match
    assert voc07_class_ap([dets([[0, 0, 10, 5]], [0.9], [0])], truths, 0) == 0.0
    assert voc07_class_ap([dets([[0, 0, 10, 6]], [0.9], [0])], truths, 0) == pytest.approx(1.0)


def test_coco_ap_perfect_and_iou_0_58_detections():
    truths = [ann([[0, 0, 40, 40], [50, 50, 90, 80]], [0, 1], [False, False]), ann([[10, 10, 60, 60]], [0], [False])]
    perfect = [dets(t.boxes.tolist(), [0.9] * len(t.labels), t.labels.tolist()) for t in truths]
    assert coco_ap(perfect, truths) == pytest.approx({"AP": 100.0, "AP50": 100.0, "AP75": 100.0})
    # every box cut to 58% of its height: IoU 0.58, a match at thresholds 0.5 and 0.55 (COCO: IoU >= t) only
    cut = [dets([[x0, y0, x1, y0 + 0.58 * (y1 - y0)] for x0, y0, x1, y1 in t.boxes.tolist()],
                [0.9] * len(t.labels), t.labels.tolist()) for t in truths]
    result = coco_ap(cut, truths)
    assert result["AP50"] == pytest.approx(100.0) and result["AP75"] == 0.0
    assert result["AP"] == pytest.approx(100.0 * 2 / 10)  # 2 of the 10 thresholds 0.5:0.05:0.95


def test_coco_ap_ignores_detections_on_difficult_boxes():
    truths = [ann([[0, 0, 40, 40], [50, 50, 90, 90]], [0, 0], [False, True])]
    with_difficult = [dets([[0, 0, 40, 40], [50, 50, 90, 90]], [0.9, 0.95], [0, 0])]
    assert coco_ap(with_difficult, truths)["AP50"] == pytest.approx(100.0)
