"""Pre-training: the loss falls, kill -9 and resume is bit-identical, NaN stops the run, DDP on gloo, export, CLI."""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from sigkill_resume import cli, whole_and_killed
from sweep_jobs import PATIENCE_S
from tiny_pirl import BATCH, NEGATIVES, SIZE, tiny_config

from pirl_ablate import build, checkpoint, config
from pirl_ablate.build import run_training
from pirl_ablate.checkpoint import load_method
from pirl_ablate.cli import main as cli_main
from pirl_ablate.evaluate.knn import knn_top1
from pirl_ablate.gin_edge import GIN
from pirl_ablate.methods import PIRL, register_method
from pirl_ablate.runs import RunDir, read_json
from pirl_ablate.train import TrainingDiverged, TrainSettings, fill_bank, lr_factor, parameter_groups

REPO = Path(__file__).resolve().parent.parent


@register_method("nan_after_test", gin_name="NaNAfterTest")
class NaNAfterTest(PIRL):
    """PIRL whose loss becomes NaN from call `steps + 1` on (to test divergence handling)."""

    def __init__(self, backbone, memory_bank, transform=None, image_transform=None, *, steps: int = 5, **kwargs):
        super().__init__(backbone, memory_bank, transform, image_transform, **kwargs)
        self.steps, self.calls = steps, 0

    def forward(self, *args, **kwargs):
        loss, parts = super().forward(*args, **kwargs)
        self.calls += 1
        return (loss * float("nan") if self.calls > self.steps else loss), parts


def test_cosine_schedule_and_warmup_match_the_closed_form():
    final = 1e-3
    assert lr_factor(0, 100, 0, final) == 1.0
    assert math.isclose(lr_factor(50, 100, 0, final), (1 + final) / 2)
    assert math.isclose(lr_factor(100, 100, 0, final), final)
    assert math.isclose(lr_factor(25, 100, 0, final), final + (1 - final) * (1 + math.cos(math.pi / 4)) / 2)
    assert [lr_factor(s, 100, 4, final) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 100, 4, final) == 1.0


def test_weight_decay_only_on_conv_and_linear_weights():
    net = torchvision.models.resnet18()
    decay, no_decay = parameter_groups([net], 1e-4)
    convs_linears = [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert {id(p) for p in decay["params"]} == {id(p) for p in convs_linears}
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    bn_and_bias = [p for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in (m.weight, m.bias)]
    assert {id(p) for p in bn_and_bias} | {id(net.fc.bias)} == {id(p) for p in no_decay["params"]}


def test_weighted_knn_known_answer():
    # Query at 45 degrees. Class 1: one entry exactly there (s = 1). Class 0: entries at 35, 55 and 50 degrees
    # (s = cos 10, cos 10, cos 5). Votes exp(s / 0.07): class 1 e^14.29 = 1.6e6; class 0 2 e^14.07 + e^14.23 =
    # 4.1e6. So k = 4 predicts class 0, while k = 1 (the nearest only) predicts class 1.
    angles = torch.tensor([35.0, 55.0, 50.0, 45.0]).deg2rad()
    bank = torch.stack([angles.cos(), angles.sin()], dim=1)
    labels = torch.tensor([0, 0, 0, 1])
    q = F.normalize(torch.tensor([[1.0, 1.0]]), dim=1)
    assert knn_top1(bank, labels, q, torch.tensor([0]), 2, k=4, sigma=0.07) == 1.0
    assert knn_top1(bank, labels, q, torch.tensor([1]), 2, k=1, sigma=0.07) == 1.0
    assert knn_top1(bank, labels, q, torch.tensor([1]), 2, k=4, sigma=0.07) == 0.0  # (the monitor's kNN)


def test_features_bank_init_holds_each_images_embedding_and_leaves_bn_statistics():
    from pirl_ablate.data.arrays import ArrayDataset
    from pirl_ablate.distributed import DistEnv
    from pirl_ablate.losses import MemoryBank
    from pirl_ablate.methods import NPID
    from pirl_ablate.models import Backbone

    def npid() -> NPID:
        bank = MemoryBank(7, 128, torch.Generator().manual_seed(0), init="features")
        return NPID(Backbone("resnet18", width_multiplier=0.5, small_stem=False), bank, generator=torch.Generator(),
                    num_negatives=4)

    torch.manual_seed(0)
    net = npid().train()
    images = torch.randint(0, 256, (7, 1, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    dataset = ArrayDataset(images, torch.zeros(7), name="t", split="train", num_classes=None)
    state = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("memory_bank.")}
    fill_bank(net, dataset, DistEnv(0, 1, 0, torch.device("cpu")), 16, 3, torch.autocast("cpu", enabled=False))
    for key, value in state.items():  # BN running statistics (and everything but the bank) untouched
        assert torch.equal(net.state_dict()[key], value), key
    assert net.training
    bank = net.memory_bank
    # Independent expectation: a copy of the initial network embeds the clean images batch by batch in dataset
    # order (3, 3, 1) with batch statistics, as the loss's f(v_I) would; the lone last image in eval mode (batch
    # statistics of one image are undefined at res5's 1x1).
    reference = npid()
    reference.load_state_dict(state, strict=False)  # all but the bank
    x = images.float().div(255).expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=(16, 16), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        lone = reference.eval().embed_image(x[6:7])  # before the training-mode passes move its running stats
        expected = torch.cat([reference.train().embed_image(x[0:3]), reference.embed_image(x[3:6]), lone])
    torch.testing.assert_close(bank.bank, expected, atol=1e-5, rtol=0)
    assert torch.allclose(bank.bank.norm(dim=1), torch.ones(7))


# ------------------------------------------------------------------------------------------ end-to-end runs
@pytest.mark.slow
def test_tiny_pirl_run_learns_and_writes_the_run_folder(tmp_path):
    cfg = config.parse([tiny_config(tmp_path, "train.monitor_every = 5\n", epochs=15)])
    result = run_training(cfg, tmp_path / "run")
    run = RunDir(tmp_path / "run")
    rows = run.metrics()
    assert [r["epoch"] for r in rows] == list(range(1, 16)) and result["status"] == "done"
    for key in ("loss", "loss_image", "loss_transformed", "pos_sim_image", "lr", "images_per_s"):
        assert key in rows[-1]
    assert [r["epoch"] for r in rows if "knn_top1" in r] == [5, 10, 15]
    chance = math.log(NEGATIVES + 1)  # InfoNCE with every score equal: -log(1 / (N + 1))
    # The bank starts from the initial network's embeddings (smoke scale's MemoryBank.init), so the loss starts
    # near chance and falls well below it. Over CPU kernels (native AVX512, ATEN_CPU_CAPABILITY=default, and that
    # with oneDNN/MKL held to SSE4), 1 and 2 threads and seeds 0-2 it fell by 0.76-1.09, ended 0.29-0.56 below
    # chance, kNN 0.69-0.89 (benchmarks/RESULTS.md, "CPU spread of the learning tests").
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.5 and rows[-1]["loss"] < chance - 0.15
    assert rows[-1]["knn_top1"] > 0.5  # 4 balanced classes: chance is 0.25
    assert "train.epochs = 15" in run.config_path.read_text()  # the operative config
    assert run.meta()["seed"] == 0
    assert checkpoint.load(checkpoint.last(run.checkpoint_dir))["epoch"] == 15
    again = run_training(cfg, tmp_path / "run")  # complete: nothing is redone
    assert again["end"] == result["end"]


@pytest.mark.slow
def test_every_epoch_row_holds_the_health_numbers_and_they_leave_the_run_unchanged(tmp_path):
    from pirl_ablate.data import build_dataset, to_device_batch

    cfg = config.parse([tiny_config(tmp_path, epochs=3)])
    result = run_training(cfg, tmp_path / "run")
    test_images = to_device_batch(build_dataset("synthetic", "test", configuration=GIN).images, "cpu", 16)  # held out
    run_training(config.parse([tiny_config(tmp_path, "train.health_images = 0\n", epochs=3, name="plain.gin")]),
                 tmp_path / "plain")
    rows, plain_rows = RunDir(tmp_path / "run").metrics(), RunDir(tmp_path / "plain").metrics()
    assert [r["loss"] for r in rows] == [r["loss"] for r in plain_rows]  # bit-identical with or without them
    net, plain_net = load_method(tmp_path / "run"), load_method(tmp_path / "plain")
    for key, value in net.state_dict().items():
        assert torch.equal(value, plain_net.state_dict()[key]), key
    assert "rel_invariance" not in plain_rows[-1] and "uniformity" in plain_rows[-1]

    last = rows[-1]
    assert last["loss_chance"] == pytest.approx(math.log(NEGATIVES + 1))  # InfoNCE, every score alike
    # uniformity (Wang & Isola Eq. 4, t = 2) in float64 over every pair of distinct entries of the final bank
    bank = net.memory_bank.bank.double()
    sq = (bank[:, None] - bank[None]).pow(2).sum(-1)[~torch.eye(SIZE, dtype=torch.bool)]
    assert last["uniformity"] == pytest.approx(math.log(torch.exp(-2 * sq).mean()), abs=0.1)
    # mean d(f(v_I), g(v_It)) / mean d(f(v_I), f(v_I')) by hand on the held-out images, with other view draws
    with torch.no_grad():
        f = F.normalize(net.embed_image(test_images).double(), dim=1)
        g = F.normalize(net.embed_transformed(net.transform(test_images, torch.Generator().manual_seed(7))).double(),
                        dim=1)
    by_hand = float((f - g).norm(dim=1).mean() / (f - f.roll(1, dims=0)).norm(dim=1).mean())
    assert last["rel_invariance"] == pytest.approx(by_hand, abs=0.15)
    assert isinstance(last["warnings"], list) and result["warnings"] == last["warnings"]
    assert read_json(tmp_path / "run" / "result.json")["warnings"] == last["warnings"]


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(tmp_path):
    a, b = whole_and_killed(tiny_config(tmp_path, epochs=4), tmp_path, epochs=4)
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (4, 4 * SIZE // BATCH)
    assert a["method"].keys() == b["method"].keys() and "memory_bank.bank" in a["method"]
    for key in a["method"]:  # trunk, heads, memory bank, Z
        assert torch.equal(a["method"][key], b["method"][key]), f"{key} differs"
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert [r["epoch"] for r in RunDir(tmp_path / "killed").metrics()] == [1, 2, 3, 4]
    assert RunDir(tmp_path / "killed").meta()["restarts"] == 1


def test_nan_loss_stops_keeps_the_last_good_checkpoint_and_fails_the_run(tmp_path):
    extra = f"train.method = 'nan_after_test'\nNaNAfterTest.steps = 5\nNaNAfterTest.num_negatives = {NEGATIVES}\n" \
            "NaNAfterTest.estimator = 'infonce'\n"
    cfg = config.parse([tiny_config(tmp_path, extra, epochs=3)])
    with pytest.raises(TrainingDiverged, match="step 6"):
        run_training(cfg, tmp_path / "run")
    result = read_json(tmp_path / "run" / "result.json")
    assert result["status"] == "failed" and result["step"] == 6 and "nan" in result["reason"]
    kept = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert kept["epoch"] == 1 and all(torch.isfinite(v).all() for v in kept["method"].values()
                                      if v.is_floating_point())


def test_random_init_baseline_and_export_load_strictly_into_torchvision(tmp_path):
    cfg = config.parse([tiny_config(tmp_path, "Backbone.width_multiplier = 1\n", epochs=0)])
    result = run_training(cfg, tmp_path / "run")
    assert result["status"] == "done" and result["steps"] == 0
    out = tmp_path / "resnet18.pth"
    assert cli_main(["-q", "export", str(tmp_path / "run"), "--out", str(out)]) == 0
    state = torch.load(out, weights_only=True)
    model = torchvision.models.resnet18()
    model.load_state_dict(state, strict=True)  # every key, every shape
    model.eval()
    net = load_method(tmp_path / "run")
    x = torch.rand(2, 3, 32, 32)
    normalised = torchvision.transforms.functional.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    trunk = torch.nn.Sequential(*list(model.children())[:-2])  # torchvision's own modules up to layer4
    assert torch.allclose(trunk(normalised), net.backbone(x)["res5"], atol=1e-5)


@pytest.mark.slow
def test_two_process_gloo_run_updates_every_bank_entry(tmp_path):
    cfg = tiny_config(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={port}", "--master_addr=127.0.0.1", "-m", "pirl_ablate.cli", "-q", "train",
                           str(cfg), "--out", str(tmp_path / "ddp")], cwd=REPO, capture_output=True, text=True,
                          timeout=PATIENCE_S, env={**os.environ, "OMP_NUM_THREADS": "1"})  # 2 processes, 2 cores
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = read_json(tmp_path / "ddp" / "result.json")
    assert result["status"] == "done" and result["world_size"] == 2 and result["steps"] == SIZE // BATCH
    # Each rank saw half of the images; the bank (rank 0's copy) must hold updates for all of them, so the
    # all-gather worked. Initial bank: rank 0's loss generator, seeded seed * 1000 + 1, normalised Gaussian rows.
    initial = F.normalize(torch.randn(SIZE, 128, generator=torch.Generator().manual_seed(1)), dim=1)
    bank = checkpoint.load(tmp_path / "ddp" / "checkpoints" / "last.pt")["method"]["memory_bank.bank"]
    assert (bank - initial).abs().amax(dim=1).gt(1e-3).all()


# ------------------------------------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_missing_gin_file_and_typo_binding_are_one_line_errors(tmp_path):
    missing = cli("train", str(tmp_path / "nope.gin"))
    _, err = missing.communicate(timeout=PATIENCE_S)
    assert missing.returncode == 2 and "nope.gin" in err and len(err.strip().splitlines()) == 1
    typo = cli("train", "gin/pirl_jigsaw.gin", "--bind", "train.epoch = 3", "--out", str(tmp_path / "x"))
    _, err = typo.communicate(timeout=PATIENCE_S)
    assert typo.returncode == 2 and "epochs" in err and len(err.strip().splitlines()) == 1, err


def test_precise_bn_recomputes_statistics_on_clean_images(tmp_path):
    cfg = config.parse([tiny_config(tmp_path, "train.precise_bn_batches = 2\n")])
    result = run_training(cfg, tmp_path / "run")
    assert result["bn"] == "precise"
    net = load_method(tmp_path / "run")
    # Independent expectation: bn1's running mean is the average over the first two clean batches (BATCH images
    # each, in the shuffled order of seed train.seed * 1000 + 997) of the per-batch channel means of conv1's output
    # on the normalised images.
    from pirl_ablate.data import build_dataset, make_loader, to_device_batch

    dataset = build_dataset("synthetic", "train", configuration=GIN)
    loader = make_loader(dataset, BATCH, seed=997, drop_last=False, num_workers=0)
    loader.set_epoch(0)
    order = torch.cat([index for _, (_, index, _) in zip(range(2), loader)])
    assert not torch.equal(order, torch.arange(2 * BATCH))  # not the dataset order
    images = dataset.images[order]
    x = to_device_batch(images, "cpu", 16)
    b = net.backbone
    with torch.no_grad():
        out = b.conv1((x - b.mean) / b.std)
    expected = torch.stack([out[:BATCH].mean((0, 2, 3)), out[BATCH:].mean((0, 2, 3))]).mean(0)
    assert torch.allclose(b.bn1.running_mean, expected, atol=1e-5)


def test_a_checkpoint_of_the_format_before_methods_fails_with_one_line(tmp_path, capsys):
    run = tmp_path / "old"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"version": 1, "epoch": 1, "network": {}, "network_config": {}, "loss": {}},
               run / "checkpoints" / "last.pt")  # the keys a format-1 checkpoint had
    assert cli_main(["export", str(run), "--out", str(tmp_path / "x.pth")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "format 1" in err and "retrain" in err


def test_every_loop_setting_is_a_train_binding_with_the_loops_default():
    """A loop option is one `TrainSettings` field: the gin edge takes it as `train.<field>`, with the same default,
    and the defaults are the paper's (800 epochs of batch 1024, Section 4) and NPID's kNN (k 200, sigma 0.07)."""
    params = inspect.signature(build.train).parameters
    for f in dataclasses.fields(TrainSettings):
        assert f.name in params, f.name
        if f.default is not dataclasses.MISSING:
            assert params[f.name].default == f.default, f.name
    assert (params["epochs"].default, params["batch_size"].default) == (800, 1024)
    settings = TrainSettings(epochs=800, batch_size=1024, image_size=224)
    assert (settings.monitor_k, settings.monitor_sigma) == (200, 0.07)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.epochs = 1
