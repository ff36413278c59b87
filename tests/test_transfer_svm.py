"""VOC07 SVM protocol: AP against hand computations, separable / shuffled features, low-shot draws, a VOCdevkit
written on disk and read back, and `pirl-ablate eval --protocol svm|low-shot` on a tiny run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_pirl import untrained

from pirl_ablate import config
from pirl_ablate.build import run_training
from pirl_ablate.cli import main
from pirl_ablate.data.voc import VOC_CLASSES, voc2007, write_synthetic_voc
from pirl_ablate.evaluate.svm import (
    average_precisions,
    fit_svms,
    low_shot_targets,
    onehot_targets,
    svm_scores,
    voc_ap,
)
from pirl_ablate.runs import read_json


def test_average_precision_by_hand_ignores_difficult():
    # class 0: ranked 1, 0, 1 (the -1 image is left out): AP = (1/1 + 2/3) / 2
    # class 1: ranked 0, 1, 0, 1: precisions at the positives 1/2 and 2/4: AP = 0.5
    scores = np.array([[0.9, 0.4], [0.8, 0.3], [0.7, 0.2], [0.6, 0.1]])
    targets = np.array([[1, 0], [0, 1], [1, 0], [-1, 1]])
    assert average_precisions(scores, targets) == pytest.approx([100 * (1 + 2 / 3) / 2, 50.0])


def test_voc_interpolated_ap_by_hand_differs_from_sklearns():
    """VISSL's calculate_ap: ranked 1, 0, 0, 1, 1 has precisions 1, 1/2, 1/3, 1/2, 3/5 at recalls 1/3, 1/3, 1/3,
    2/3, 1; the envelope at the three recall steps is 1, 3/5, 3/5: AP = (1 + 3/5 + 3/5) / 3. sklearn's
    (uninterpolated) AP is (1 + 1/2 + 3/5) / 3."""
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    positive = np.array([True, False, False, True, True])
    assert voc_ap(scores, positive) == pytest.approx((1 + 0.6 + 0.6) / 3, abs=1e-12)
    targets = positive.astype(int)[:, None]
    assert average_precisions(scores[:, None], targets)[0] == pytest.approx(100 * 2.2 / 3, abs=1e-9)
    assert average_precisions(scores[:, None], targets, "sklearn")[0] == pytest.approx(100 * 2.1 / 3, abs=1e-9)


def test_voc_ap_ranks_tied_scores_later_image_first():
    """Ties as VISSL's reversed argsort leaves them: scores 0.9, 0.5, 0.5 with the positive second is ranked
    negative, negative (the later tie), positive: AP = 1/3."""
    assert voc_ap(np.array([0.9, 0.5, 0.5]), np.array([False, True, False])) == pytest.approx(1 / 3, abs=1e-12)
    assert voc_ap(np.array([0.9, 0.5, 0.5]), np.array([False, False, True])) == pytest.approx(1 / 2, abs=1e-12)


def _blobs(n: int, num_classes: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.randint(num_classes, (n,), generator=gen)
    centres = torch.eye(num_classes, 16) * 10
    return centres[labels] + torch.randn(n, 16, generator=gen), labels


def test_svms_separable_features_score_100_and_shuffled_labels_chance():
    gen = torch.Generator().manual_seed(0)
    train_x, train_y = _blobs(120, 3, gen)
    test_x, test_y = _blobs(300, 3, gen)
    models, cv_ap, chosen = fit_svms(train_x, onehot_targets(train_y, 3), costs=(0.01, 1.0), folds=3)
    assert cv_ap.shape == (3, 2) and all(c in (0.01, 1.0) for c in chosen)
    aps = average_precisions(svm_scores(models, test_x), onehot_targets(test_y, 3).numpy())
    assert aps == pytest.approx([100.0] * 3)

    shuffled = train_y[torch.randperm(len(train_y), generator=gen)]
    models, _, _ = fit_svms(train_x, onehot_targets(shuffled, 3), costs=(0.01, 1.0), folds=3)
    chance = 100 * onehot_targets(test_y, 3).float().mean(0).numpy()  # the AP of a random ranking ~ prevalence
    # (sklearn's AP: VOC's interpolated AP lifts a random ranking above its prevalence)
    aps = average_precisions(svm_scores(models, test_x), onehot_targets(test_y, 3).numpy(), "sklearn")
    assert np.abs(aps - chance).max() < 15, (aps, chance)


def test_low_shot_targets_keep_k_positives_and_c_minus_1_k_negatives():
    gen = torch.Generator().manual_seed(0)
    targets = onehot_targets(torch.arange(60) % 3, 3)
    targets[0, 1] = -1  # a difficult-only image is never drawn
    out = low_shot_targets(targets, 2, gen)
    for c in range(3):
        assert int((out[:, c] == 1).sum()) == 2 and int((out[:, c] == 0).sum()) == 4
        kept = out[:, c] != -1
        assert torch.equal(out[kept, c], targets[kept, c])  # drawn from the right pool
    assert out[0, 1] == -1
    again = low_shot_targets(targets, 2, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def _write_devkit(root: Path) -> None:
    """Three annotated images by hand: VOC's 1-based boxes, one difficult-only bird, one unknown class."""
    base = root / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (base / sub).mkdir(parents=True)
    from PIL import Image

    objects = {"a": [("dog", 0, (1, 2, 10, 20)), ("bird", 1, (5, 5, 8, 8))],
               "b": [("bird", 0, (3, 3, 30, 20)), ("cat", 0, (2, 2, 4, 4))],
               "c": [("person", 0, (1, 1, 32, 24)), ("unicorn", 0, (1, 1, 2, 2))]}  # inside the 32x24 images
    for image_id, objs in objects.items():
        Image.new("RGB", (32, 24), (10, 20, 30)).save(base / "JPEGImages" / f"{image_id}.jpg")
        xml = "".join(f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin>"
                      f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
                      for n, d, b in objs)
        (base / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><size><width>32</width><height>24</height><depth>3</depth></size>{xml}</annotation>")
    (base / "ImageSets" / "Main" / "trainval.txt").write_text("a\nb\n")
    (base / "ImageSets" / "Main" / "test.txt").write_text("c\n")


def test_voc2007_reads_a_vocdevkit_with_torchvision_parsers(tmp_path):
    _write_devkit(tmp_path)
    train = voc2007("train", root=str(tmp_path), image_size=16)
    dog, bird, cat, person = (VOC_CLASSES.index(n) for n in ("dog", "bird", "cat", "person"))
    expected = torch.zeros(2, 20, dtype=torch.int8)
    expected[0, dog], expected[0, bird] = 1, -1   # a: dog, and a bird marked difficult only
    expected[1, bird], expected[1, cat] = 1, 1    # b: bird (not difficult) and cat
    assert torch.equal(train.targets, expected)
    assert train.labels.tolist() == [dog, bird]
    assert train.annotations[0].boxes.tolist() == [[0, 1, 10, 20], [4, 4, 8, 8]]
    assert train.annotations[0].difficult.tolist() == [False, True]
    image, index, _ = train[1]
    assert image.shape == (3, 16, 16) and image.dtype == torch.uint8 and index == 1
    test = voc2007("test", root=str(tmp_path))
    assert test.targets[0].nonzero().squeeze(1).tolist() == [person]  # unicorn is no VOC class


def test_voc2007_missing_devkit_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(Exception, match="VOCdevkit/VOC2007"):
        voc2007("train", root=str(tmp_path))


TINY = untrained(size=16, train_image_size=32, negatives=8)


@pytest.mark.slow
def test_eval_svm_and_low_shot_on_a_synthetic_vocdevkit(tmp_path, capsys):
    write_synthetic_voc(tmp_path / "voc", num_trainval=48, num_test=24, image_size=32)
    cfg = tmp_path / "tiny.gin"
    cfg.write_text(TINY)
    run = tmp_path / "run"
    run_training(config.parse([str(cfg)]), run)
    voc = ["--dataset", "voc2007", "--bind", f"voc2007.root = '{tmp_path / 'voc'}'",
           "--bind", "voc2007.classes = ('aeroplane', 'bicycle', 'bird')", "--bind", "voc2007.image_size = 32",
           "--bind", "evaluation.batch_size = 16", "--bind", "svm_eval.costs = [0.1, 1.0]"]
    assert main(["-q", "eval", str(run), "--protocol", "svm", "--layers", "res4,res5", *voc]) == 0
    result = read_json(run / "evals" / "svm-voc2007.json")
    assert set(result["metrics"]) == {"res4", "res5"} and result["classes"] == ["aeroplane", "bicycle", "bird"]
    assert result["num_train"] == 48 and result["num_test"] == 24
    for layer in ("res4", "res5"):
        aps = result["per_class_ap"][layer]
        assert len(aps) == 3 and result["metrics"][layer]["mAP"] == pytest.approx(sum(aps) / 3)
        assert all(0 < ap <= 100 + 1e-9 for ap in aps) and set(result["chosen_cost"][layer]) <= {0.1, 1.0}

    capsys.readouterr()
    assert main(["-q", "eval", str(run), "--protocol", "svm", *voc, "--bind", "svm_eval.ap = 'vocc'"]) == 2
    assert "svm_eval.ap = 'vocc' (did you mean `voc`?)" in capsys.readouterr().err

    assert main(["-q", "eval", str(run), "--protocol", "low-shot", *voc, "--bind", "low_shot_eval.k_values = [1, 2]",
                 "--bind", "low_shot_eval.draws = 3"]) == 0
    low = read_json(run / "evals" / "low-shot-voc2007.json")
    assert set(low["metrics"]["res5"]) == {"k1", "k1_std", "k2", "k2_std"}
    for k in ("k1", "k2"):
        draws = low["draws"]["res5"][k]
        assert len(draws) == 3 and low["metrics"]["res5"][k] == pytest.approx(np.mean(draws))
