"""Two real gloo processes: identical momentum queues and key encoders while seeing different data; in-batch
negatives are the global batch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pirl_ablate.transforms import View

WORKER = textwrap.dedent("""
    import sys

    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    rank, init, out, tests = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    sys.path.insert(0, tests)
    from test_negatives import DIM, estimator, tiny_net

    from pirl_ablate.losses.negatives import InBatchNegatives, MomentumQueue
    from pirl_ablate.transforms import View

    class Embed(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, rotated):
            return self.net.embed_image(x), self.net.embed_transformed(View(rotated))

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    net = tiny_net(0)
    # as train.py: DDP does not broadcast buffers, so the query networks' BN statistics differ between ranks
    ddp = DistributedDataParallel(Embed(net), broadcast_buffers=False, find_unused_parameters=True)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    queue = MomentumQueue(size=24, momentum=0.9, shuffle_bn=True)
    queue.bind(100, net, torch.Generator().manual_seed(100 + rank))  # rank-specific draws
    record = {"init": queue.queue.clone(), "theta0": [p.detach().clone() for p in net.parameters()],
              "theta": [], "keys": []}
    data = torch.Generator().manual_seed(200 + rank)
    batch = 4 if rank == 0 else 3  # 7 keys a step: the fourth step wraps around the 24 rows
    for step in range(4):
        x, key_x = torch.rand(2, batch, 3, 8, 8, generator=data)
        index = torch.arange(batch) + 10 * rank
        record["theta"].append([p.detach().clone() for p in net.parameters()])
        if step == 0:  # what the shuffle draws from, and every rank's key images: the parent replays the shuffle
            record["shuffle_generator"] = queue.generator.get_state()
            record["key_images"] = key_x.clone()
        f, g = ddp(x, torch.rot90(x, 1, (2, 3)))
        keys = queue.keys(net, key_x, index)
        c = queue.contrast(torch.stack([g, f], 1), keys, estimator("infonce"))
        optimizer.zero_grad()
        c.loss.mean().backward()
        optimizer.step()
        queue.update(keys, f.detach())
        record["keys"].append(keys.positive.clone())
        if step == 0:
            record["key_encoder_0"] = {k: v.clone() for k, v in queue.encoder.net.state_dict().items()}
    record["queue"], record["pointer"] = queue.queue.clone(), queue.pointer.clone()
    record["key_encoder"] = {k: v.clone() for k, v in queue.encoder.state_dict().items()}
    # in-batch, in eval mode (running BN statistics: each embedding depends on its own image only)
    ddp.eval()
    in_batch = InBatchNegatives()
    x, key_x = torch.rand(2, batch, 3, 8, 8, generator=data)
    record.update(in_batch_net={k: v.clone() for k, v in net.state_dict().items()}, in_batch_x=x, in_batch_key_x=key_x)
    f, g = ddp(x, torch.rot90(x, 1, (2, 3)))
    keys = in_batch.keys(net, key_x, torch.arange(batch))
    q = torch.stack([g, f], 1)
    c = in_batch.contrast(q, keys, estimator("infonce"))
    optimizer.zero_grad()
    c.loss.mean().backward()
    record.update(in_batch_q=q.detach(), in_batch_keys=keys.positive.detach(), in_batch_loss=c.loss.detach(),
                  in_batch_n=keys.negatives.shape[0], in_batch_grad=[p.grad.clone() for p in net.parameters()
                                                                     if p.grad is not None])
    torch.save(record, out)
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_two_gloo_ranks_keep_identical_queues_and_key_encoders(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    init = f"file://{tmp_path / 'rendezvous'}"
    tests = str(Path(__file__).parent)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(rank), init, str(tmp_path / f"rank{rank}.pt"), tests],
                              env=env, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert torch.equal(r0["init"], r1["init"])  # rank 0's initial queue, broadcast
    assert torch.equal(r0["queue"], r1["queue"]) and int(r0["pointer"]) == int(r1["pointer"]) == 28 % 24
    for name, value in r0["key_encoder"].items():  # parameters and BN buffers, bitwise
        assert torch.equal(value, r1["key_encoder"][name]), name
    # FIFO by hand: oldest first, each step drops the oldest and appends rank 0's keys, then rank 1's
    rows = list(r0["init"])
    for step in range(4):
        for record in (r0, r1):
            rows = rows[len(record["keys"][step]):] + list(record["keys"][step])
    pointer = 28 % 24  # the newest key is in the row before the pointer
    assert torch.equal(r0["queue"], torch.stack(rows[-pointer:] + rows[:-pointer]))
    # shuffled BN by hand: rank 0's permutation of the 7 gathered images; rank 0 encodes the first 4 in one batch,
    # rank 1 the other 3 (batch statistics of those); the keys return to their images
    sys.path.insert(0, tests)
    from test_negatives import tiny_net

    key_net = tiny_net(0)
    key_net.load_state_dict(r0["key_encoder_0"])
    everyone = torch.cat([r0["key_images"], r1["key_images"]])
    perm = torch.randperm(7, generator=torch.Generator().set_state(r0["shuffle_generator"]))
    assert not torch.equal(perm, torch.arange(7))
    with torch.no_grad():
        shuffled = torch.cat([key_net.embed_image(everyone[perm[:4]]), key_net.embed_image(everyone[perm[4:]])])
    expected = torch.empty_like(shuffled)
    expected[perm] = shuffled
    torch.testing.assert_close(torch.cat([r0["keys"][0], r1["keys"][0]]), expected, rtol=0, atol=1e-6)
    # theta_k = m theta_k + (1 - m) theta_q at every step, from the initial network
    theta = [t.double() for t in r0["theta0"]]
    for step in range(4):
        theta = [0.9 * t + 0.1 * q.double() for t, q in zip(theta, r0["theta"][step])]
    keys = [v for name, v in r0["key_encoder"].items() if "running" not in name and "num_batches" not in name]
    for got, want in zip(keys, theta):
        np.testing.assert_allclose(got.double().numpy(), want.numpy(), atol=1e-6)
    # in-batch: each rank's negatives are the 7 keys of both ranks but its own
    everyone = torch.cat([r0["in_batch_keys"], r1["in_batch_keys"]]).double()
    assert r0["in_batch_n"] == r1["in_batch_n"] == 7
    for offset, record in ((0, r0), (4, r1)):
        q = record["in_batch_q"].double()
        for b in range(q.shape[0]):
            for k in range(2):
                s = everyone @ q[b, k] / 0.2
                expected = -s[offset + b] + torch.logsumexp(s, 0)
                assert record["in_batch_loss"][b, k].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    # and the gradient DDP averages is that of the mean of the two ranks' losses in one process: the keys' gradient
    # crosses ranks through the gather. Each rank embeds with its own BN running statistics (not broadcast).
    nets = [tiny_net(0), tiny_net(0)]
    for net, record in zip(nets, (r0, r1)):
        net.load_state_dict(record["in_batch_net"])
        net.eval()
    embedded = [(net.embed_image(r["in_batch_x"]), net.embed_transformed(View(torch.rot90(r["in_batch_x"], 1, (2, 3)))),
                 net.embed_image(r["in_batch_key_x"])) for net, r in zip(nets, (r0, r1))]
    keys = torch.cat([k for _, _, k in embedded])
    total = 0
    for offset, (f, g, k) in zip((0, 4), embedded):
        s = torch.einsum("bkd,md->bkm", torch.stack([g, f], 1), keys) / 0.2  # (b, 2, 7)
        own = (offset + torch.arange(len(k)))[:, None, None].expand(-1, 2, 1)
        total = total + (torch.logsumexp(s, -1) - s.gather(-1, own).squeeze(-1)).mean() / 2
    total.backward()
    grads = [p0.grad + p1.grad for p0, p1 in zip(*(n.parameters() for n in nets)) if p0.grad is not None]
    assert len(grads) == len(r0["in_batch_grad"])
    for got0, got1, want in zip(r0["in_batch_grad"], r1["in_batch_grad"], grads):
        assert torch.equal(got0, got1)
        torch.testing.assert_close(got0, want, rtol=1e-4, atol=1e-6)
