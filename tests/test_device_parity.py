"""Device parity: on CUDA when one is present, else on the CPU (the CUDA-only checks then skip).

- every built-in transform (and rotation+jigsaw, and jigsaw with a fixed permutation set) gives the same view on the
  device as on the CPU for the same parameters, drawn once on the CPU (`sample`) and applied on both (`apply`);
  on CUDA a second call runs under `torch.cuda.set_sync_debug_mode("error")` (a host-device sync is an error);
- PIRL's loss (Eq. 5, lambda 0.5) with the memory-bank source's chunked and dense (bf16) scoring on the device,
  against a float64 transcription of Eq. 3-5 on the CPU: loss, gradient, the Z estimate; the memory bank update with
  a repeated index (the last occurrence wins) equals the CPU's;
- a tiny `pirl-ablate train` run (channels_last; bf16 autocast and dense scoring on CUDA, fp32 and chunked scoring
  on the CPU, `MemoryBankNegatives.scoring = "auto"`): its loss falls from the first epoch to the last.

On a GPU machine: `bash benchmarks/gpu_check.sh` runs this file, then the timings (benchmarks/gpu_check.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_pirl import TINY
from torch import Tensor

from pirl_ablate import config
from pirl_ablate.build import run_training
from pirl_ablate.losses import MemoryBank, MemoryBankNegatives, estimator, mean_exp_score
from pirl_ablate.losses.negatives import Keys
from pirl_ablate.runs import RunDir
from pirl_ablate.transforms.compose import Compose
from pirl_ablate.transforms.registry import TRANSFORMS

DEVICE = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
cuda_only = pytest.mark.skipif(DEVICE.type != "cuda", reason="needs a CUDA device")

TRANSFORM_ATOL = 1e-4  # float32 views: the same arithmetic in another order differs by ~1e-7
LOSS_RTOL = {"chunked": 1e-5, "dense": 5e-3}  # bf16 logits are off by up to 2^-9 / tau = 0.028 each
GRAD_RTOL = {"chunked": 1e-5, "dense": 1e-2}
TAU, LAMBDA = 0.07, 0.5  # Eq. 5's temperature and weight of the transformed-view term (paper Section 4)
SOURCE, BATCH = 32, 4  # source images of 32 px (jigsaw and image views fitted to them), 4 per check
BANK, NEGATIVES = 500, 64


def chains() -> dict[str, list[tuple[str, object]]]:
    """name -> parts (name, transform) of every built-in transform, rotation+jigsaw and a 10-permutation jigsaw."""
    sizes = {"jigsaw": {"crop_size": None, "patch_size": None}, "image": {"size": SOURCE}}
    names = sorted(n for n in TRANSFORMS.names()  # the project's own, not the registered Kornia augmentations
                   if TRANSFORMS.get(n).__module__.startswith("pirl_ablate.") and not n.startswith("kornia:"))
    out = {name: [(name, TRANSFORMS.get(name)(**sizes.get(name, {})))] for name in names}
    out["rotation+jigsaw"] = [out["rotation"][0], out["jigsaw"][0]]
    out["jigsaw, |T| = 10"] = [("jigsaw", TRANSFORMS.get("jigsaw")(num_permutations=10, **sizes["jigsaw"]))]
    return out


CHAINS = chains()


def source_images() -> Tensor:
    return torch.rand(BATCH, 3, SOURCE, SOURCE, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", CHAINS)
def test_a_transform_gives_the_cpu_view_on_the_device_for_the_same_draws(name):
    g = torch.Generator().manual_seed(0)
    cpu = source_images()
    dev = cpu.to(DEVICE)
    for _, part in CHAINS[name]:
        params = part.sample(cpu.shape, g, torch.device("cpu"))
        cpu = part.apply(cpu, params)
        dev = part.apply(dev, {k: v.to(DEVICE) for k, v in params.items()})
    assert float((dev.cpu() - cpu).abs().max()) <= TRANSFORM_ATOL


@cuda_only
@pytest.mark.parametrize("name", CHAINS)
def test_a_transform_never_synchronises_host_and_device(name):
    parts = CHAINS[name]
    transform = parts[0][1] if len(parts) == 1 else Compose(parts)
    images, gen = source_images().to(DEVICE), torch.Generator(device=DEVICE).manual_seed(1)
    transform(images, gen)  # the first call's one-time copies (a permutation set) may sync
    torch.cuda.set_sync_debug_mode("error")
    try:
        transform(images, gen)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def loss_problem() -> tuple[MemoryBank, Tensor, Tensor, Tensor]:
    """A bank of BANK entries, queries (B, 2, 128) standing in for [g(v_It), f(v_I)], the batch's bank rows (one
    repeated: the bank update keeps its last occurrence) and their NEGATIVES drawn rows."""
    g = torch.Generator().manual_seed(2)
    bank = MemoryBank(BANK, 128, g)
    queries = F.normalize(torch.randn(BATCH, 2, 128, generator=g), dim=2)
    index = torch.randperm(BANK, generator=g)[:BATCH]
    index[-1] = index[0]
    return bank, queries, index, bank.sample_negatives(index, NEGATIVES, g)


def eq5_float64(queries: Tensor, bank: Tensor, index: Tensor, negatives: Tensor, log_z: float) -> Tensor:
    """Eq. 5 in float64 from the paper: h(s) = p / (p + N / |D|), p = exp(s / tau) / Z, each term's loss
    -log h(s_pos) - sum_j log(1 - h(s_j)); lambda on the transformed-view term (queries[:, 0])."""
    q, m = queries.double(), bank.double()
    s_pos = torch.einsum("bkd,bd->bk", q, m[index])
    s_neg = torch.einsum("bkd,bnd->bkn", q, m[negatives])

    def h(s: Tensor) -> Tensor:
        p = torch.exp(s / TAU - log_z)
        return p / (p + NEGATIVES / BANK)

    terms = -torch.log(h(s_pos)) - torch.log(1 - h(s_neg)).sum(-1)  # (B, 2)
    return LAMBDA * terms[:, 0].mean() + (1 - LAMBDA) * terms[:, 1].mean()


@pytest.mark.parametrize("scoring", ["chunked", "dense"])
def test_pirl_loss_and_gradient_on_the_device_match_float64_eq5(scoring):
    bank, queries, index, negatives = loss_problem()
    log_z = math.log(BANK)
    q64 = queries.double().requires_grad_()
    expected = eq5_float64(q64, bank.bank, index, negatives, log_z)
    expected.backward()

    dev_bank = MemoryBank(BANK, 128, torch.Generator(device=DEVICE).manual_seed(0), device=DEVICE)
    dev_bank.bank.copy_(bank.bank.to(DEVICE))
    q = queries.to(DEVICE).requires_grad_()
    keys = Keys(positive=index.to(DEVICE), negatives=negatives.to(DEVICE), dataset_size=BANK, memory_bank=dev_bank)
    out = MemoryBankNegatives(scoring=scoring).contrast(q, keys, estimator("nce", TAU, log_z, BANK), TAU)
    total = LAMBDA * out.loss[:, 0].mean() + (1 - LAMBDA) * out.loss[:, 1].mean()
    total.backward()
    assert abs(float(total.detach()) - float(expected)) / abs(float(expected)) <= LOSS_RTOL[scoring]
    assert float((q.grad.cpu().double() - q64.grad).norm() / q64.grad.norm()) <= GRAD_RTOL[scoring]


def test_the_z_estimate_and_the_bank_update_on_the_device_match_the_cpu():
    bank, queries, index, negatives = loss_problem()
    q64, m64 = queries.double(), bank.bank.double()
    scores = torch.cat([torch.einsum("bkd,bd->bk", q64, m64[index]).unsqueeze(-1),
                        torch.einsum("bkd,bnd->bkn", q64, m64[negatives])], dim=-1)
    expected_z = float(torch.exp(scores / TAU).mean())
    dev = {"bank": bank.bank.to(DEVICE), "index": index.to(DEVICE), "negatives": negatives.to(DEVICE)}
    z = float(mean_exp_score(queries.to(DEVICE), dev["bank"], dev["index"], dev["negatives"], TAU))
    assert z == pytest.approx(expected_z, rel=LOSS_RTOL["chunked"])

    dev_bank = MemoryBank(BANK, 128, torch.Generator(device=DEVICE).manual_seed(0), device=DEVICE)
    dev_bank.bank.copy_(dev["bank"])
    expected = bank.bank.clone()
    for i, row in zip(index.tolist(), queries[:, 1]):  # m_I <- normalise(0.5 m_I + 0.5 f), in order: the last wins
        expected[i] = F.normalize(0.5 * bank.bank[i] + 0.5 * row, dim=0)
    dev_bank.update(dev["index"], queries[:, 1].to(DEVICE))
    assert float((dev_bank.bank.cpu() - expected).abs().max()) <= 1e-6


TRAIN_CONFIG = TINY + """
train.method = "pirl"
train.monitor_every = 0
train.channels_last = True
train.epochs = 4
MemoryBankNegatives.scoring = "auto"
"""

def test_a_tiny_training_run_on_the_device_lowers_its_loss(tmp_path: Path):
    """bf16 autocast on CUDA; fp32 on the CPU, where torch's bf16 autocast backward of a plain ResNet-18 is not
    reproducible run to run on AVX512-BF16 CPUs (benchmarks/RESULTS.md, "GPU")."""
    precision = "bf16" if DEVICE.type == "cuda" else "fp32"
    path = tmp_path / "tiny_run.gin"
    path.write_text(TRAIN_CONFIG + f"train.device = '{DEVICE}'\ntrain.precision = '{precision}'\n")
    result = run_training(config.parse([path]), tmp_path / "run")
    losses = [row["loss"] for row in RunDir(tmp_path / "run").metrics()]
    assert result["precision"] == precision
    assert all(map(math.isfinite, losses)) and losses[-1] < losses[0]
