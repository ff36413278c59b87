"""VISSL's choices where the paper is silent, each an option the paper scale binds: the random photometric step
against PIL's definitions, Z from the transformed term's first-batch scores and a negative draw per term against a
float64 transcription, PIRL (Rotation) augmenting before it rotates, the per-epoch cosine, shuffled precise-BN."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps
from test_losses import B, D, N, batch, make, paper_loss, step

from pirl_ablate import train as train_module
from pirl_ablate.data.arrays import ArrayDataset
from pirl_ablate.losses import MemoryBankNegatives, nce
from pirl_ablate.methods import PIRL
from pirl_ablate.train import cosine
from pirl_ablate.transforms import build_transform
from pirl_ablate.transforms.photometric import (
    RANDOM_PHOTOMETRIC_KEYS,
    apply_random_photometric,
    autocontrast,
    posterize,
    sample_random_photometric,
    solarize,
)

TAU = 0.07


def _images(n: int = 6, size: tuple[int, int] = (9, 11), seed: int = 0, span: int = 120) -> np.ndarray:
    """(n, h, w, 3) uint8, each image's values in its own range of `span` levels (autocontrast stretches it)."""
    rng = np.random.default_rng(seed)
    lo = rng.integers(0, 256 - span, (n, 1, 1, 1))
    return (lo + rng.integers(0, span, (n, *size, 3))).astype(np.uint8)


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255


def _pil(images: np.ndarray, op) -> torch.Tensor:
    return _tensor(np.stack([np.asarray(op(Image.fromarray(im), i)) for i, im in enumerate(images)]))


def test_posterize_solarize_autocontrast_are_pils():
    images = _images()
    bits = torch.tensor([4, 5, 6, 7, 8, 4])
    thresholds = torch.tensor([0, 1, 64, 128, 255, 256])
    x = _tensor(images)
    posterized = _pil(images, lambda im, i: ImageOps.posterize(im, int(bits[i])))
    solarized = _pil(images, lambda im, i: ImageOps.solarize(im, int(thresholds[i])))
    assert torch.allclose(posterize(x, bits), posterized, rtol=0, atol=1e-12)
    assert torch.allclose(solarize(x, thresholds), solarized, rtol=0, atol=1e-12)
    # PIL maps through an 8-bit table (truncating): within one level
    expected = _pil(images, lambda im, i: ImageOps.autocontrast(im))
    assert (autocontrast(x) - expected).abs().max() <= 1 / 255 + 1e-9
    # sharpness (Kornia's) against ImageEnhance.Sharpness, which rounds its smoothed image and its output to 8 bits
    factors = torch.tensor([0.1, 0.5, 1.0, 1.3, 1.6, 1.9])
    params = {"photometric_on": torch.ones(6, dtype=torch.bool), "posterize_bits": torch.full((6,), 8),
              "sharpness": factors, "solarize_threshold": torch.full((6,), 256)}
    sharpened = apply_random_photometric(x.float(), params)  # posterize 8 bits and solarize at 256: identities
    expected = _pil(images, lambda im, i: ImageOps.autocontrast(ImageEnhance.Sharpness(im).enhance(float(factors[i]))))
    assert (sharpened - expected.float()).abs().max() <= 4 / 255  # one rounding level, stretched by autocontrast


def test_the_random_photometric_step_is_pils_chain_where_drawn_and_nothing_elsewhere():
    """On: posterize -> sharpness -> solarize -> autocontrast in that order, as PIL computes them one after another
    (sharpness 1, its identity: PIL rounds a sharpened image to 8 bits, which may move a pixel across the solarize
    threshold and so the autocontrast range; sharpness itself is checked above); off: the input unchanged."""
    images = _images(8, (12, 12), seed=1)
    params = sample_random_photometric((8,), torch.Generator().manual_seed(3), torch.device("cpu"), p=0.5)
    params["photometric_on"] = torch.tensor([True, False] * 4)
    params["sharpness"] = torch.ones(8)
    x = _tensor(images).float()
    out = apply_random_photometric(x.clone(), params)

    def chain(im: Image.Image, i: int) -> Image.Image:
        im = ImageOps.posterize(im, int(params["posterize_bits"][i]))
        im = ImageEnhance.Sharpness(im).enhance(float(params["sharpness"][i]))
        im = ImageOps.solarize(im, int(params["solarize_threshold"][i]))
        return ImageOps.autocontrast(im)

    expected = _pil(images, chain).float()
    on = params["photometric_on"]
    assert torch.equal(out[~on], x[~on])
    assert (out[on] - expected[on]).abs().max() <= 1 / 255 + 1e-6


def test_random_photometric_draws_follow_vissls_ranges_and_are_reproducible():
    draw = lambda: sample_random_photometric((20000,), torch.Generator().manual_seed(0),  # noqa: E731
                                             torch.device("cpu"), p=0.66)
    d = draw()
    assert abs(d["photometric_on"].float().mean().item() - 0.66) < 0.02
    assert set(d["posterize_bits"].tolist()) == {4, 5, 6, 7, 8}
    assert d["solarize_threshold"].min() == 0 and d["solarize_threshold"].max() == 256
    assert 0.1 <= d["sharpness"].min() and d["sharpness"].max() <= 1.9
    assert all(torch.equal(d[k], v) for k, v in draw().items())


@pytest.mark.parametrize("name, shape", [("image", (4,)), ("jigsaw", (4, 9))])
def test_views_record_their_random_photometric_draws(name, shape):
    transform = build_transform(name, random_photometric_p=0.66, **({"size": 16} if name == "image" else
                                                                    {"crop_size": 30, "patch_size": 8}))
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    view = transform(images, torch.Generator().manual_seed(1))
    again = transform(images, torch.Generator().manual_seed(1))
    for key in RANDOM_PHOTOMETRIC_KEYS:
        assert view.params[key].shape == shape
    assert torch.equal(view.data, again.data)
    off = build_transform(name, **({"size": 16} if name == "image" else {"crop_size": 30, "patch_size": 8}))
    assert not set(RANDOM_PHOTOMETRIC_KEYS) & set(off(images, torch.Generator().manual_seed(1)).params)


def test_z_from_the_transformed_term_with_a_negative_draw_per_term_matches_float64_transcription(monkeypatch):
    """VISSL (nce_loss.py): each term draws its own N negatives, and the first batch's Z is mean(exp(s / tau)) |D|
    over the transformed term's scores alone (its positive and its own negatives); Eq. 5 then weighs the two
    terms at that Z. The two draws differ, and a generator in the same state draws them again."""
    monkeypatch.setattr(nce, "CHUNK_BYTES", 4 * 2 * N * 128 * 4)  # chunks of 4 samples of (2, N) negatives
    method = make(PIRL, num_negatives=N, negatives=MemoryBankNegatives(per_term=True), z_from="transformed").eval()
    bank = method.memory_bank.bank.double().numpy().copy()
    x, view, index = batch(0)
    replay = torch.Generator().set_state(method.generator.get_state())
    loss, parts = step(method, x, view, index)
    neg_g = method.memory_bank.sample_negatives(index, N, replay).numpy()  # the transformed term's draw, first
    neg_f = method.memory_bank.sample_negatives(index, N, replay).numpy()
    assert not np.array_equal(neg_g, neg_f)
    with torch.no_grad():
        f = method.embed_image(x).double().numpy()
        g = method.embed_transformed(view).double().numpy()
    idx = index.numpy()
    z = float(np.mean([math.exp(g[b] @ bank[j] / TAU) for b in range(B) for j in [idx[b], *neg_g[b]]])) * D
    assert parts["Z"].item() == pytest.approx(z, rel=1e-5)
    loss_g, _ = paper_loss(g, g, bank, idx, neg_g, 1.0, TAU, "nce", z)
    loss_f, _ = paper_loss(f, f, bank, idx, neg_f, 0.0, TAU, "nce", z)
    assert loss.item() == pytest.approx(0.5 * loss_g + 0.5 * loss_f, rel=1e-5)
    # Z from both terms over one shared draw (the default) is another number: the option is what changed it
    shared = make(PIRL, num_negatives=N).eval()
    assert step(shared, *batch(0))[1]["Z"].item() != pytest.approx(z, rel=1e-3)


def test_rotation_augments_to_the_image_view_before_it_rotates():
    """rotation.augment: the view is the `image` transform's output for the recorded draws, rotated by the recorded
    quarter turns (torch.rot90)."""
    images = torch.rand(6, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    rotation = build_transform("rotation", augment=True)
    image = build_transform("image")
    view = rotation(images, torch.Generator().manual_seed(2))
    draws = {k[len("image."):]: v for k, v in view.params.items() if k.startswith("image.")}
    assert {"box", "flip", "hue"} <= set(draws)
    augmented = image.apply(images.clone(), draws)
    expected = torch.stack([torch.rot90(a, int(k), dims=(-2, -1)) for a, k in zip(augmented,
                                                                                 view.params["rotation"])])
    assert view.data.shape == (6, 3, 224, 224)
    assert torch.allclose(view.data, expected, atol=1e-6)
    assert torch.equal(view.label, view.params["rotation"])


def test_per_epoch_cosine_holds_each_epoch_at_vissls_value():
    """VISSL's CosineParamScheduler with update_interval epoch: lr(e) = end + (start - end) (1 + cos(pi e / E)) / 2
    through epoch e; the per-step schedule moves within the epoch."""
    epochs, steps, final = 4, 5, 1e-3
    for s in range(epochs * steps):
        e = s // steps
        expected = final + (1 - final) * 0.5 * (1 + math.cos(math.pi * e / epochs))
        assert cosine(s, steps, epochs=epochs, final_fraction=final, per="epoch") == pytest.approx(expected)
    assert cosine(7, steps, epochs=epochs, final_fraction=final) < cosine(5, steps, epochs=epochs,
                                                                             final_fraction=final)


def test_precise_bn_reads_shuffled_batches_of_a_seed(monkeypatch):
    """The dataset is sorted by class (as a folder dataset is): precise-BN's batches are a seeded shuffle, not its
    first images; the same seed gives the same batches, another seed others."""
    images = torch.arange(64, dtype=torch.uint8).view(64, 1, 1, 1).expand(64, 3, 4, 4).contiguous()
    dataset = ArrayDataset(images, torch.arange(64) // 16, name="t", split="train", num_classes=4)
    seen: list[list[int]] = []

    def record(backbone, batches, forward) -> int:
        seen.append([round(v * 255) for x in batches for v in x[:, 0, 0, 0].tolist()])
        return len(seen[-1])

    monkeypatch.setattr(train_module, "precise_bn", record)
    method = SimpleNamespace(backbone=None)
    for seed in (0, 0, 1):
        assert train_module.recompute_bn(method, dataset, torch.device("cpu"), None, 2, 8, seed=seed) == 16
    first, again, other = seen
    assert first == again and first != other
    assert len(set(first)) == 16 and first != list(range(16))
    assert len({i // 16 for i in first}) > 1  # more than one class
