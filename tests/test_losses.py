"""Losses against float64 transcriptions of the paper's equations; the memory bank; covariant and supervised heads."""

from __future__ import annotations

import copy
import io
import math
from functools import partial

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from torch import Tensor

from pirl_ablate import config
from pirl_ablate.errors import ConfigError, UnknownNameError
from pirl_ablate.losses import (
    JigsawLoss,
    MemoryBank,
    NPIDLoss,
    PIRLLoss,
    RotationLoss,
    SupervisedLoss,
    bank_contrast,
    build_loss,
    infonce_loss,
    nce,
    nce_loss,
)
from pirl_ablate.models import Backbone, PIRLNet
from pirl_ablate.transforms import View, build_transform
from pirl_ablate.transforms.jigsaw import Jigsaw

D, N, B, P = 40, 16, 6, 4  # dataset size, negatives, batch, patches



@pytest.fixture(scope="module")
def net() -> PIRLNet:
    torch.manual_seed(0)
    return PIRLNet(Backbone("resnet18", width_multiplier=0.5, small_stem=True), num_patches=P)


def batch(step: int) -> tuple[Tensor, View, Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    index = torch.randperm(D, generator=g)[:B]
    return torch.rand(B, 3, 8, 8, generator=g), View(torch.rand(B, P, 3, 8, 8, generator=g)), index


# ---------------------------------------------------------------------------------- the paper's equations, float64
def paper_loss(f, g, bank, index, negatives, lambda_, tau, estimator, z):
    """Eq. 3-5 written out with loops: returns (L, Z_batch) where Z_batch = mean(exp(s / tau)) * |D| over every
    positive and negative score of the batch; `z` is the partition estimate to use (None: Z_batch)."""
    size, num = bank.shape[0], negatives.shape[1]
    terms = [(lambda_, g), (1 - lambda_, f)] if lambda_ > 0 else [(1.0, f)]
    exps = [math.exp(q[b] @ bank[j] / tau) for _, q in terms for b in range(len(index))
            for j in [index[b], *negatives[b]]]
    z_batch = float(np.mean(exps)) * size
    z = z_batch if z is None else z

    def h(s):  # Eq. 3 with exp(s / tau) divided by Z
        p = math.exp(s / tau) / z
        return p / (p + num / size)

    total = 0.0
    for weight, q in terms:
        for b in range(len(index)):
            s_pos = q[b] @ bank[index[b]]
            s_neg = [q[b] @ bank[j] for j in negatives[b]]
            if estimator == "nce":  # Eq. 4
                sample = -math.log(h(s_pos)) - sum(math.log(1 - h(s)) for s in s_neg)
            else:
                e_pos = math.exp(s_pos / tau)
                sample = -math.log(e_pos / (e_pos + sum(math.exp(s / tau) for s in s_neg)))
            total += weight * sample / len(index)
    return total, z_batch


def paper_update(bank, index, f, mu=0.5):
    for b, i in enumerate(index):
        m = mu * bank[i] + (1 - mu) * f[b]
        bank[i] = m / np.linalg.norm(m)


@pytest.mark.parametrize("make, estimator, z", [
    (partial(PIRLLoss, num_negatives=N), "nce", "fixed"),
    (partial(PIRLLoss, num_negatives=N, z_momentum=0.9), "nce", "ema"),
    (partial(PIRLLoss, num_negatives=N), "infonce", "fixed"),
    (partial(PIRLLoss, lambda_=0.0, num_negatives=N), "nce", "fixed"),
    (partial(NPIDLoss, num_negatives=N), "nce", "fixed"),
    (partial(NPIDLoss, num_negatives=N, z_momentum=0.9), "nce", "ema"),
], ids=["pirl-nce", "pirl-nce-ema", "pirl-infonce", "pirl-lambda0", "npid", "npid-ema"])
def test_loss_matches_float64_transcription_of_the_paper(net, monkeypatch, make, estimator, z):
    monkeypatch.setattr(nce, "CHUNK_BYTES", 4 * N * 128 * 4)  # chunks of 4 samples: 4 + 2 for B = 6
    net = net.eval()  # deterministic embeddings, recomputed below for the transcription
    loss = make(estimator=estimator, z=z)
    loss.bind(D, net, None, torch.Generator().manual_seed(1))
    bank = loss.memory_bank.bank.double().numpy().copy()
    z_state = None
    for step in range(2):
        x, view, index = batch(step)
        replay = torch.Generator().set_state(loss.generator.get_state())
        out = loss(net, x, view, index)
        negatives = loss.memory_bank.sample_negatives(index, N, replay).numpy()  # the draws the loss used
        with torch.no_grad():
            f = net.embed_image(x).double().numpy()
            g = net.embed_transformed(view).double().numpy()
        expected, z_batch = paper_loss(f, g, bank, index.numpy(), negatives, loss.lambda_, 0.07, estimator,
                                       z_state)
        assert out.total.item() == pytest.approx(expected, rel=1e-5)
        if estimator == "nce":
            z_used = z_batch if z_state is None else z_state
            assert out.parts["Z"].item() == pytest.approx(z_used, rel=1e-5)
            z_state = z_used if z == "fixed" else 0.9 * z_used + 0.1 * z_batch
            assert loss.Z.item() == pytest.approx(z_state, rel=1e-5)
        paper_update(bank, index.numpy(), f)
        np.testing.assert_allclose(loss.memory_bank.bank.numpy(), bank, atol=1e-6)
    assert ("loss_transformed" in out.parts) == (loss.lambda_ > 0)
    assert {"loss_image", "pos_sim_image"} <= set(out.parts)


def test_npid_never_computes_the_transformed_view(net):
    loss = NPIDLoss(num_negatives=N)
    loss.bind(D, net, None, torch.Generator().manual_seed(1))
    assert not loss.needs_transformed_view and loss.needs_image_view
    x, _, index = batch(0)
    out = loss(net, x, None, index)
    assert set(out.parts) == {"Z", "loss_image", "pos_sim_image"}


def test_gradients_reach_both_heads_and_never_the_bank(net):
    net = copy.deepcopy(net).train()
    loss = PIRLLoss(num_negatives=N)
    loss.bind(D, net, None, torch.Generator().manual_seed(1))
    x, _, index = batch(0)
    jigsaw = Jigsaw(crop_size=None, grid=2, patch_size=None)  # the real transform: 2 x 2 patches of 8 px images
    view = jigsaw(x, torch.Generator().manual_seed(2))
    assert view.data.shape[:2] == (B, P)
    loss(net, x, view, index).total.backward()  # the bank was updated inside; backward must not need it
    for head in (net.image_head, net.patch_head, net.patch_mix, net.backbone.conv1):
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert net.transformed_image_head.weight.grad is None  # image-view head: unused by patch views
    assert not loss.memory_bank.bank.requires_grad and loss.memory_bank.bank.grad is None
    assert list(loss.parameters()) == []
    assert set(loss.state_dict()) == {"Z", "memory_bank.bank"}


@pytest.mark.parametrize("estimator", ["nce", "infonce"])
def test_chunked_gradient_matches_finite_differences(estimator):
    g = torch.Generator().manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(30, 8, generator=g, dtype=torch.float64), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(5, 2, 8, generator=g, dtype=torch.float64), dim=2)
    positive, negatives = torch.randint(0, 30, (5,), generator=g), torch.randint(0, 30, (5, 7), generator=g)
    loss_fn = (partial(nce_loss, tau=0.2, log_z=math.log(3.0), dataset_size=30) if estimator == "nce"
               else partial(infonce_loss, tau=0.2))
    chunk = 2 * 7 * 8 * 8  # two samples per chunk

    def fn(q):
        return bank_contrast(q, bank, positive, negatives, loss_fn, 0.2, chunk_bytes=chunk).loss

    assert torch.autograd.gradcheck(fn, (queries.requires_grad_(),))


# ------------------------------------------------------------------------------------------------- memory bank
def test_bank_starts_normalised_and_follows_the_update_rule_last_duplicate_wins():
    bank = MemoryBank(10, 4, torch.Generator().manual_seed(0), momentum=0.8)
    before = bank.bank.double().numpy().copy()
    np.testing.assert_allclose(np.linalg.norm(before, axis=1), 1.0, rtol=1e-6)
    emb = torch.nn.functional.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    bank.update(torch.tensor([3, 7, 3]), emb)
    expected = before.copy()
    e = emb.double().numpy()
    for i, row in ((7, e[1]), (3, e[2])):  # index 3 occurs twice: its last occurrence is used
        m = 0.8 * before[i] + 0.2 * row
        expected[i] = m / np.linalg.norm(m)
    np.testing.assert_allclose(bank.bank.numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("exclude_positive", [False, True])
def test_negatives_are_in_range_and_uniform(exclude_positive):
    size = 20
    bank = MemoryBank(size, 4, torch.Generator().manual_seed(0), exclude_positive=exclude_positive)
    index = torch.arange(100) % size
    neg = bank.sample_negatives(index, 1000, torch.Generator().manual_seed(2))
    assert neg.shape == (100, 1000) and neg.dtype == torch.long
    assert int(neg.min()) >= 0 and int(neg.max()) < size
    if exclude_positive:
        assert not (neg == index[:, None]).any()
        # relabel each row's draws to 0..size-2 (skipping its positive): uniform over the other entries
        neg = neg - (neg > index[:, None]).long()
    counts = torch.bincount(neg.flatten(), minlength=size).numpy()
    counts = counts[: size - 1] if exclude_positive else counts
    assert chisquare(counts).pvalue > 1e-3


def test_checkpoint_round_trip_restores_bank_and_z(net):
    net = net.eval()
    loss = PIRLLoss(num_negatives=N, z="ema")
    loss.bind(D, net, None, torch.Generator().manual_seed(1))
    for step in range(2):
        loss(net, *batch(step))
    buffer = io.BytesIO()
    torch.save(loss.state_dict(), buffer)
    buffer.seek(0)
    restored = PIRLLoss(num_negatives=N, z="ema")
    restored.bind(D, net, None, torch.Generator().manual_seed(99))  # a different initial bank
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.memory_bank.bank, loss.memory_bank.bank) and torch.equal(restored.Z, loss.Z)
    restored.generator.set_state(loss.generator.get_state())
    a, b = loss(net, *batch(2)), restored(net, *batch(2))  # training continues as if never interrupted
    assert a.total.item() == b.total.item()
    assert torch.equal(restored.memory_bank.bank, loss.memory_bank.bank)


# ------------------------------------------------------------------------------------------- errors and gin
def test_bad_settings_are_one_line_config_errors(net):
    with pytest.raises(ConfigError, match="num_negatives <= 40"):
        PIRLLoss(num_negatives=41).bind(D, net, None, torch.Generator())
    with pytest.raises(ConfigError, match="infonce"):
        PIRLLoss(estimator="infoNCE")
    with pytest.raises(UnknownNameError, match="did you mean `pirl`"):
        build_loss("pirll")
    with pytest.raises(ConfigError, match="MemoryBank.init = 'feature': must be one of random, features"):
        MemoryBank(4, 2, torch.Generator(), init="feature")


def test_build_loss_follows_gin_bindings(net):
    config.parse([], ["build_loss.name = 'npid'", "NPIDLoss.num_negatives = 12", "MemoryBank.momentum = 0.8"])
    loss = build_loss()
    assert isinstance(loss, NPIDLoss) and loss.num_negatives == 12
    loss.bind(D, net, None, torch.Generator())
    assert loss.memory_bank.momentum == 0.8
    config.parse([], [])


def test_npid_pp_is_the_npid_loss_with_more_negatives_as_a_gin_preset():
    for preset, negatives in (("npid_pp.gin", 8192), ("paper/npid_pp.gin", 32000)):
        config.parse([preset])
        loss = build_loss()
        assert type(loss) is NPIDLoss and loss.num_negatives == negatives
    config.parse([], [])


# ----------------------------------------------------------------------------- learnable covariant / supervised
def rotation_batch(g: torch.Generator, size: int = 16):
    """Noise with one bright quadrant, through the real rotation transform: the quarter turn is visible."""
    x = torch.rand(size, 3, 8, 8, generator=g) * 0.3
    x[:, :, :4, :4] += 0.7
    return None, build_transform("rotation")(x, g), None


def jigsaw_batch(g: torch.Generator, size: int = 16):
    """P patches of constant brightness by original position, shuffled by one of 6 permutations."""
    perms = torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2], [3, 2, 1, 0], [2, 3, 0, 1], [0, 2, 1, 3], [3, 1, 2, 0]])
    label = torch.randint(0, 6, (size,), generator=g)
    level = torch.tensor([0.1, 0.4, 0.7, 1.0])[perms[label]]  # (size, P): patch at position j
    patches = level[:, :, None, None, None] * 0.8 + torch.rand(size, P, 3, 4, 4, generator=g) * 0.2
    return None, View(patches, {"perm": perms[label]}, label, 6), None


def supervised_batch(g: torch.Generator, size: int = 16):
    """Four classes of images by brightness."""
    label = torch.randint(0, 4, (size,), generator=g)
    x = label[:, None, None, None] / 4 + torch.rand(size, 3, 8, 8, generator=g) * 0.25
    return x, None, label


@pytest.mark.slow
@pytest.mark.parametrize("make, make_batch, classes", [
    (RotationLoss, rotation_batch, 4), (JigsawLoss, jigsaw_batch, 6), (SupervisedLoss, supervised_batch, 4),
], ids=["rotation", "jigsaw", "supervised"])
def test_classifier_losses_learn_a_tiny_problem_above_chance(net, make, make_batch, classes):
    """The classifier alone learns on a frozen random trunk (training the trunk too costs 30 s here)."""
    net = copy.deepcopy(net).train().requires_grad_(False)
    loss = make()
    loss.bind(D, net, classes, torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(loss.parameters(), lr=3e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        x, view, labels = make_batch(g)
        out = loss(net, x, view, torch.arange(16), labels)
        optimizer.zero_grad()
        out.total.backward()
        optimizer.step()
    with torch.no_grad():
        x, view, labels = make_batch(g, 64)
        acc = loss(net, x, view, torch.arange(64), labels).parts["acc"].item()
    assert acc > 2 / classes  # twice chance
