"""Detection fine-tuning data parallel over two real gloo ranks: together they see the batch one process sees,
their replicas stay bitwise equal, and the test images detected in shards and gathered are the one-process ones."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from gloo import two_ranks
from sweep_jobs import PATIENCE_S
from tiny_pirl import untrained

from pirl_ablate import config
from pirl_ablate.build import run_training
from pirl_ablate.data.voc import VOC_CLASSES, read_voc, write_synthetic_voc
from pirl_ablate.evaluate import detection
from pirl_ablate.evaluate.detection import build_detector, detect, train_detector
from pirl_ablate.models.backbone import Backbone
from pirl_ablate.runs import read_json

TINY = dict(anchor_sizes=(8, 16), test_scale=32, max_size=32, rpn_pre_nms_top_n_train=200,
            rpn_post_nms_top_n_train=50, rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=50, roi_size=8,
            box_batch_size_per_image=32)
TRAIN = dict(iterations=2, batch_size=4, lr=0.02, warmup_iters=1, steps=(10,), scales=(32,), checkpoint_every=1)

WORKER = textwrap.dedent("""
    import sys

    import torch
    import torch.distributed as dist

    from pirl_ablate.data.voc import VOC_CLASSES, read_voc
    from pirl_ablate.evaluate import detection
    from pirl_ablate.models.backbone import Backbone

    rank, init, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    seen = []
    load = detection.load_image
    detection.load_image = lambda path: seen.append(path.name) or load(path)
    train = read_voc(ROOT, "2007", "trainval", VOC_CLASSES[:3])
    test = read_voc(ROOT, "2007", "test", VOC_CLASSES[:3])
    torch.manual_seed(0)
    model = detection.build_detector(Backbone(arch="resnet18", width_multiplier=0.5, small_stem=True), 3, **TINY)
    summary = detection.train_detector(model, train, OUT_DIR, torch.device("cpu"), **TRAIN)
    trained_on = list(seen)
    dets = detection.detect(model, test, torch.device("cpu"), 32)
    torch.save({"state": model.state_dict(), "seen": trained_on, "dets": dets, "world": summary["world_size"]}, out)
""")


def _logged(seen):
    load = detection.load_image
    return lambda path: seen.append(path.name) or load(path)


def _tiny():
    torch.manual_seed(0)
    return build_detector(Backbone(arch="resnet18", width_multiplier=0.5, small_stem=True), 3, **TINY)


@pytest.mark.slow
def test_two_gloo_ranks_train_one_detector_on_the_one_process_batches(tmp_path, monkeypatch):
    root = write_synthetic_voc(tmp_path / "voc", num_trainval=16, num_test=6, image_size=32)
    worker = (f"ROOT, OUT_DIR = {str(root)!r}, {str(tmp_path / 'ddp')!r}\nTINY, TRAIN = {TINY!r}, {TRAIN!r}\n"
              + WORKER)
    r0, r1 = two_ranks(worker, tmp_path)
    assert r0["world"] == r1["world"] == 2
    assert r0["state"].keys() == r1["state"].keys()
    assert all(torch.equal(r0["state"][k], r1["state"][k]) for k in r0["state"])  # replicas bitwise equal
    fresh = _tiny().state_dict()
    assert not torch.equal(fresh["roi_heads.box_predictor.cls_score.weight"],
                           r0["state"]["roi_heads.box_predictor.cls_score.weight"])  # it trained

    # one process draws the same 4 images per iteration; rank 0 took the first 2 of them, rank 1 the last 2
    seen = []
    train = read_voc(root, "2007", "trainval", VOC_CLASSES[:3])
    test = read_voc(root, "2007", "test", VOC_CLASSES[:3])
    with monkeypatch.context() as patch:
        patch.setattr(detection, "load_image", _logged(seen))
        train_detector(_tiny(), train, tmp_path / "one", torch.device("cpu"), **TRAIN)
    for it in range(2):
        assert r0["seen"][2 * it:2 * it + 2] + r1["seen"][2 * it:2 * it + 2] == seen[4 * it:4 * it + 4]
        assert len(set(seen[4 * it:4 * it + 4])) == 4

    # the sharded detections, gathered on every rank, are those of one process with the same weights
    model = _tiny()
    model.load_state_dict(r0["state"])
    alone = detect(model, test, torch.device("cpu"), 32)
    assert len(r0["dets"]) == len(r1["dets"]) == len(alone) == 6
    for a, b, c in zip(r0["dets"], r1["dets"], alone):
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert a["labels"].tolist() == c["labels"].tolist()
        assert torch.allclose(a["boxes"], c["boxes"], atol=1e-3) and torch.allclose(a["scores"], c["scores"], atol=1e-4)


@pytest.mark.slow
def test_eval_under_torchrun_trains_one_detector_over_two_ranks(tmp_path):
    """`pirl-ablate eval --protocol detection` under the real launcher (torchrun, 2 gloo ranks on the CPU): the
    ranks share each iteration's 2 images, rank 0 writes the result and the checkpoint."""
    (tmp_path / "tiny.gin").write_text(untrained(size=8, train_image_size=32, negatives=4))
    run_training(config.parse([str(tmp_path / "tiny.gin")]), tmp_path / "run")
    binds = ["synthetic_voc.num_trainval = 8", "synthetic_voc.num_test = 4", "synthetic_voc.image_size = 32",
             "detection_train.iterations = 2", "detection_train.batch_size = 2", "detection_train.scales = (32,)",
             *(f"detector.{k} = {v!r}" for k, v in TINY.items())]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "pirl_ablate.cli", "-q", "eval", str(tmp_path / "run"), "--protocol", "detection",
               "--gin", "transfer/smoke_c4.gin", *(x for b in binds for x in ("--bind", b))]
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=PATIENCE_S)
    assert done.returncode == 0, done.stderr[-3000:]
    result = read_json(tmp_path / "run" / "evals" / "detection-synthetic_voc.json")
    assert result["training"]["world_size"] == 2 and result["training"]["iterations"] == 2
    assert (tmp_path / "run" / "detection" / "synthetic_voc" / "checkpoints" / "last.pt").is_file()
