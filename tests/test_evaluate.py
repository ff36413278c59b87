"""Evaluation protocol cores on plain tensors and a tiny backbone: linear probe, kNN, invariance, subsets, cache."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pirl_ablate.errors import ConfigError
from pirl_ablate.evaluate.features import (
    FeatureCache,
    cached_features,
    extract_features,
    fingerprint,
    pool_feature_map,
    pool_map,
    pooled_grid,
)
from pirl_ablate.evaluate.invariance import invariance_distances, plot_invariance_histograms, summarise
from pirl_ablate.evaluate.knn import knn_scores
from pirl_ablate.evaluate.linear import topk_accuracy, train_linear_probe
from pirl_ablate.evaluate.semisup import balanced_subset, fraction_name
from pirl_ablate.losses import MemoryBank
from pirl_ablate.methods import PIRL
from pirl_ablate.models import Backbone
from pirl_ablate.models.precise_bn import precise_bn
from pirl_ablate.transforms import Jigsaw, View


def clusters(n: int, classes: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs (unit noise) around class centres 6 apart: linearly separable up to ~1e-3 overlap."""
    gen = torch.Generator().manual_seed(seed)
    centres = 6.0 * torch.eye(classes, dim)
    y = torch.arange(n) % classes
    return centres[y] + torch.randn(n, dim, generator=gen), y


# ------------------------------------------------------------------------------------------------- linear probe
def test_linear_probe_separable_features_near_perfect():
    x, y = clusters(800, 4, 32, seed=0)
    tx, ty = clusters(400, 4, 32, seed=1)
    acc = train_linear_probe(x, y, tx, ty, 4, epochs=6, batch_size=64)
    assert acc["top1"] > 98.0
    assert "top5" not in acc  # only 4 classes


def test_linear_probe_shuffled_labels_is_chance():
    x, y = clusters(800, 4, 32, seed=0)
    tx, ty = clusters(800, 4, 32, seed=1)
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(3))]
    acc = train_linear_probe(x, shuffled, tx, ty, 4, epochs=6, batch_size=64)
    assert abs(acc["top1"] - 25.0) < 7.0  # chance 25%; 800 test items: sd ~1.5 points


def test_topk_accuracy_against_hand_count():
    scores = torch.tensor([[0.9, 0.1, 0, 0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]])
    acc = topk_accuracy(scores, torch.tensor([0, 0]), 7)
    assert acc == {"top1": 50.0, "top5": 50.0}  # row 2's class 0 is its 7th choice
    assert topk_accuracy(scores, torch.tensor([0, 3]), 7) == {"top1": 50.0, "top5": 100.0}


# ----------------------------------------------------------------------------------------------------------- kNN
def test_knn_identical_train_and_test_is_perfect():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 16, generator=gen)
    y = torch.randint(0, 7, (300,), generator=gen)
    scores = knn_scores(x, y, x, 7, k=200, sigma=0.07, chunk=64)
    assert topk_accuracy(scores, y, 7)["top1"] == 100.0


def test_knn_vote_matches_npid_rule_by_hand():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    query = torch.tensor([[2.0, 0.2]])
    scores = knn_scores(train, labels, query, 2, k=2, sigma=0.5).double()
    q = query.double()[0] / query.double()[0].norm()
    sims = [q @ (t.double() / t.double().norm()) for t in train]
    # the two nearest are items 0 (class 0) and 2 (class 1); item 1 and 3 are farther
    expected = torch.tensor([math.exp(sims[0] / 0.5), math.exp(sims[2] / 0.5)], dtype=torch.float64)
    torch.testing.assert_close(scores[0], expected, rtol=1e-5, atol=0)


# ------------------------------------------------------------------------------------------------------ pooling
@pytest.mark.parametrize("arch, small_stem, size, dims", [
    ("resnet50", False, 224, [9216, 9216, 8192, 9216, 2048]),  # the paper's / VISSL's ResNet-50 dimensions
    ("resnet18", True, 32, [9216, 9216, 8192, 9216, 512]),
])
def test_pooled_dimensions_about_9k(arch, small_stem, size, dims):
    backbone = Backbone(arch, small_stem=small_stem).eval()
    with torch.no_grad():
        maps = backbone(torch.rand(1, 3, size, size), layers=("conv1", "res2", "res3", "res4", "res5"))
    assert [pool_feature_map(name, m).shape[1] for name, m in maps.items()] == dims


def test_vissl_pooling_gives_vissls_resnet50_dimensions():
    """VISSL's eval_resnet_8gpu_transfer_in1k_linear.yaml: 9216 / 9216 / 8192 / 9216 / 8192 at 224 px."""
    backbone = Backbone("resnet50").eval()
    with torch.no_grad():
        maps = backbone(torch.rand(1, 3, 224, 224), layers=("conv1", "res2", "res3", "res4", "res5"))
    pooled = {name: pool_map(name, m, pooling="vissl") for name, m in maps.items()}
    assert {n: tuple(p.shape[1:]) for n, p in pooled.items()} == {
        "conv1": (64, 12, 12), "res2": (256, 6, 6), "res3": (512, 4, 4), "res4": (1024, 3, 3), "res5": (2048, 2, 2)}
    # res5 7 x 7 -> AvgPool(6, stride 1): the top-left window is the mean of rows and columns 0..5
    torch.testing.assert_close(pooled["res5"][0, :, 0, 0], maps["res5"][0, :, :6, :6].mean((1, 2)))


def test_vissl_pooling_refuses_a_map_smaller_than_its_kernel():
    with pytest.raises(ConfigError, match="use pooling 'grid'"):
        pool_map("res5", torch.rand(1, 8, 4, 4), pooling="vissl")


def test_a_cache_over_its_bound_is_refused_after_the_first_batch():
    """ResNet-18 small stem at 32 px: res5 512 dims in fp16 = 1,024 bytes per image; 10,000 images = 9.8 MiB, over
    a 5 MiB bound: refused (naming the online protocol) before the second batch is drawn."""
    backbone = Backbone("resnet18", small_stem=True)
    drawn = []

    def batches():
        for i in range(3):
            drawn.append(i)
            yield torch.rand(2, 3, 32, 32), torch.zeros(2, dtype=torch.long)

    with pytest.raises(ConfigError, match=r"res5 512 dims.*0\.00954 GB.*linear_eval.mode = 'online'"):
        extract_features(backbone, batches(), ["res5"], max_bytes=5 * 2**20, num_images=10_000)
    assert drawn == [0]
    feats, _ = extract_features(backbone, batches(), ["res5"], max_bytes=20 * 2**20, num_images=10_000)
    assert feats["res5"].shape == (6, 512)


def test_pooled_grid_is_capped_by_the_map():
    assert pooled_grid("res4", 1024, 2, 2) == (2, 2)
    assert pooled_grid("res5", 2048, 7, 7) == (1, 1)


# -------------------------------------------------------------------------------------------------------- cache
def tiny_backbone() -> Backbone:
    torch.manual_seed(0)
    return Backbone("resnet18", small_stem=True)


def image_batches(n: int = 24, size: int = 16, batch: int = 8):
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, size, size, generator=gen)
    labels = torch.arange(n) % 3
    return [(images[i:i + batch], labels[i:i + batch]) for i in range(0, n, batch)]


def test_cache_is_reused_and_invalidated_by_new_weights(tmp_path):
    backbone = tiny_backbone()
    calls = []
    backbone.register_forward_hook(lambda *_: calls.append(1))
    cache = FeatureCache(tmp_path)
    key = {"fingerprint": fingerprint(backbone), "n": 24}
    first = cached_features(cache, backbone, "toy", "train", ["res4", "res5"], image_batches(), key, device="cpu")
    assert len(calls) == 3  # one pass (3 batches) for both layers
    assert (tmp_path / "features" / "toy-train-res4.pt").is_file()
    again = cached_features(cache, backbone, "toy", "train", ["res5", "res4"], image_batches(), key, device="cpu")
    assert len(calls) == 3  # no second extraction
    torch.testing.assert_close(again["res5"][0], first["res5"][0])
    torch.testing.assert_close(again["res4"][1], torch.arange(24) % 3)

    with torch.no_grad():
        backbone.conv1.weight.mul_(2)  # a changed checkpoint
    key2 = {**key, "fingerprint": fingerprint(backbone)}
    assert key2 != key
    cached_features(cache, backbone, "toy", "train", ["res5"], image_batches(), key2, device="cpu")
    assert len(calls) == 6


def test_extracted_features_are_the_pooled_maps():
    backbone = tiny_backbone().eval()
    batches = image_batches()
    out, labels = extract_features(backbone, batches, ["res5"], dtype=torch.float32)
    with torch.no_grad():
        expected = torch.cat([backbone(x, layers=("res5",))["res5"].mean(dim=(2, 3)) for x, _ in batches])
    torch.testing.assert_close(out["res5"], expected, rtol=1e-5, atol=1e-6)
    assert labels.tolist() == [i % 3 for i in range(24)]


# -------------------------------------------------------------------------------------------------- precise-BN
def test_precise_bn_equals_average_of_batch_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    batches = [torch.rand(5, 3, 8, 8) * (i + 1) for i in range(3)]
    assert precise_bn(model.eval(), batches) == 15
    assert not model.training
    with torch.no_grad():
        acts = [model[0](b).double() for b in batches]
    mean = torch.stack([a.mean(dim=(0, 2, 3)) for a in acts]).mean(0)
    var = torch.stack([a.transpose(0, 1).flatten(1).var(dim=1, unbiased=True) for a in acts]).mean(0)
    torch.testing.assert_close(model[1].running_mean.double(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[1].running_var.double(), var, rtol=1e-5, atol=1e-6)
    assert model[1].momentum == 0.1


# -------------------------------------------------------------------------------------------------- invariance
def test_invariance_zero_for_identity_and_positive_for_jigsaw():
    net = PIRL(tiny_backbone(), MemoryBank(4, 128, torch.Generator()), Jigsaw(crop_size=None, patch_size=None),
               generator=torch.Generator(), num_negatives=2).eval()
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    identity = invariance_distances(net, images, lambda x, g: View(data=x.clone()), gen, "pooled")
    assert identity.abs().max() < 1e-5
    jigsaw = Jigsaw(crop_size=None, patch_size=None)  # 30 px crop, 8 px patches
    d = invariance_distances(net, images, jigsaw, gen, "pooled")
    assert d.shape == (6,) and (d > 1e-3).all() and (d <= 2.0).all()
    heads = invariance_distances(net, images, jigsaw, gen, "heads")
    assert (heads > 1e-3).all()


def test_summary_and_plot(tmp_path):
    d = torch.tensor([0.1, 0.1, 0.5, 1.9])
    s = summarise(d, bins=4)
    assert s["histogram"]["counts"] == [2, 1, 0, 1]
    assert s["histogram"]["edges"] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert s["mean"] == pytest.approx(0.65)
    assert s["std"] == pytest.approx(float(torch.tensor([0.1, 0.1, 0.5, 1.9], dtype=torch.float64).std()))
    png = plot_invariance_histograms({"a": {**s, "metrics": {"jigsaw": {"mean": s["mean"]}}}, "b": s},
                                     tmp_path / "inv.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------ semi-supervised
def test_balanced_subsets_size_balance_and_seed():
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([300, 150, 120, 200, 230])])  # 1000, imbalanced
    a = balanced_subset(labels, 0.1, seed=0)
    assert len(a) == 100 and len(set(a.tolist())) == 100
    assert torch.bincount(labels[a]).tolist() == [20] * 5
    assert torch.equal(a, balanced_subset(labels, 0.1, seed=0))
    assert not torch.equal(a, balanced_subset(labels, 0.1, seed=1))
    small = balanced_subset(labels, 0.01, seed=0)
    assert torch.bincount(labels[small]).tolist() == [2] * 5
    assert fraction_name(0.01) == "1%" and fraction_name(0.1) == "10%"
