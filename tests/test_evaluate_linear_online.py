"""The online linear evaluation (pirl_ablate.evaluate.linear_online): two real gloo ranks train one set of heads,
the test accuracy summed over ranks is the one a float64 transcription of BatchNorm2d + Linear gives on the whole
test set, and `pirl-ablate eval` under a two-process launcher trains data parallel with rank 0 writing."""

from __future__ import annotations

import textwrap

import pytest
import torch
from gloo import two_ranks
from tiny_pirl import untrained

from pirl_ablate import config
from pirl_ablate.build import run_training
from pirl_ablate.runs import read_json

WORKER = textwrap.dedent("""
    import os
    import sys

    import torch
    import torch.distributed as dist

    from pirl_ablate.evaluate.linear_online import pooled_maps, train_online_linear
    from pirl_ablate.models import Backbone

    rank, init, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    torch.manual_seed(0)  # the same random trunk on both ranks
    backbone = Backbone("resnet18", width_multiplier=0.5, small_stem=True)
    data = torch.Generator().manual_seed(1)

    def images(n):  # class c: channel c bright, the other dark, plus noise
        labels = torch.arange(n) % 2
        x = 0.1 * torch.rand(n, 3, 16, 16, generator=data)
        x[torch.arange(n), labels] += 0.8
        return x, labels

    train_x, train_y = images(32)
    test_x, test_y = images(20)
    layers = ("res4", "res5")

    def train_batches(epoch):  # the same shuffle on both ranks, each its half, 4 images per rank and step
        order = torch.randperm(32, generator=torch.Generator().manual_seed(epoch))[rank::2]
        return [(train_x[order[i:i + 4]], train_y[order[i:i + 4]]) for i in range(0, 16, 4)]

    shard = torch.arange(rank, 20, 2)
    metrics, dims, heads = train_online_linear(
        backbone, layers, 2, train_batches, [(test_x[shard], test_y[shard])], input_size=16, pooling="grid",
        epochs=10, batch_size=8, lr_per_256=3.2, milestones=(8,))
    saved = {"metrics": metrics, "dims": dims, "state": heads.state_dict(),
             "test": pooled_maps(backbone.eval(), test_x, layers, "grid"), "test_y": test_y}

    # the same through `pirl-ablate eval` under a launcher (the group exists: eval takes it, and ends it)
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))  # as torchrun sets them
    from pirl_ablate.cli import main

    saved["code"] = main(["-q", "eval", RUN, "--protocol", "linear", "--layers", "res4,res5",
                          "--bind", "linear_eval.mode = 'online'", "--bind", "linear_eval.pooling = 'grid'",
                          "--bind", "linear_eval.epochs = 2", "--bind", "linear_eval.batch_size = 8",
                          "--bind", "linear_eval.milestones = [1]", "--bind", "evaluation.device = 'cpu'"])
    torch.save(saved, out)
""")


@pytest.mark.slow
def test_two_gloo_ranks_train_one_set_of_heads_and_count_every_test_image(tmp_path):
    """Two ranks train the heads directly, then run `pirl-ablate eval --protocol linear` as torchrun would."""
    cfg = tmp_path / "tiny.gin"
    cfg.write_text(untrained(size=16, train_image_size=16, negatives=8))
    run = tmp_path / "run"
    run_training(config.parse([str(cfg)]), run)
    r0, r1 = two_ranks(WORKER.replace("RUN", repr(str(run))), tmp_path)
    assert r0["state"].keys() == r1["state"].keys()
    for key in r0["state"]:  # DDP keeps the replicas equal (BatchNorm buffers: rank 0's, broadcast)
        torch.testing.assert_close(r0["state"][key], r1["state"][key], rtol=0, atol=1e-6)
    assert r0["metrics"] == r1["metrics"]
    # grid pooling: res4 128 x 4^2, side round(sqrt(9000 / 128)) = 8 capped at the map's 4; res5 256, global
    assert r0["dims"] == {"res4": 128 * 4 * 4, "res5": 256}
    for layer in ("res4", "res5"):
        s = {k.split(".", 2)[2]: v.double() for k, v in r0["state"].items() if k.startswith(f"heads.{layer}.")}
        x = r0["test"][layer].double()  # (20, C, h, w)
        shape = (1, -1, 1, 1)
        normed = (x - s["bn.running_mean"].view(shape)) / (s["bn.running_var"].view(shape) + 1e-5).sqrt()
        logits = (normed * s["bn.weight"].view(shape) + s["bn.bias"].view(shape)).flatten(1) @ \
            s["linear.weight"].T + s["linear.bias"]
        expected = 100.0 * (logits.argmax(1) == r0["test_y"]).double().mean().item()
        assert r0["metrics"][layer]["top1"] == pytest.approx(expected, abs=100 / 20 + 1e-9)
        assert r0["metrics"][layer]["top1"] >= 90.0  # one bright channel per class: separable

    # through the CLI: both ranks exit 0, rank 0 wrote one result that records both processes
    assert r0["code"] == r1["code"] == 0
    result = read_json(run / "evals" / "linear-synthetic.json")
    assert result["mode"] == "online" and result["world_size"] == 2
    assert result["num_train"] == 16 and result["hyperparameters"]["batch_size"] == 8
    assert set(result["metrics"]) == {"res4", "res5"}
    assert all(0.0 <= m["top1"] <= 100.0 for m in result["metrics"].values())



REFUSED = textwrap.dedent("""
    import contextlib
    import io
    import os
    import sys

    import torch

    rank, init, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=os.environ["PIRL_TEST_PORT"])
    from pirl_ablate.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["-q", "eval", RUN, "--protocol", "linear", "--bind", "linear_eval.mode = 'online'",
                     "--bind", "evaluation.device = 'cpu'"])
    torch.save({"code": code, "stderr": err.getvalue()}, out)
""")


def test_a_data_parallel_evaluation_refused_its_lock_ends_on_every_rank(tmp_path):
    """Another process evaluates the run: rank 0 is refused the lock, and rank 1 ends too (exit 2, one line naming
    rank 0's reason) instead of waiting for rank 0 in the protocol's first collective."""
    import socket

    from pirl_ablate.locks import eval_lock

    cfg = tmp_path / "tiny.gin"
    cfg.write_text(untrained(size=16, train_image_size=16, negatives=8))
    run = tmp_path / "run"
    run_training(config.parse([str(cfg)]), run)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with eval_lock(run, "linear"), pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIRL_TEST_PORT", str(port))
        r0, r1 = two_ranks(REFUSED.replace("RUN", repr(str(run))), tmp_path)
    assert r0["code"] == r1["code"] == 2
    lines0, lines1 = r0["stderr"].strip().splitlines(), r1["stderr"].strip().splitlines()
    assert len(lines0) == len(lines1) == 1, (lines0, lines1)
    assert "its linear evaluation is run by" in lines0[0]
    assert "rank 0 did not start the evaluation" in lines1[0] and "its linear evaluation is run by" in lines1[0]
    assert not (run / "evals" / "linear-synthetic.json").exists()


def test_the_linear_protocol_runs_over_several_processes_in_its_online_mode_only():
    """Which protocols a sweep job of several tasks runs on every task (the others run on rank 0 alone):
    detection always, linear only when bound to the online mode (its cached mode refuses a process group)."""
    from pirl_ablate.gin_edge import data_parallel_protocols

    protocols = ["knn", "linear", "svm", "detection"]
    assert data_parallel_protocols(protocols) == {"detection"}
    assert data_parallel_protocols(protocols, ["linear_eval.mode = 'online'"]) == {"linear", "detection"}
