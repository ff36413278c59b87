"""End to end: tiny runs pre-trained by `run_training`, evaluated through `pirl-ablate eval` (every protocol)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pirl_ablate import checkpoint, config
from pirl_ablate.build import run_training
from pirl_ablate.cli import main
from pirl_ablate.runs import RunDir, read_json

TINY = """
train.dataset = "synthetic"
synthetic.size = 32
synthetic.image_size = 16
train.image_size = 16
train.batch_size = 16
train.monitor_every = 0
Backbone.arch = "resnet18"
Backbone.small_stem = True
train.transform = "jigsaw"
jigsaw.crop_size = None
jigsaw.patch_size = None
image.size = 16
PIRL.num_negatives = 8
NPID.num_negatives = 8
"""
FAST = ["--bind", "evaluation.precise_bn_batches = 2", "--bind", "evaluation.batch_size = 16",
        "--bind", "linear_probe.epochs = 3", "--bind", "linear_probe.batch_size = 16"]


def train_tiny(folder: Path, extra: str) -> Path:
    cfg = folder / "tiny.gin"
    cfg.write_text(TINY + extra)
    run_training(config.parse([str(cfg)]), folder / "run")
    return folder / "run"


@pytest.fixture(scope="module")
def pirl_run(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("pirl"), 'train.method = "pirl"\ntrain.epochs = 1\n')


@pytest.mark.slow
def test_eval_command_writes_every_protocol(pirl_run, capsys):
    run = RunDir(pirl_run)
    assert main(["-q", "eval", str(pirl_run), "--protocol", "linear", "--layers", "res4,res5", *FAST]) == 0
    linear = read_json(run.evals_dir / "linear-synthetic.json")
    assert linear["protocol"] == "linear" and linear["dataset"] == "synthetic" and linear["bn"] == "precise"
    assert set(linear["metrics"]) == {"res4", "res5"}
    assert all(0 <= m["top1"] <= 100 and "top5" not in m for m in linear["metrics"].values())  # 4 classes
    assert linear["feature_dims"] == {"res4": 256 * 4 * 4, "res5": 512}  # 16 px: res4 is 4x4, the grid's cap
    assert linear["num_train"] == 32 and linear["num_test"] == 32  # the unscoped synthetic.size, both splits
    assert linear["hyperparameters"]["epochs"] == 3 and linear["wall_s"] > 0
    res5 = pirl_run / "features" / "synthetic-train-res5.pt"
    stamp = res5.stat().st_mtime_ns
    assert "res4" in capsys.readouterr().out  # the metrics table

    # kNN reads the cached res5 features (same checkpoint, same precise-BN statistics): nothing re-extracted
    assert main(["-q", "eval", str(pirl_run), "--protocol", "knn", *FAST]) == 0
    assert res5.stat().st_mtime_ns == stamp
    knn = read_json(run.evals_dir / "knn-synthetic.json")
    assert set(knn["metrics"]) == {"res5"} and knn["hyperparameters"]["k"] == 200

    # the evaluation dataset is independent of the pre-training one
    assert main(["-q", "eval", str(pirl_run), "--protocol", "knn", "--dataset", "digits",
                 "--bind", "digits.subset = 40", *FAST]) == 0
    digits = read_json(run.evals_dir / "knn-digits.json")
    assert digits["num_train"] == 40 and "top5" in digits["metrics"]["res5"]  # 10 classes

    assert main(["-q", "eval", str(pirl_run), "--protocol", "invariance", *FAST,
                 "--bind", "invariance_eval.num_images = 12"]) == 0
    inv = read_json(run.evals_dir / "invariance-synthetic.json")
    assert inv["representation"] == "heads" and inv["transform"] == "jigsaw"  # PIRL: f(v_I) vs g(v_It)
    assert sum(inv["histogram"]["counts"]) == 12 and set(inv["metrics"]) == {"heads", "res5"}
    assert all(0 < m["mean"] <= 2 and m["relative"] > 0 for m in inv["metrics"].values())

    assert main(["-q", "eval", str(pirl_run), "--protocol", "semisup", *FAST, "--bind", "semisup_eval.epochs = 1",
                 "--bind", "semisup_eval.fractions = [0.25, 0.5]", "--bind", "semisup_eval.batch_size = 8"]) == 0
    semi = read_json(run.evals_dir / "semisup-synthetic.json")
    assert set(semi["metrics"]) == {"25%", "50%"} and semi["num_labels"] == {"25%": 8, "50%": 16}


@pytest.mark.slow
def test_random_init_baseline_takes_the_same_path(tmp_path):
    run_dir = train_tiny(tmp_path, 'train.method = "npid"\ntrain.epochs = 0\n')  # gin/random_init.gin's recipe
    assert main(["-q", "eval", str(run_dir), "--protocol", "invariance", *FAST,
                 "--bind", "invariance_eval.num_images = 8", "--bind", "evaluation.precise_bn_batches = 0"]) == 0
    inv = read_json(RunDir(run_dir).evals_dir / "invariance-synthetic.json")
    assert inv["representation"] == "pooled" and inv["bn"] == "train"  # NPID trains no g head


def test_eval_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", str(tmp_path), "--protocol", "knn"]) == 2
    assert "no checkpoint (last.pt)" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "--protocol", "linear", "--layers", "res6"]) == 2
    err = capsys.readouterr().err
    assert "res6" in err and "res5" in err


def test_a_run_recorded_under_the_old_pretext_transform_key_still_loads_and_evaluates(tmp_path):
    run_dir = train_tiny(tmp_path, 'train.method = "npid"\ntrain.epochs = 0\n')
    record = checkpoint.run_record(run_dir)
    # one key: the config's train.transform with its bindings, though NPID itself takes no transform
    assert record["transform"] == {"name": "jigsaw", "kwargs": {"crop_size": None, "patch_size": None}}
    assert "pretext_transform" not in record
    # as runs were recorded before: the config's transform under "pretext_transform", the method's (none) under
    # "transform"; rotation, so that the invariance result shows which key evaluation read
    path = checkpoint.last(RunDir(run_dir).checkpoint_dir)
    state = torch.load(path, weights_only=True)
    state["record"] = {**record, "pretext_transform": {"name": "rotation", "kwargs": {}}, "transform": None}
    torch.save(state, path)
    assert checkpoint.run_record(run_dir)["transform"] == {"name": "rotation", "kwargs": {}}
    assert checkpoint.load_method(run_dir).transform is None
    assert main(["-q", "eval", str(run_dir), "--protocol", "invariance", *FAST,
                 "--bind", "invariance_eval.num_images = 8", "--bind", "evaluation.precise_bn_batches = 0"]) == 0
    assert read_json(RunDir(run_dir).evals_dir / "invariance-synthetic.json")["transform"] == "rotation"


def test_an_old_record_keeps_the_methods_transform_where_the_config_named_none():
    spec = {"name": "jigsaw", "kwargs": {"grid": 2}}
    old = {"method": {"name": "jigsaw", "config": {}}, "pretext_transform": None, "transform": spec}
    assert checkpoint.current_record(old) == {"method": {"name": "jigsaw", "config": {}}, "transform": spec}
