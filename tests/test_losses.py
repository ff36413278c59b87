"""Losses against float64 transcriptions of the paper's equations; the memory bank; covariant and supervised heads."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from torch import Tensor

from pirl_ablate import config
from pirl_ablate.build import configured_method
from pirl_ablate.errors import ConfigError, UnknownNameError
from pirl_ablate.losses import MemoryBank, nce
from pirl_ablate.methods import NPID, PIRL, JigsawMethod, Method, RotationMethod, Supervised, build_method
from pirl_ablate.models import Backbone
from pirl_ablate.transforms import View, build_transform
from pirl_ablate.transforms.jigsaw import Jigsaw as JigsawTransform

D, N, B, P = 40, 16, 6, 4  # dataset size, negatives, batch, patches


class GivenView:
    """A transform that returns the view the test hands it (`self.view`), to feed a method chosen patches."""

    produces_patches = True

    def __init__(self, num_classes: int | None = None):
        self.num_classes, self.view = num_classes, None

    def __call__(self, images: Tensor, generator: torch.Generator) -> View:
        return self.view


def tiny_backbone() -> Backbone:
    torch.manual_seed(0)
    return Backbone("resnet18", width_multiplier=0.5, small_stem=True)


def make(cls: type[Method], transform=None, bank_seed: int = 1, **kw) -> Method:
    """`cls` (PIRL or NPID) on the tiny trunk, a D-entry bank and its own generator (seed 1)."""
    bank = MemoryBank(D, 128, torch.Generator().manual_seed(bank_seed))
    generator = torch.Generator().manual_seed(1)
    if cls is NPID:
        return NPID(tiny_backbone(), bank, generator=generator, **kw)
    return PIRL(tiny_backbone(), bank, transform or GivenView(), generator=generator, num_patches=P, **kw)


def batch(step: int) -> tuple[Tensor, View, Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    index = torch.randperm(D, generator=g)[:B]
    return torch.rand(B, 3, 8, 8, generator=g), View(torch.rand(B, P, 3, 8, 8, generator=g)), index


def step(method: Method, x: Tensor, view: View, index: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    if method.transform is not None:
        method.transform.view = view
    return method(x, index, index, torch.Generator())


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


@pytest.mark.parametrize("cls, kw, estimator, z", [
    (PIRL, {}, "nce", "fixed"),
    (PIRL, {"z_momentum": 0.9}, "nce", "ema"),
    (PIRL, {}, "infonce", "fixed"),
    (PIRL, {"lambda_": 0.0}, "nce", "fixed"),
    (NPID, {}, "nce", "fixed"),
    (NPID, {"z_momentum": 0.9}, "nce", "ema"),
], ids=["pirl-nce", "pirl-nce-ema", "pirl-infonce", "pirl-lambda0", "npid", "npid-ema"])
def test_loss_matches_float64_transcription_of_the_paper(monkeypatch, cls, kw, estimator, z):
    monkeypatch.setattr(nce, "CHUNK_BYTES", 4 * N * 128 * 4)  # chunks of 4 samples: 4 + 2 for B = 6
    method = make(cls, num_negatives=N, estimator=estimator, z=z, **kw).eval()  # deterministic embeddings
    bank = method.memory_bank.bank.double().numpy().copy()
    z_state = None
    for i in range(2):
        x, view, index = batch(i)
        replay = torch.Generator().set_state(method.generator.get_state())
        loss, parts = step(method, x, view, index)
        negatives = method.memory_bank.sample_negatives(index, N, replay).numpy()  # the draws the method used
        with torch.no_grad():
            f = method.embed_image(x).double().numpy()
            g = method.embed_transformed(view).double().numpy() if method.lambda_ > 0 else None
        expected, z_batch = paper_loss(f, g, bank, index.numpy(), negatives, method.lambda_, 0.07, estimator,
                                       z_state)
        assert loss.item() == pytest.approx(expected, rel=1e-5)
        assert parts["mean_exp"].item() == pytest.approx(z_batch / D, rel=1e-5)
        neg_f = np.mean([f[b] @ bank[j] for b in range(B) for j in negatives[b]])
        assert parts["neg_sim_image"].item() == pytest.approx(neg_f, rel=1e-4, abs=1e-6)
        assert parts["pos_sim_image"].item() == pytest.approx(np.mean([f[b] @ bank[index[b]] for b in range(B)]),
                                                              rel=1e-4, abs=1e-6)
        if estimator == "nce":
            z_used = z_batch if z_state is None else z_state
            assert parts["Z"].item() == pytest.approx(z_used, rel=1e-5)
            z_state = z_used if z == "fixed" else 0.9 * z_used + 0.1 * z_batch
            assert method.partition.Z.item() == pytest.approx(z_state, rel=1e-5)
        paper_update(bank, index.numpy(), f)
        np.testing.assert_allclose(method.memory_bank.bank.numpy(), bank, atol=1e-6)
    assert ("loss_transformed" in parts) == ("neg_sim_transformed" in parts) == (method.lambda_ > 0)
    assert {"loss_image", "pos_sim_image"} <= set(parts)


def test_npid_never_makes_or_embeds_the_transformed_view():
    method = make(NPID, num_negatives=N)
    assert method.views == ("image",) and method.transform is None
    assert set(dict(method.named_children())) == {"backbone", "f", "memory_bank", "partition", "negatives"}  # no g
    x, _, index = batch(0)
    _, parts = method(x, index, index, torch.Generator())
    assert set(parts) == {"Z", "loss_image", "pos_sim_image", "neg_sim_image", "mean_exp"}


def test_gradients_reach_both_heads_and_never_the_bank():
    jigsaw = JigsawTransform(crop_size=None, grid=2, patch_size=None)  # the real transform: 2 x 2 patches of 8 px
    method = make(PIRL, transform=jigsaw, num_negatives=N).train()
    x, _, index = batch(0)
    loss, _ = method(x, index, index, torch.Generator().manual_seed(2))
    loss.backward()  # the bank was updated inside; backward must not need it
    for head in (method.f, method.g.patch, method.g.mix, method.backbone.conv1):
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert set(dict(method.named_children())) == {"backbone", "f", "g", "memory_bank", "partition", "negatives"}
    assert all(p.grad is not None for p in method.parameters())  # every parameter used: DDP needs no unused check
    assert not method.memory_bank.bank.requires_grad and method.memory_bank.bank.grad is None
    outside = {k for k in method.state_dict() if not k.startswith(("backbone.", "f.", "g."))}
    assert outside == {"partition.Z", "memory_bank.bank"}


def test_pirl_with_an_image_transform_builds_an_image_head_for_g():
    method = PIRL(tiny_backbone(), MemoryBank(D, 16, torch.Generator()), build_transform("rotation"),
                  generator=torch.Generator(), num_negatives=N, embed_dim=16)
    assert isinstance(method.g, torch.nn.Linear) and method.g.in_features == method.feature_dim
    x, _, index = batch(0)
    loss, parts = method(x, index, index, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and method.embed_transformed(View(x)).shape == (B, 16)


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


def test_checkpoint_round_trip_restores_bank_and_z():
    method = make(PIRL, num_negatives=N, z="ema").eval()
    for i in range(2):
        step(method, *batch(i))
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    restored = make(PIRL, bank_seed=99, num_negatives=N, z="ema").eval()  # a different initial bank
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.memory_bank.bank, method.memory_bank.bank)
    assert torch.equal(restored.partition.Z, method.partition.Z)
    restored.generator.set_state(method.generator.get_state())
    a, b = step(method, *batch(2))[0], step(restored, *batch(2))[0]  # training continues as if never interrupted
    assert a.item() == b.item()
    assert torch.equal(restored.memory_bank.bank, method.memory_bank.bank)


# ------------------------------------------------------------------------------------------- errors and gin
def test_bad_settings_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="num_negatives <= 40"):
        make(PIRL, num_negatives=41)
    with pytest.raises(ConfigError, match="infonce"):
        make(PIRL, estimator="infoNCE")
    with pytest.raises(UnknownNameError, match="did you mean `pirl`"):
        build_method("pirll")
    with pytest.raises(ConfigError, match="MemoryBank.init = 'feature': must be one of random, features"):
        MemoryBank(4, 2, torch.Generator(), init="feature")
    with pytest.raises(ConfigError, match="patch views with a label"):
        JigsawMethod(tiny_backbone(), build_transform("rotation"), generator=torch.Generator())


def test_configured_method_follows_gin_bindings():
    config.parse([], ["train.method = 'npid'", "NPID.num_negatives = 12", "MemoryBank.momentum = 0.8",
                      "Backbone.arch = 'resnet18'", "Backbone.width_multiplier = 0.5", "heads.embed_dim = 32"])
    method = configured_method(config.bound_kwargs("train")["method"], D, None, "jigsaw", None, torch.Generator(),
                               torch.device("cpu"))
    assert type(method) is NPID and method.num_negatives == 12 and method.embed_dim == 32
    assert method.memory_bank.momentum == 0.8 and method.memory_bank.bank.shape == (D, 32)
    assert method.backbone.arch == "resnet18" and method.transform is None
    config.parse([], [])


def test_npid_pp_is_the_npid_method_with_more_negatives_as_a_gin_preset():
    for preset, negatives in (("npid_pp.gin", 8192), ("paper/npid_pp.gin", 32000)):
        config.parse([preset])
        assert config.bound_kwargs("train")["method"] == "npid"
        assert config.bound_kwargs("NPID")["num_negatives"] == negatives
    method = configured_method("npid", 32000, None, None, None, torch.Generator(), torch.device("cpu"))
    assert type(method) is NPID and method.num_negatives == 32000  # (the last preset parsed)
    config.parse([], [])


# ----------------------------------------------------------------------------- learnable covariant / supervised
def rotation_batch(g: torch.Generator, size: int = 16):
    """Noise with one bright quadrant, for the real rotation transform: the quarter turn is visible."""
    x = torch.rand(size, 3, 8, 8, generator=g) * 0.3
    x[:, :, :4, :4] += 0.7
    return x, None, None


def jigsaw_batch(g: torch.Generator, size: int = 16):
    """P patches of constant brightness by original position, shuffled by one of 6 permutations."""
    perms = torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2], [3, 2, 1, 0], [2, 3, 0, 1], [0, 2, 1, 3], [3, 1, 2, 0]])
    label = torch.randint(0, 6, (size,), generator=g)
    level = torch.tensor([0.1, 0.4, 0.7, 1.0])[perms[label]]  # (size, P): patch at position j
    patches = level[:, :, None, None, None] * 0.8 + torch.rand(size, P, 3, 4, 4, generator=g) * 0.2
    return torch.rand(size, 3, 8, 8, generator=g), View(patches, {"perm": perms[label]}, label, 6), None


def supervised_batch(g: torch.Generator, size: int = 16):
    """Four classes of images by brightness."""
    label = torch.randint(0, 4, (size,), generator=g)
    x = label[:, None, None, None] / 4 + torch.rand(size, 3, 8, 8, generator=g) * 0.25
    return x, None, label


@pytest.mark.slow
@pytest.mark.parametrize("build, make_batch, classes", [
    (lambda: RotationMethod(tiny_backbone(), build_transform("rotation"), generator=torch.Generator().manual_seed(0)),
     rotation_batch, 4),
    (lambda: JigsawMethod(tiny_backbone(), GivenView(num_classes=6), generator=torch.Generator().manual_seed(0),
                          num_patches=P), jigsaw_batch, 6),
    (lambda: Supervised(tiny_backbone(), generator=torch.Generator().manual_seed(0), num_classes=4),
     supervised_batch, 4),
], ids=["rotation", "jigsaw", "supervised"])
def test_classifier_methods_learn_a_tiny_problem_above_chance(build, make_batch, classes):
    """The classifier alone learns on a frozen random trunk (training the trunk too costs 30 s here)."""
    method = build().train()
    method.backbone.requires_grad_(False)
    assert [name for name, _ in method.named_children()] == ["backbone", "classifier"]
    optimizer = torch.optim.Adam(method.classifier.parameters(), lr=3e-2)
    g = torch.Generator().manual_seed(1)

    def run(size: int):
        x, view, labels = make_batch(g, size)
        if isinstance(method.transform, GivenView):
            method.transform.view = view
        return method(x, torch.arange(size), labels, g)

    for _ in range(20):
        loss, _ = run(16)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        acc = run(64)[1]["acc"].item()
    assert acc > 2 / classes  # twice chance
