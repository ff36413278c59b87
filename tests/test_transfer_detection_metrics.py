"""VOC AP as Detectron2's PascalVOCDetectionEvaluator computes it, and COCO-style AP, on fixed detections against
hand-computed answers and a float64 reference written here from the evaluator's rule."""

from __future__ import annotations

import pytest
import torch

from pirl_ablate.data.voc import Annotation
from pirl_ablate.evaluate.detection_metrics import coco_ap, voc_ap, voc_class_ap, voc_detection_metrics


def ann(boxes, labels, difficult) -> Annotation:
    """Boxes in continuous coordinates, as read_voc gives them: VOC's 1-based (xmin, ymin) minus 1."""
    return Annotation(path=None, boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                      labels=torch.tensor(labels, dtype=torch.long), difficult=torch.tensor(difficult),
                      width=100, height=100)


def dets(boxes, scores, labels) -> dict:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels, dtype=torch.long)}


def reference_ap(detections, truths, label, threshold, eleven_point=True):
    """The evaluator's rule in plain float64 Python: scores to 3 decimals, boxes to 0.1 px in VOC's 1-based
    inclusive pixels, a stable sort by score, IoU > threshold, difficult boxes neither TP nor FP, duplicates FP."""
    gt = []
    for a in truths:
        rows = [(b, bool(h)) for b, c, h in zip(a.boxes.tolist(), a.labels.tolist(), a.difficult.tolist())
                if c == label]
        gt.append([([b[0] + 1, b[1] + 1, b[2], b[3]], h) for b, h in rows])
    npos = sum(not h for boxes in gt for _, h in boxes)
    flat = [(round(s, 3), i, [round(b[0] + 1, 1), round(b[1] + 1, 1), round(b[2], 1), round(b[3], 1)])
            for i, d in enumerate(detections)
            for b, s, c in zip(d["boxes"].tolist(), d["scores"].tolist(), d["labels"].tolist()) if c == label]
    flat = sorted(flat, key=lambda x: -x[0])  # Python's sort is stable
    used = [[False] * len(g) for g in gt]
    tp = fp = 0
    curve = []
    for _, i, b in flat:
        best, best_j = -1.0, -1
        for j, (g, _) in enumerate(gt[i]):
            iw = max(min(g[2], b[2]) - max(g[0], b[0]) + 1, 0.0)
            ih = max(min(g[3], b[3]) - max(g[1], b[1]) + 1, 0.0)
            union = (b[2] - b[0] + 1) * (b[3] - b[1] + 1) + (g[2] - g[0] + 1) * (g[3] - g[1] + 1) - iw * ih
            if iw * ih / union > best:
                best, best_j = iw * ih / union, j
        if best > threshold:
            if gt[i][best_j][1]:
                pass
            elif used[i][best_j]:
                fp += 1
            else:
                tp, used[i][best_j] = tp + 1, True
        else:
            fp += 1
        curve.append((tp / npos, tp / max(tp + fp, 1e-300)))
    if eleven_point:
        return sum(max([p for r, p in curve if r >= t / 10], default=0.0) for t in range(11)) / 11
    ap, previous = 0.0, 0.0
    for r in sorted({r for r, _ in curve}):
        ap += (r - previous) * max(p for rr, p in curve if rr >= r)
        previous = r
    return ap


def test_eleven_point_and_area_interpolation_by_hand():
    # precision 1 up to recall 0.2, 0.5 up to 0.4, nothing beyond: (3 * 1 + 2 * 0.5 + 6 * 0) / 11
    assert voc_ap(torch.tensor([0.2, 0.4]).double().numpy(), torch.tensor([1.0, 0.5]).double().numpy()) \
        == pytest.approx(4 / 11)
    # recall .5 .5 1 at precision 1 .5 2/3: the envelope is 1 up to recall .5, 2/3 up to 1 -> .5 + .5 * 2/3
    recall, precision = torch.tensor([0.5, 0.5, 1.0]).double().numpy(), torch.tensor([1, 0.5, 2 / 3]).double().numpy()
    assert voc_ap(recall, precision, use_07_metric=False) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_voc_ap_with_a_duplicate_a_difficult_box_and_a_miss():
    truths = [ann([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0], [False, True]), ann([[0, 0, 10, 10]], [0], [False])]
    detections = [dets([[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [0, 0, 0]),
                  dets([[50, 50, 60, 60], [0, 0, 10, 10]], [0.6, 0.5], [0, 0])]
    # by score: TP, duplicate (FP), on the difficult box (ignored), miss (FP), TP; 2 non-difficult boxes
    # recall .5 .5 .5 .5 1, precision 1 .5 .5 1/3 .5: 11-point = (6 * 1 + 5 * 0.5) / 11
    assert voc_class_ap(detections, truths, 0) == pytest.approx(8.5 / 11)
    assert voc_class_ap(detections, truths, 1) is None  # no ground truth of class 1
    # Detectron2 averages a class without ground truth in as 0
    assert voc_detection_metrics(detections, truths, 2)["AP50"] == pytest.approx(100 * 8.5 / 11 / 2)


def test_iou_counts_pixels_inclusively_and_is_strictly_above_the_threshold():
    truths = [ann([[0, 0, 10, 10]], [0], [False])]  # VOC pixels 1..10 x 1..10
    # pixels 1..10 x 1..5: IoU exactly 0.5, not a match; 1..10 x 1..6: 0.6, a match
    assert voc_class_ap([dets([[0, 0, 10, 5]], [0.9], [0])], truths, 0) == 0.0
    assert voc_class_ap([dets([[0, 0, 10, 6]], [0.9], [0])], truths, 0) == pytest.approx(1.0)


def test_ap_averages_the_ten_iou_thresholds():
    truths = [ann([[0, 0, 100, 100]], [0], [False])]
    # IoU 0.72: a true positive at 0.50, 0.55, 0.60, 0.65, 0.70 and a false positive at 0.75 ... 0.95
    result = voc_detection_metrics([dets([[0, 0, 100, 72]], [0.9], [0])], truths, 1)
    assert result["AP50"] == pytest.approx(100.0) and result["AP75"] == 0.0 and result["AP"] == pytest.approx(50.0)
    assert result["per_class_ap50"] == [pytest.approx(100.0)]


def test_scores_tied_at_three_decimals_keep_image_order():
    truths = [ann([[0, 0, 10, 10]], [0], [False]), ann([[0, 0, 10, 10]], [0], [False])]
    # image 0: a hit at 0.9001; image 1: a miss at 0.9004 and a hit at 0.5. Both first scores are written as
    # 0.900: the hit (image 0) ranks first, recall .5 .5 1 at precision 1 .5 2/3 -> (6 + 5 * 2/3) / 11
    # (by the unrounded scores the miss would rank first: (11 * 2/3) / 11)
    detections = [dets([[0, 0, 10, 10]], [0.9001], [0]),
                  dets([[50, 50, 60, 60], [0, 0, 10, 10]], [0.9004, 0.5], [0, 0])]
    assert voc_class_ap(detections, truths, 0) == pytest.approx((6 + 5 * 2 / 3) / 11)


@pytest.mark.parametrize("eleven_point", [True, False])
def test_voc_ap_equals_the_float64_reference_on_random_detections(eleven_point):
    gen = torch.Generator().manual_seed(0)
    truths, detections = [], []
    for _ in range(12):
        k = int(torch.randint(1, 4, (1,), generator=gen))
        xy = torch.randint(0, 60, (k, 2), generator=gen).float()
        wh = torch.randint(8, 40, (k, 2), generator=gen).float()
        truths.append(ann(torch.cat([xy, xy + wh], 1).tolist(), torch.randint(3, (k,), generator=gen).tolist(),
                          (torch.rand(k, generator=gen) < 0.2).tolist()))
        d = int(torch.randint(0, 6, (1,), generator=gen))
        jitter = torch.randint(-6, 7, (d, 4), generator=gen).float() / 2  # half pixels: exact in text
        src = torch.cat([xy, xy + wh], 1)[torch.randint(k, (d,), generator=gen)]
        scores = (torch.randint(0, 40, (d,), generator=gen).float() / 40).tolist()  # many ties
        detections.append(dets((src + jitter).tolist(), scores, torch.randint(3, (d,), generator=gen).tolist()))
    seen = set()
    for label in range(3):
        for t in (0.5, 0.65, 0.75, 0.9):
            ours = voc_class_ap(detections, truths, label, t, use_07_metric=eleven_point)
            assert ours == pytest.approx(reference_ap(detections, truths, label, t, eleven_point), abs=1e-12)
            seen.add(round(ours, 6))
    assert len(seen) > 6  # the detections span many APs, not all 0 or 1


def test_coco_ap_perfect_and_iou_0_58_detections():
    truths = [ann([[0, 0, 40, 40], [50, 50, 90, 80]], [0, 1], [False, False]), ann([[10, 10, 60, 60]], [0], [False])]
    perfect = [dets(t.boxes.tolist(), [0.9] * len(t.labels), t.labels.tolist()) for t in truths]
    assert coco_ap(perfect, truths) == pytest.approx({"coco_AP": 100.0, "coco_AP50": 100.0, "coco_AP75": 100.0})
    # every box cut to 58% of its height: IoU 0.58, a match at thresholds 0.5 and 0.55 (COCO: IoU >= t) only
    cut = [dets([[x0, y0, x1, y0 + 0.58 * (y1 - y0)] for x0, y0, x1, y1 in t.boxes.tolist()],
                [0.9] * len(t.labels), t.labels.tolist()) for t in truths]
    result = coco_ap(cut, truths)
    assert result["coco_AP50"] == pytest.approx(100.0) and result["coco_AP75"] == 0.0
    assert result["coco_AP"] == pytest.approx(100.0 * 2 / 10)  # 2 of the 10 thresholds 0.5:0.05:0.95


def test_coco_ap_ignores_detections_on_difficult_boxes():
    truths = [ann([[0, 0, 40, 40], [50, 50, 90, 90]], [0, 0], [False, True])]
    with_difficult = [dets([[0, 0, 40, 40], [50, 50, 90, 90]], [0.9, 0.95], [0, 0])]
    assert coco_ap(with_difficult, truths)["coco_AP50"] == pytest.approx(100.0)
