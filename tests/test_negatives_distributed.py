"""Two real gloo processes training PIRL under DDP: identical momentum queues and key encoders while seeing different
data (FIFO order by hand, rank 0's keys before rank 1's); in-batch negatives are the global batch; the shuffled-BN
keys are those of a replay of MoCo's shuffle in one process."""

from __future__ import annotations

import textwrap

import pytest
import torch
from gloo import two_ranks
from torch import nn

# A key network whose output depends on its batch's BN statistics: a key is only right under the right split.
ENCODER = "nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), " \
          "nn.Linear(4, 5))"
SHUFFLE_SEED = 7

WORKER = textwrap.dedent("""
    import sys

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from pirl_ablate.losses import InBatchNegatives, MomentumQueue
    from pirl_ablate.methods import PIRL
    from pirl_ablate.models import Backbone
    from pirl_ablate.transforms import build_transform

    rank, init, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)


    def method(source):
        torch.manual_seed(0)
        draws = torch.Generator().manual_seed(100 + rank)  # rank-specific draws: states must still agree
        net = PIRL(Backbone("resnet18", width_multiplier=0.5, small_stem=True), None, build_transform("rotation"),
                   build_transform("image", size=8, scale=(0.5, 1.0)), generator=draws, negatives=source,
                   estimator="nce", embed_dim=16, tau=0.2)
        # as train.py: DDP does not broadcast buffers, so the query networks' BN statistics differ between ranks
        return net, DistributedDataParallel(net, broadcast_buffers=False)


    def train(net, ddp, steps, record):
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        data = torch.Generator().manual_seed(200 + rank)
        views = torch.Generator().manual_seed(300 + rank)
        update = net.negatives.update
        def recording_update(keys, f):  # this rank's keys of the step, before the source gathers them
            record["keys"].append(keys.write.clone() if keys.write is not None else keys.negatives.detach().clone())
            update(keys, f)
        net.negatives.update = recording_update
        batch = 4 if rank == 0 else 3  # 7 keys a step: the fourth step wraps around the 24 rows
        for _ in range(steps):
            x = torch.rand(batch, 3, 8, 8, generator=data)
            index = torch.arange(batch) + 10 * rank
            loss, parts = ddp(x, index, index, views)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            record["Z"].append(parts["Z"])
        record["weights"] = {k: v.clone() for k, v in net.state_dict().items()}


    queue = MomentumQueue(size=24, momentum=0.9, shuffle_bn=True)
    net, ddp = method(queue)
    record = {"init": queue.queue.clone(), "keys": [], "Z": []}
    train(net, ddp, 4, record)
    in_batch = {"keys": [], "Z": []}
    net, ddp = method(InBatchNegatives())
    train(net, ddp, 2, in_batch)

    # shuffled BN: rank 0 holds 4 images, rank 1 holds 3; the permutation is drawn on rank 0
    from torch import nn
    from pirl_ablate.models import MomentumEncoder
    torch.manual_seed(0)
    encoder = ENCODER_EXPR
    images = torch.rand(4 if rank == 0 else 3, 3, 6, 6, generator=torch.Generator().manual_seed(400 + rank))
    shuffled = MomentumEncoder(encoder, momentum=0.9, shuffle_bn=True)
    plain = MomentumEncoder(encoder, momentum=0.9, shuffle_bn=False)
    bn = {"shuffled": shuffled(images, torch.Generator().manual_seed(SEED_EXPR + rank)),
          "plain": plain(images, torch.Generator()), "images": images,
          "weights": encoder.state_dict(), "running_mean": shuffled.net[1].running_mean.clone()}
    torch.save({"queue": record, "in_batch": in_batch, "bn": bn}, out)
    dist.destroy_process_group()
""").replace("ENCODER_EXPR", ENCODER).replace("SEED_EXPR", str(SHUFFLE_SEED))


def per_rank(name: str) -> bool:
    """The query network's own BN statistics, which DDP leaves per rank (broadcast_buffers=False); the key
    encoder's ("negatives.encoder...") are rank 0's everywhere."""
    return not name.startswith("negatives.") and ("running" in name or name.endswith("num_batches_tracked"))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> tuple[dict, dict]:
    """What the two ranks of WORKER saved (one run for the tests of this module)."""
    return two_ranks(WORKER, tmp_path_factory.mktemp("gloo"))


@pytest.mark.slow
def test_two_gloo_ranks_keep_identical_queues_key_encoders_and_weights(ranks):
    r0, r1 = ranks
    q0, q1 = r0["queue"], r1["queue"]
    assert torch.equal(q0["init"], q1["init"])  # rank 0's initial queue, broadcast
    for name, value in q0["weights"].items():  # network, queue, pointer and key encoder (parameters and BN buffers)
        if not per_rank(name):
            assert torch.equal(value, q1["weights"][name]), name
    assert all(torch.equal(a, b) for a, b in zip(q0["Z"], q1["Z"]))
    assert int(q0["weights"]["negatives.pointer"]) == 28 % 24
    # FIFO by hand: oldest first, each step drops the oldest and appends rank 0's keys, then rank 1's
    rows = list(q0["init"])
    for step in range(4):
        for record in (q0, q1):
            rows = rows[len(record["keys"][step]):] + list(record["keys"][step])
    pointer = 28 % 24  # the newest key is in the row before the pointer
    assert torch.equal(q0["weights"]["negatives.queue"], torch.stack(rows[-pointer:] + rows[:-pointer]))
    # in-batch: every rank scores against the global batch of 7 keys, rank 0's first; the weights stay equal
    b0, b1 = r0["in_batch"], r1["in_batch"]
    for step in range(2):
        assert b0["keys"][step].shape == (7, 16) and torch.equal(b0["keys"][step], b1["keys"][step])
    for name, value in b0["weights"].items():
        if not per_rank(name):
            assert torch.equal(value, b1["weights"][name]), name


@pytest.mark.slow
def test_shuffled_bn_keys_are_a_replay_of_moco_shuffle_in_one_process(ranks):
    """MoCo's shuffling BN by hand: the 7 images of both ranks in rank order, permuted with rank 0's draw; the first
    4 shuffled images are encoded as one batch (rank 0's share), the last 3 as another (rank 1's), in training mode;
    image i's key is the row of its shuffled position. Without the shuffle each rank's keys use its own batch."""
    r0, r1 = (r["bn"] for r in ranks)
    net = eval(ENCODER, {"nn": nn}).double()
    net.load_state_dict(r0["weights"])
    everyone = torch.cat([r0["images"], r1["images"]]).double()
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(SHUFFLE_SEED))  # rank 0's generator
    with torch.no_grad():
        shares = [net(everyone[perm[:4]]), net(everyone[perm[4:]])]  # batch statistics of each share
        expected = torch.empty(7, 5, dtype=torch.float64)
        for j, i in enumerate(perm.tolist()):
            expected[i] = shares[0][j] if j < 4 else shares[1][j - 4]
        plain = [net(r0["images"].double()), net(r1["images"].double())]
    got = torch.cat([r0["shuffled"], r1["shuffled"]]).double()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([r0["plain"], r1["plain"]]).double(), torch.cat(plain), atol=1e-5, rtol=1e-5)
    assert (got - torch.cat(plain)).abs().max() > 1e-3  # the split changes the keys: the replay is not vacuous
    assert torch.equal(r0["running_mean"], torch.zeros(4)) and torch.equal(r1["running_mean"], torch.zeros(4))
