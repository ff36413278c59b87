"""The paper's published numbers (Misra & van der Maaten, CVPR 2020), ImageNet-scale: ResNet-50, 800 epochs
(ablations 400), 32k negatives. Transcribed from /work/shared/reference/paper-facts.md; None = not reported.

They are shown beside our results, always labelled `PAPER_LABEL`, never mixed into our rows or best marks.
"""

from __future__ import annotations

PAPER_LABEL = "paper (ImageNet-scale)"

# Table 1 (VOC07+12) / Table 6 (VOC07 only): Faster R-CNN R50-C4 detection, VOC07 test, AP_all / AP50 / AP75.
DETECTION_METRICS = ("AP", "AP50", "AP75")
TABLE1: dict[str, tuple[float, ...]] = {
    "supervised": (52.6, 81.1, 57.4),
    "Jigsaw": (48.9, 75.1, 52.9),
    "NPID++": (52.3, 79.1, 56.9),
    "PIRL": (54.0, 80.7, 59.7),
}
TABLE6: dict[str, tuple[float, ...]] = {
    "supervised": (43.8, 74.5, 45.9),
    "Jigsaw": (37.7, 64.9, 38.0),
    "PIRL": (44.7, 73.4, 47.0),
}

# Table 2 / Table 5: linear classification top-1 (VOC07: mAP of linear SVMs), res5 features.
LINEAR_DATASETS = ("ImageNet", "VOC07", "Places205", "iNat")

TABLE2: dict[str, tuple[float | None, ...]] = {
    "NPID": (54.0, None, 45.5, None),
    "NPID++": (59.0, 76.6, 46.4, 32.4),
    "Jigsaw": (45.7, 64.5, 41.2, 21.3),
    "Rotation": (48.9, 63.9, 41.4, 23.0),
    "PIRL": (63.6, 81.1, 49.8, 34.1),
    "supervised": (75.9, 87.5, 51.5, 45.4),
}

# Table 3: semi-supervised fine-tuning on 1% / 10% of ImageNet labels, top-5.
SEMISUP_FRACTIONS = ("1%", "10%")
TABLE3: dict[str, tuple[float, float]] = {
    "random init": (22.0, 59.0),
    "NPID": (39.2, 77.4),
    "NPID++": (52.6, 81.5),
    "Jigsaw": (45.3, 79.3),
    "PIRL": (57.2, 83.8),
}

# Table 5: PIRL with other pretext tasks (ImageNet / VOC07 / Places205 / iNat).
TABLE5: dict[str, tuple[float, ...]] = {
    "Rotation": (48.9, 63.9, 41.4, 23.0),
    "PIRL (Rotation)": (60.2, 77.1, 47.6, 31.2),
    "PIRL (Jigsaw)": (62.2, 79.8, 48.5, 31.2),
    "PIRL (Rotation+Jigsaw)": (63.1, 80.3, 49.7, 33.6),
}

# Table 7 / Figure 5: ImageNet linear top-1 per layer, in the order of pirl_ablate.layers.LAYERS.
TABLE7: dict[str, tuple[float, ...]] = {
    "random init": (9.6, 13.7, 12.0, 8.0, 5.6),
    "Jigsaw": (12.4, 28.0, 39.9, 45.7, 34.2),
    "NPID++": (6.6, 27.4, 38.5, 53.1, 59.0),
    "PIRL": (6.2, 30.0, 40.1, 56.6, 63.6),
}

# The figures whose values the paper does not print: what it says instead.
FIGURE_CLAIMS = {
    "figure4": "PIRL's distances between f(v_I) and g(v_It) are small; Jigsaw's have a large mean and variance.",
    "figure5": "Jigsaw peaks at res4 and drops at res5; PIRL is best at res5.",
    "figure6": "best at lambda = 0.5; 'quite sensitive' to lambda (grid and values not printed).",
    "figure7": "PIRL above Jigsaw at every |T| (VOC07 mAP, log axis), gaining most at large |T| (values not printed).",
    "figure8": "more negatives help (grid and values not printed).",
}

# Where a figure's stated finding puts the best value on its x axis (drawn as a dotted line).
FIGURE_BEST_X = {"figure6": 0.5}
