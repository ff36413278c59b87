"""Faster R-CNN C4 / FPN transfer: weights come from the run, a tiny C4 detector learns a synthetic VOCdevkit on the
CPU (AP50 well above the untrained one's), training resumes from its checkpoint, `eval --protocol detection`."""

from __future__ import annotations

import shutil

import gin
import pytest
import torch
from tiny_pirl import untrained

from pirl_ablate import checkpoint, config
from pirl_ablate.build import run_training
from pirl_ablate.checkpoint import load_method
from pirl_ablate.cli import main
from pirl_ablate.data.voc import VOC_CLASSES, read_voc, write_synthetic_voc
from pirl_ablate.errors import ConfigError
from pirl_ablate.evaluate import detection
from pirl_ablate.evaluate.detection import (
    DetectionDiverged,
    build_detector,
    evaluate_detector,
    lr_at,
    train_detector,
    trunk_modules,
)
from pirl_ablate.evaluate.detection_protocol import PAPER_PER_METHOD, method_settings
from pirl_ablate.models.backbone import Backbone
from pirl_ablate.runs import read_json

CLASSES = VOC_CLASSES[:3]
TINY = dict(anchor_sizes=(8, 16), test_scale=32, max_size=32, rpn_pre_nms_top_n_train=200,
            rpn_post_nms_top_n_train=50, rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=50, roi_size=8,
            box_batch_size_per_image=32)

FPN_SIZES = {"fpn": {"anchor_sizes": (4, 8, 16, 32, 64)}}  # one anchor size per pyramid level


@pytest.mark.parametrize("arch", ["c4", "fpn"])
def test_detector_starts_from_the_backbone_weights(arch):
    backbone = Backbone(arch="resnet18", width_multiplier=0.5)
    model = build_detector(backbone, 3, arch=arch, **{**TINY, **FPN_SIZES.get(arch, {})})
    for name, module in trunk_modules(model).items():
        source = getattr(backbone, name).state_dict()
        copied = module.state_dict()
        assert set(copied) == {k for k in source if not k.endswith("num_batches_tracked")}  # BN frozen
        assert all(torch.equal(copied[k], source[k]) for k in copied), name
        assert all(a.data_ptr() != b.data_ptr() for a, b in zip(module.parameters(), getattr(backbone, name)
                                                               .parameters()))  # a copy: the run stays intact
    # the C4 split: RPN and RoIAlign on res4 (stride 16), res5 as the box head
    if arch == "c4":
        assert model.backbone.out_channels == 128 and model.roi_heads.box_head.out_channels == 256
        assert model.backbone(torch.rand(1, 3, 64, 64))["0"].shape == (1, 128, 4, 4)


@pytest.mark.parametrize("arch", ["c4", "fpn"])
def test_one_training_step_and_detections_in_image_coordinates(arch):
    torch.manual_seed(0)
    model = build_detector(Backbone(arch="resnet18", width_multiplier=0.5), 3, arch=arch,
                           **{**TINY, **FPN_SIZES.get(arch, {})})
    images = [torch.rand(3, 48, 64), torch.rand(3, 32, 32)]
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[0.0, 0.0, 16.0, 16.0]]), "labels": torch.tensor([3])}]
    losses = model(images, targets)
    assert {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} <= set(losses)
    sum(losses.values()).backward()
    assert model.backbone.body.layer1[0].conv1.weight.grad is not None if arch == "fpn" else \
        model.backbone.res2[0].conv1.weight.grad is not None  # the whole trunk trains
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert all((o["boxes"][:, 2] <= im.shape[-1] + 1e-4).all() and (o["boxes"][:, 3] <= im.shape[-2] + 1e-4).all()
               for o, im in zip(out, images))


def test_frozen_batchnorm_is_the_backbone_in_eval_mode():
    """The default detector's trunk applies the backbone's BN statistics and affine parameters, fixed: its res4 is
    the eval-mode backbone's, in training mode too, and BN has nothing left to train."""
    gen = torch.Generator().manual_seed(0)
    backbone = Backbone(arch="resnet18", width_multiplier=0.5)
    for m in backbone.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    model = build_detector(backbone, 3, **TINY).train()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x = torch.rand(2, 3, 64, 64, generator=gen)
    with torch.no_grad():
        expected = backbone.eval()(x, layers=("res4",))["res4"]
        got = model.backbone((x - backbone.mean) / backbone.std)["0"]
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_syncbn_option_converts_every_trunk_batchnorm_and_keeps_its_statistics():
    """`detector.norm = 'sync'` (VISSL's VOC07 option): every BatchNorm of the trunk becomes a SyncBatchNorm holding
    the backbone's statistics, so in eval mode (no process group needed) the detector's res4 is the backbone's."""
    gen = torch.Generator().manual_seed(1)
    backbone = Backbone(arch="resnet18", width_multiplier=0.5)
    for m in backbone.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    model = build_detector(backbone, 3, norm="sync", **TINY).eval()
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(type(m) is torch.nn.SyncBatchNorm for m in norms)
    x = torch.rand(2, 3, 64, 64, generator=gen)
    with torch.no_grad():
        expected = backbone.eval()(x, layers=("res4",))["res4"]
        got = model.backbone((x - backbone.mean) / backbone.std)["0"]
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_paper_schedules_and_per_method_regimes():
    """Supplementary B: VOC07+12 25k iterations (x0.1 at 17k), VOC07 12.5k (x0.1 at 9.5k), 16 images per iteration,
    BN frozen; PIRL / NPID++ lr 0.003 with 1,000 warm-up iterations from lr / 3, supervised / Jigsaw 0.02 over 100."""
    for gin_file, iterations, steps in (("transfer/voc0712_c4.gin", 25000, (17000,)),
                                        ("transfer/voc07_c4.gin", 12500, (9500,))):
        config.parse([gin_file])
        assert gin.query_parameter("detection_train.iterations") == iterations
        assert tuple(gin.query_parameter("detection_train.steps")) == steps
        assert gin.query_parameter("detection_train.batch_size") == 16
        assert gin.query_parameter("detector.norm") == "frozen"
        for method in ("pirl", "npid"):
            regime = method_settings(method, PAPER_PER_METHOD, {})
            assert (regime["lr"], regime["warmup_iters"], regime["warmup_factor"]) == (0.003, 1000,
                                                                                      pytest.approx(1 / 3))
        for method in ("supervised", "jigsaw"):
            assert (method_settings(method, PAPER_PER_METHOD, {})["lr"],
                    method_settings(method, PAPER_PER_METHOD, {})["warmup_iters"]) == (0.02, 100)
    assert lr_at(0, 0.003, 1000, 1 / 3, (17000,), 0.1) == pytest.approx(0.001)
    assert lr_at(500, 0.003, 1000, 1 / 3, (17000,), 0.1) == pytest.approx(0.002)
    assert lr_at(17000, 0.003, 1000, 1 / 3, (17000,), 0.1) == pytest.approx(0.0003)
    config.parse(["transfer/voc0712_c4.gin"], ["detection_train.lr = 0.01"])  # a sweep's binding wins
    assert "lr" not in method_settings("pirl", PAPER_PER_METHOD, config.bound_kwargs("detection_train"))
    with pytest.raises(ConfigError, match="no entry for the run's method `rotation`"):
        method_settings("rotation", {"pirl": {"lr": 0.003}}, {})


def test_warmup_multistep_schedule_by_hand():
    assert lr_at(0, 0.02, 100, 0.001, (18000, 22000), 0.1) == pytest.approx(0.02 * 0.001)
    assert lr_at(50, 0.02, 100, 0.001, (18000, 22000), 0.1) == pytest.approx(0.02 * (0.001 * 0.5 + 0.5))
    assert lr_at(100, 0.02, 100, 0.001, (18000, 22000), 0.1) == pytest.approx(0.02)
    assert lr_at(18000, 0.02, 100, 0.001, (18000, 22000), 0.1) == pytest.approx(0.002)
    assert lr_at(23999, 0.02, 100, 0.001, (18000, 22000), 0.1) == pytest.approx(0.0002)


@pytest.fixture(scope="module")
def devkit(tmp_path_factory):
    root = write_synthetic_voc(tmp_path_factory.mktemp("voc"), num_trainval=64, num_test=32, image_size=32)
    return read_voc(root, "2007", "trainval", CLASSES), read_voc(root, "2007", "test", CLASSES)


def _tiny_detector(norm: str = "frozen"):
    torch.manual_seed(0)
    return build_detector(Backbone(arch="resnet18", width_multiplier=0.5, small_stem=True), 3, norm=norm, **TINY)


def _train(model, annotations, out, iterations, steps=(3,), checkpoint_every=1000):
    return train_detector(model, annotations, out, torch.device("cpu"), iterations=iterations, batch_size=4,
                          lr=0.02, warmup_iters=10, steps=steps, scales=(32,), checkpoint_every=checkpoint_every)


@pytest.mark.slow
def test_tiny_c4_detector_learns_the_synthetic_devkit(devkit, tmp_path):
    """50 iterations of 4 images (about a minute on a quiet 2-core CPU): AP50 far above the untrained model's. BN
    trains on batch statistics: an untrained backbone's BN has no statistics worth freezing."""
    train, test = devkit
    model = _tiny_detector(norm="batch")
    before = evaluate_detector(model, test, 3, torch.device("cpu"), 32)
    _train(model, train, tmp_path / "det", 50, steps=(37,))
    after = evaluate_detector(model, test, 3, torch.device("cpu"), 32)
    assert after["AP50"] > before["AP50"] + 25 and after["coco_AP50"] > before["coco_AP50"] + 20, (before, after)


class Killed(Exception):
    pass


def test_training_resumes_from_its_checkpoint_as_if_uninterrupted(devkit, tmp_path, monkeypatch):
    train, _ = devkit
    straight = _tiny_detector()
    _train(straight, train, tmp_path / "straight", 4)

    def killed_at_2(iteration, *args):
        if iteration == 2:
            raise Killed
        return lr_at(iteration, *args)

    with monkeypatch.context() as patch, pytest.raises(Killed):
        patch.setattr(detection, "lr_at", killed_at_2)
        _train(_tiny_detector(), train, tmp_path / "killed", 4, checkpoint_every=2)  # stopped after iteration 2
    resumed = _tiny_detector()
    summary = _train(resumed, train, tmp_path / "killed", 4, checkpoint_every=2)
    assert summary["resumed_from"] == 2
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_diverging_fine_tune_stops_before_the_weights_take_the_nan(devkit, tmp_path):
    train, _ = devkit
    model = _tiny_detector()
    with pytest.raises(DetectionDiverged, match="detection fine-tune: loss"):
        train_detector(model, train, tmp_path / "det", torch.device("cpu"), iterations=6, batch_size=2, lr=1e12,
                       warmup_iters=0, scales=(32,))
    assert all(torch.isfinite(t).all() for t in model.state_dict().values())


RUN = untrained(size=8, train_image_size=32, negatives=4)
TINY_EVAL = ["synthetic_voc.num_trainval = 16", "synthetic_voc.num_test = 8", "synthetic_voc.image_size = 32",
             "detection_train.iterations = 2", "detection_train.batch_size = 2", "detection_train.scales = (32,)",
             "detection_train.checkpoint_every = 1", *(f"detector.{k} = {v!r}" for k, v in TINY.items())]


def _eval(run, *binds: str, gin_file: str = "transfer/smoke_c4.gin") -> dict:
    args = ["-q", "eval", str(run), "--protocol", "detection", "--gin", gin_file]
    assert main([*args, *(x for b in binds for x in ("--bind", b))]) == 0
    return read_json(run / "evals" / "detection-synthetic_voc.json")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    (folder / "tiny.gin").write_text(RUN)
    run_training(config.parse([str(folder / "tiny.gin")]), folder / "run")
    return folder / "run"


def _copy_run(run, dest):
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("detection", "evals"))
    return dest


def _detector_weights(run) -> dict:
    return torch.load(run / "detection" / "synthetic_voc" / "checkpoints" / "last.pt", weights_only=True)["detector"]


@pytest.mark.slow
def test_eval_detection_protocol_writes_its_result_and_checkpoint(tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path / "run")
    result = _eval(run, *TINY_EVAL)
    assert result["protocol"] == "detection" and result["classes"] == list(CLASSES)
    assert set(result["metrics"]["c4"]) == {"AP", "AP50", "AP75", "coco_AP", "coco_AP50", "coco_AP75"}
    assert all(0 <= v <= 100 for v in result["metrics"]["c4"].values())
    assert result["num_train"] == 16 and result["num_test"] == 8 and result["training"]["iterations"] == 2
    # the run is an NPID run: the paper's PIRL / NPID++ regime, warm-up shrunk by smoke_c4.gin
    assert result["method"] == "npid" and result["hyperparameters"]["detection_train"]["lr"] == 0.003
    assert (run / "detection" / "synthetic_voc" / "checkpoints" / "last.pt").is_file()
    assert (run / "detection" / "synthetic_voc" / "voc" / "VOCdevkit" / "VOC2007" / "Annotations").is_dir()
    # a C4 model built from the run's checkpoint holds the pre-trained weights and BN statistics
    backbone = load_method(run).backbone
    for name, module in trunk_modules(build_detector(backbone, 3, **TINY)).items():
        source = getattr(backbone, name).state_dict()
        assert all(torch.equal(t, source[k]) for k, t in module.state_dict().items()), name


@pytest.mark.slow
def test_the_same_detection_eval_twice_gives_the_same_detector(tiny_run, tmp_path):
    """Two evaluations of one run (in two copies of its folder, torch's global generator left elsewhere between
    them) train bitwise the same detector: the new heads are created after the seed is set."""
    first, second = _copy_run(tiny_run, tmp_path / "a"), _copy_run(tiny_run, tmp_path / "b")
    a = _eval(first, *TINY_EVAL)
    torch.manual_seed(1234)
    torch.rand(100)
    b = _eval(second, *TINY_EVAL)
    assert a["training"]["loss"] == b["training"]["loss"] and a["metrics"] == b["metrics"]
    wa, wb = _detector_weights(first), _detector_weights(second)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_a_detector_belongs_to_its_backbone_and_settings(tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path / "run")
    done = _eval(run, *TINY_EVAL)
    assert done["training"]["resumed_from"] == 0
    again = _eval(run, *TINY_EVAL)  # the same backbone and settings: the finished detector, its loss
    assert again["training"]["resumed_from"] == 2 and again["training"]["loss"] == done["training"]["loss"]
    # other classes: a new detector (its box predictor has another shape), no size-mismatch error
    two = _eval(run, *TINY_EVAL, "detection_eval.classes = ('aeroplane', 'bicycle')")
    assert two["training"]["resumed_from"] == 0 and two["classes"] == ["aeroplane", "bicycle"]
    assert _detector_weights(run)["roi_heads.box_predictor.cls_score.bias"].shape == (3,)
    # the run trained further (other weights in its checkpoint): a new detector again
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    state["method"] = {k: v + 0.01 if k.endswith("layer1.0.conv1.weight") else v for k, v in state["method"].items()}
    checkpoint.save(state, run / "checkpoints")
    moved = _eval(run, *TINY_EVAL, "detection_eval.classes = ('aeroplane', 'bicycle')")
    assert moved["training"]["resumed_from"] == 0 and moved["training"]["key"] != two["training"]["key"]
    # a checkpoint from before detectors had keys (it saved the RNG states instead): a new detector too
    ckpt = run / "detection" / "synthetic_voc" / "checkpoints"
    old = torch.load(ckpt / "last.pt", weights_only=True)
    checkpoint.save({"detector": old["detector"], "optimizer": old["optimizer"], "iteration": 2, "rng": {}}, ckpt)
    assert _eval(run, *TINY_EVAL, "detection_eval.classes = ('aeroplane', 'bicycle')")["training"]["resumed_from"] == 0


@pytest.mark.slow
def test_the_paper_voc0712_setting_runs_end_to_end_on_a_resnet50(tmp_path):
    """gin/transfer/voc0712_c4.gin as the paper runs it (ResNet-50, frozen BN, VOC07+12 trainvals, the method's lr
    and warm-up, 16 images per iteration over all ranks) with only counts shrunk: images, iterations, batch,
    scales and RoIs, so a paper-scale evaluation cannot fail on a cluster for a reason the CPU shows."""
    (tmp_path / "r50.gin").write_text(RUN + 'Backbone.arch = "resnet50"\nBackbone.width_multiplier = 1.0\n'
                                            'Backbone.small_stem = False\n')
    run = tmp_path / "run"
    run_training(config.parse([str(tmp_path / "r50.gin")]), run)
    shrunk = ["detection_eval.synthetic = True", "detection_eval.classes = ('aeroplane', 'bicycle', 'bird')",
              "synthetic_voc.num_trainval = 4", "synthetic_voc.num_test = 2", "synthetic_voc.image_size = 64",
              "detection_train.iterations = 2", "detection_train.steps = (1,)", "detection_train.batch_size = 2",
              "detection_train.scales = (64,)", "detection_train.checkpoint_every = 1", "detector.test_scale = 64",
              "detector.rpn_post_nms_top_n_train = 16", "detector.rpn_post_nms_top_n_test = 16",
              "detector.box_batch_size_per_image = 16"]
    args = ["-q", "eval", str(run), "--protocol", "detection", "--gin", "transfer/voc0712_c4.gin"]
    assert main([*args, *(x for b in shrunk for x in ("--bind", b))]) == 0
    result = read_json(run / "evals" / "detection-voc0712.json")
    assert result["num_train"] == 8 and result["num_test"] == 2  # VOC2007 + VOC2012 trainval, VOC2007 test
    assert set(result["metrics"]["c4"]) == {"AP", "AP50", "AP75", "coco_AP", "coco_AP50", "coco_AP75"}
    train = result["hyperparameters"]["detection_train"]
    assert (train["lr"], train["warmup_iters"], train["warmup_factor"]) == (0.003, 1000, pytest.approx(1 / 3))
    assert result["hyperparameters"]["detector"]["norm"] == "frozen" and result["training"]["iterations"] == 2
    # every setting the detector was built and trained with, defaults too (Detectron2's R50-C4 anchors, the paper's
    # VOC07+12 schedule), and the protocol's own: the result belongs to the exact setting it claims
    hyper = result["hyperparameters"]
    assert hyper["detector"]["anchor_sizes"] == [32, 64, 128, 256, 512] and hyper["detector"]["test_scale"] == 64
    assert (train["steps"], train["seed"], hyper["synthetic_voc"]["num_trainval"]) == ([1], 0, 4)
    assert hyper["detection_eval"] == {"name": "voc0712", "train_sets": [["2007", "trainval"], ["2012", "trainval"]],
                                       "test_set": ["2007", "test"], "synthetic": True, "seed": 0}
    assert torch.isfinite(torch.tensor(result["training"]["loss"]))
