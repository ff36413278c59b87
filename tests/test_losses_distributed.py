"""Two real gloo processes on the CPU keep bitwise identical memory banks and Z while seeing different data."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from gloo import two_ranks

WORKER = textwrap.dedent("""
    import sys

    import torch
    import torch.distributed as dist

    from pirl_ablate.losses import MemoryBank
    from pirl_ablate.methods import PIRL
    from pirl_ablate.models import Backbone
    from pirl_ablate.transforms import View


    class GivenView:  # hands the method the patches of this step
        produces_patches = True
        view = None

        def __call__(self, images, generator):
            return self.view


    rank, init, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    torch.manual_seed(0)
    draws = torch.Generator().manual_seed(100 + rank)  # rank-specific draws
    given = GivenView()
    method = PIRL(Backbone("resnet18", width_multiplier=0.5, small_stem=True), MemoryBank(30, 128, draws), given,
                  generator=draws, num_negatives=8, num_patches=4)
    record = {"init": method.memory_bank.bank.clone(), "index": [], "f": [], "Z": []}
    data = torch.Generator().manual_seed(200 + rank)
    # the "features" initialisation: each rank fills its share (index 4 in both), unnormalised rows
    record["fill_index"] = torch.arange(0, 5) if rank == 0 else torch.arange(4, 9)
    record["fill"] = 3 * torch.randn(5, 128, generator=data)
    method.memory_bank.fill(record["fill_index"], record["fill"])
    record["filled"] = method.memory_bank.bank.clone()
    for step in range(3):
        # different batch sizes; index step + 3 is in both ranks' batches
        index = torch.tensor([step, step + 1, step + 2, step + 3] if rank == 0 else [step + 3, 10 + step, 20 + step])
        x = torch.rand(len(index), 3, 8, 8, generator=data)
        patches = torch.rand(len(index), 4, 3, 8, 8, generator=data)
        with torch.no_grad():
            f = method.embed_image(x)  # train-mode BN: the same f the loss computes
        given.view = View(patches)
        method(x, index, index, torch.Generator())[0].backward()
        record["index"].append(index)
        record["f"].append(f)
        record["Z"].append(method.partition.Z.clone())
    record["bank"] = method.memory_bank.bank.clone()
    torch.save(record, out)
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_two_gloo_ranks_keep_identical_banks(tmp_path):
    r0, r1 = two_ranks(WORKER, tmp_path)
    assert torch.equal(r0["init"], r1["init"])  # rank 0's initialisation, broadcast
    assert torch.equal(r0["filled"], r1["filled"]) and torch.equal(r0["bank"], r1["bank"])  # bitwise identical
    assert all(torch.equal(a, b) for a, b in zip(r0["Z"], r1["Z"]))
    # fill: both ranks' rows replace the entries outright, normalised; index 4 takes rank 1's (the last) row
    bank = r0["init"].double().numpy()
    for record in (r0, r1):
        for i, row in zip(record["fill_index"].tolist(), record["fill"].double().numpy()):
            bank[i] = row / np.linalg.norm(row)
    np.testing.assert_allclose(r0["filled"].numpy(), bank, atol=1e-6)
    # then every step applies both ranks' rows, rank 0 then rank 1; a repeated index takes the last
    for step in range(3):
        latest = {}
        for record in (r0, r1):
            for i, f in zip(record["index"][step].tolist(), record["f"][step].double().numpy()):
                latest[i] = f
        for i, f in latest.items():
            m = 0.5 * bank[i] + 0.5 * f
            bank[i] = m / np.linalg.norm(m)
    np.testing.assert_allclose(r0["bank"].numpy(), bank, atol=1e-6)
