"""Pretext transforms: views against independent reconstructions, permutation draws, Hamming sets, errors, gin."""

from __future__ import annotations

import itertools
import math

import gin
import kornia.color
import kornia.enhance
import numpy as np
import pytest
import torch
from scipy import stats

from pirl_ablate import config
from pirl_ablate.cli import main
from pirl_ablate.errors import ConfigError, UnknownNameError, UserError
from pirl_ablate.gin_edge import GIN
from pirl_ablate.transforms import (
    TRANSFORMS,
    Compose,
    ImageView,
    Jigsaw,
    Rotation,
    TransformInputError,
    build_transform,
    hamming_set,
    lehmer_rank,
)
from pirl_ablate.transforms import base as transforms_base
from pirl_ablate.transforms.photometric import apply_colour, sample_colour

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.fixture(autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Permutation sets are cached in a folder of this test module, not in ~/.cache."""
    folder = tmp_path_factory.getbasetemp() / "transforms-cache"
    monkeypatch.setenv("PIRL_ABLATE_CACHE", str(folder))
    return folder


@pytest.fixture
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def batch(b: int = 4, size: int = 32, channels: int = 3, seed: int = 0, dtype=torch.float32, device="cpu"):
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.rand(b, channels, size, size, generator=g, dtype=dtype, device=device)


def gen(seed: int = 0, device="cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def small_jigsaw(**kw) -> Jigsaw:
    return Jigsaw(crop_size=30, patch_size=8, **kw)


def reference_crop(image: np.ndarray, box, h: int, w: int, flip: bool, samples: int = 1) -> np.ndarray:
    """float64 bilinear resize of box (x0, y0, x1, y1) of image (C, H, W) to (h, w), half-pixel centres, edge
    clamped: the textbook definition, written independently of the transform code. samples s > 1: each output
    pixel is the mean of the bilinear values at the centres of an s x s grid over its footprint (a box filter)."""
    if samples > 1:
        sub = reference_crop(image, box, h * samples, w * samples, False)
        out = sub.reshape(image.shape[0], h, samples, w, samples).mean(axis=(2, 4))
        return out[:, :, ::-1] if flip else out
    _, height, width = image.shape
    x0, y0, x1, y1 = (float(v) for v in box)
    xs = np.clip(x0 + (np.arange(w) + 0.5) * (x1 - x0) / w - 0.5, 0, width - 1)
    ys = np.clip(y0 + (np.arange(h) + 0.5) * (y1 - y0) / h - 0.5, 0, height - 1)
    ix, iy = np.floor(xs).astype(int), np.floor(ys).astype(int)
    ix1, iy1 = np.minimum(ix + 1, width - 1), np.minimum(iy + 1, height - 1)
    ax, ay = xs - ix, ys - iy
    top = image[:, iy][:, :, ix] * (1 - ax) + image[:, iy][:, :, ix1] * ax
    bottom = image[:, iy1][:, :, ix] * (1 - ax) + image[:, iy1][:, :, ix1] * ax
    out = top * (1 - ay)[:, None] + bottom * ay[:, None]
    return out[:, :, ::-1] if flip else out


# ------------------------------------------------------------------------------------------------ shapes, devices
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtypes_devices(device, dtype):
    images = batch(5, 32, dtype=dtype, device=device)
    views = {
        "jigsaw": small_jigsaw()(images, gen(device=device)),
        "rotation": build_transform("rotation")(images, gen(device=device)),
        "image": build_transform("image")(images, gen(device=device)),
    }
    expected = {"jigsaw": (5, 9, 3, 8, 8), "rotation": (5, 3, 32, 32), "image": (5, 3, 224, 224)}
    for name, view in views.items():
        assert tuple(view.data.shape) == expected[name], name
        assert view.data.dtype == dtype and view.data.device.type == device, name
        assert view.is_patches == (name == "jigsaw")
        for key, value in view.params.items():
            assert value.shape[0] == 5 and value.device.type == device, (name, key)
        assert float(view.data.min()) >= 0 and float(view.data.max()) <= 1
    assert views["jigsaw"].num_classes == math.factorial(9) and views["rotation"].num_classes == 4
    assert views["image"].label is None and views["image"].num_classes is None
    for name in ("jigsaw", "rotation"):
        assert views[name].label.dtype == torch.long and views[name].label.shape == (5,)
    gray = small_jigsaw()(batch(2, 32, channels=1, device=device), gen(device=device))
    assert tuple(gray.data.shape) == (2, 9, 1, 8, 8)


def test_fit_to_input_sizes():
    """crop_size=None / patch_size=None scale the paper's 255/85/64 to the input."""
    auto = Jigsaw(crop_size=None, patch_size=None)
    assert auto.sizes(torch.Size([1, 3, 256, 256])) == (255, 85, 64)
    assert auto.sizes(torch.Size([1, 3, 64, 64])) == (63, 21, 16)
    assert auto.sizes(torch.Size([1, 3, 32, 40])) == (30, 10, 8)
    assert tuple(auto(batch(2, 32), gen()).data.shape) == (2, 9, 3, 8, 8)


# --------------------------------------------------------------------------------------------- reconstruction
def test_patches_are_exact_crops_at_unit_scale():
    """Whole-image crop of a crop_size image: every patch is the integer slice at its box, inside cell perm[j]."""
    images = batch(6, 30, dtype=torch.float64, seed=3)
    view = small_jigsaw(crop_scale=(1, 1), crop_ratio=(1, 1), photometric=False, flip=False)(images, gen(1))
    boxes, perm = view.params["boxes"], view.params["perm"]
    assert torch.equal(boxes, boxes.round())
    for b in range(6):
        for j in range(9):
            x0, y0, x1, y1 = (int(v) for v in boxes[b, j])
            assert (x1 - x0, y1 - y0) == (8, 8)
            assert (y0 // 10, x0 // 10) == divmod(int(perm[b, j]), 3)  # cell perm[j], row-major
            assert torch.allclose(view.data[b, j], images[b, :, y0:y1, x0:x1], atol=1e-12, rtol=0)


@pytest.mark.parametrize("flip", [False, True])
def test_patches_match_resized_crops_of_input(flip):
    """Random crops of a non-square input: each patch is the bilinear resize of the input at its recorded box."""
    images = batch(3, 48, dtype=torch.float64, seed=4)[:, :, :40, :]  # (3, 3, 40, 48)
    view = Jigsaw(crop_size=39, patch_size=9, photometric=False, flip=flip)(images, gen(2))
    assert view.params["crop"][:, 2].le(48).all() and view.params["crop"][:, 3].le(40).all()
    for b in range(3):
        for j in range(9):
            mirrored = bool(view.params["flip"][b, j]) if flip else False
            expected = reference_crop(images[b].numpy(), view.params["boxes"][b, j], 9, 9, mirrored)
            np.testing.assert_allclose(view.data[b, j].numpy(), expected, atol=1e-5)
    if flip:
        assert view.params["flip"].any() and not view.params["flip"].all()


def test_image_view_matches_resized_crop():
    """32 px images to 20 px views: a downscale of up to 1.6x, filtered by 2 x 2 samples per output pixel."""
    images = batch(4, 32, dtype=torch.float64, seed=5)
    view = ImageView(size=20, photometric=False)(images, gen(3))
    for b in range(4):
        expected = reference_crop(images[b].numpy(), view.params["box"][b], 20, 20, bool(view.params["flip"][b]),
                                  samples=2)
        np.testing.assert_allclose(view.data[b].numpy(), expected, atol=1e-5)
        x0, y0, x1, y1 = view.params["box"][b].tolist()
        assert 0.08 * 32 * 32 - 1e-3 <= (x1 - x0) * (y1 - y0) <= 32 * 32 + 1e-3


def test_colour_jitter_matches_kornia():
    """The in-place colour ops equal Kornia's torchvision-compatible functions applied one after another."""
    images = batch(40, 12, dtype=torch.float64, seed=6)
    params = sample_colour((40,), gen(4), torch.device("cpu"), brightness=0.4, contrast=0.4, saturation=0.4,
                           hue=0.5, grayscale_p=0.3)
    ours = apply_colour(images.clone(), params)
    x = kornia.enhance.adjust_brightness_accumulative(images, params["brightness"].double())
    x = kornia.enhance.adjust_contrast_with_mean_subtraction(x, params["contrast"].double())
    x = kornia.enhance.adjust_saturation_with_gray_subtraction(x, params["saturation"].double())
    x = kornia.enhance.adjust_hue(x, params["hue"].double() * 2 * math.pi)
    x = torch.where(params["grayscale"].view(-1, 1, 1, 1), kornia.color.rgb_to_grayscale(x).expand_as(x), x)
    assert params["grayscale"].any()
    torch.testing.assert_close(ours, x, atol=1e-6, rtol=0)


def test_jigsaw_photometric_is_per_patch():
    images = batch(2, 30, seed=7)
    view = small_jigsaw()(images, gen(5))
    for key in ("brightness", "contrast", "saturation", "hue"):
        assert view.params[key].shape == (2, 9) and view.params[key].unique().numel() == 18, key
    plain = small_jigsaw(photometric=False)(images, gen(5)).data
    colour = {k: view.params[k].reshape(-1) for k in ("brightness", "contrast", "saturation", "hue", "grayscale")}
    torch.testing.assert_close(view.data, apply_colour(plain.reshape(18, 3, 8, 8).clone(), colour).view(2, 9, 3, 8, 8))


# ----------------------------------------------------------------------------------------------- permutations
def test_lehmer_rank_is_lexicographic_index():
    perms = list(itertools.permutations(range(9)))  # lexicographic order
    rows = torch.randint(len(perms), (500,), generator=gen(6))
    chosen = torch.tensor([perms[i] for i in rows.tolist()])
    assert torch.equal(lehmer_rank(chosen), rows)
    small = torch.tensor(list(itertools.permutations(range(4))))
    assert torch.equal(lehmer_rank(small), torch.arange(24))


def test_permutation_draws_are_uniform_over_all_of_them():
    jigsaw = small_jigsaw()
    params = jigsaw.sample(torch.Size([36_000, 3, 30, 30]), gen(7), torch.device("cpu"))
    perm, index = params["perm"], params["perm_index"]
    assert torch.equal(perm.sort(dim=1).values, torch.arange(9).expand_as(perm))
    assert torch.equal(index, lehmer_rank(perm))
    # lexicographic rank in 72 equal buckets (9!/72 each) and (position, value) counts: both uniform
    buckets = torch.bincount(index // (math.factorial(9) // 72), minlength=72).numpy()
    assert stats.chisquare(buckets).pvalue > 1e-3
    cells = torch.stack([torch.bincount(perm[:, j], minlength=9) for j in range(9)]).numpy().ravel()
    assert stats.chisquare(cells).pvalue > 1e-3


def test_hamming_set_properties(cache):
    sets = {k: hamming_set(k, 9, seed=0).numpy() for k in (10, 20, 50)}
    for k, perms in sets.items():
        assert perms.shape == (k, 9)
        assert (np.sort(perms, axis=1) == np.arange(9)).all()
        assert len({tuple(p) for p in perms}) == k
    assert (sets[50][:20] == sets[20]).all() and (sets[20][:10] == sets[10]).all()
    minimum = [np.sort(((p[:, None] != p[None]).sum(-1) + 99 * np.eye(len(p), dtype=int)).ravel())[0]
               for p in sets.values()]
    assert minimum == sorted(minimum, reverse=True) and minimum[0] >= 8
    assert (cache / "permutations" / "hamming_p9_k50_seed0.npy").is_file()
    assert not np.array_equal(hamming_set(10, 9, seed=1).numpy(), sets[10])


def test_hamming_set_is_the_greedy_max_average_choice():
    """Brute force over all 9! candidates: each next permutation has the largest summed distance to those before."""
    perms = hamming_set(6, 9, seed=0).numpy()
    everything = np.array(list(itertools.permutations(range(9))), dtype=np.int8)  # row r has rank r
    taken = lehmer_rank(torch.from_numpy(perms).long()).numpy()
    total = np.zeros(len(everything), dtype=np.int64)
    for i in range(1, len(perms)):
        total += (everything != perms[i - 1]).sum(1)
        others = np.delete(total, taken[:i])
        assert others.max() == (perms[:i] != perms[i]).sum()


def test_hamming_set_is_deterministic_and_cached(tmp_path, monkeypatch):
    first = hamming_set(20, 9, seed=3)
    path = tmp_path / "a"
    monkeypatch.setenv("PIRL_ABLATE_CACHE", str(path))
    again = hamming_set(20, 9, seed=3)  # generated afresh in an empty cache
    assert torch.equal(first, again)
    cached = path / "permutations" / "hamming_p9_k20_seed3.npy"
    np.save(cached, np.zeros((20, 9), dtype=np.uint8))  # a corrupt cache entry is regenerated
    assert torch.equal(hamming_set(20, 9, seed=3), first)


def test_jigsaw_with_permutation_set_draws_members_uniformly():
    jigsaw = small_jigsaw(num_permutations=10)
    table = jigsaw.permutations
    assert jigsaw.num_classes == 10 and table.shape == (10, 9)
    params = jigsaw.sample(torch.Size([5000, 3, 30, 30]), gen(8), torch.device("cpu"))
    assert torch.equal(table[params["perm_index"]], params["perm"])
    assert stats.chisquare(torch.bincount(params["perm_index"], minlength=10).numpy()).pvalue > 1e-3
    view = jigsaw(batch(3, 30), gen(8))
    assert torch.equal(view.label, view.params["perm_index"])


# ------------------------------------------------------------------------------------------- rotation, chains
def test_rotation_matches_rot90():
    images = batch(16, 12, seed=9)
    view = build_transform("rotation")(images, gen(9))
    assert set(view.label.tolist()) == {0, 1, 2, 3}
    for b in range(16):
        assert torch.equal(view.data[b], torch.rot90(images[b], int(view.label[b]), dims=(-2, -1)))


def test_rotation_then_jigsaw():
    images = batch(6, 30, dtype=torch.float64, seed=10)
    chain = Compose([("rotation", Rotation()), ("jigsaw", small_jigsaw(
        num_permutations=10, photometric=False, flip=False, crop_scale=(1, 1), crop_ratio=(1, 1)))])
    view = chain(images, gen(10))
    assert chain.num_classes == view.num_classes == 40
    rotation, index = view.params["rotation.rotation"], view.params["jigsaw.perm_index"]
    assert torch.equal(view.label, rotation * 10 + index)
    for b in range(6):
        rotated = torch.rot90(images[b], int(rotation[b]), dims=(-2, -1))
        x0, y0, x1, y1 = (int(v) for v in view.params["jigsaw.boxes"][b, 0])
        torch.testing.assert_close(view.data[b, 0], rotated[:, y0:y1, x0:x1])


def test_same_seed_same_views_and_chunking_does_not_matter(monkeypatch):
    images = batch(19, 30, seed=11)
    chain = Compose([("image", ImageView(size=30)), ("rotation", Rotation()), ("jigsaw", small_jigsaw())])
    first = chain(images, gen(12))
    monkeypatch.setattr(transforms_base, "CPU_CHUNK", 4)
    second = chain(images, gen(12))
    torch.testing.assert_close(first.data, second.data, atol=0, rtol=0)
    assert first.params.keys() == second.params.keys()
    assert all(torch.equal(first.params[k], second.params[k]) for k in first.params)
    assert torch.equal(first.label, second.label) and first.num_classes == 4 * math.factorial(9)
    other = chain(images, gen(13))
    assert not torch.equal(first.label, other.label)


def test_samples_draw_independent_parameters():
    images = batch(1, 30, seed=12).expand(64, -1, -1, -1)
    view = small_jigsaw()(images, gen(14))
    assert view.params["perm_index"].unique().numel() == 64
    assert view.params["boxes"].flatten(1).unique(dim=0).shape[0] == 64
    assert not torch.equal(view.data[0], view.data[1])
    # neighbouring samples are uncorrelated (a shared or shifted stream would correlate them)
    hue = view.params["hue"][:, 0]
    assert abs(float(torch.corrcoef(torch.stack([hue[:-1], hue[1:]]))[0, 1])) < 0.4


# ------------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("make, images, words", [
    (lambda: Jigsaw(), batch(2, 32), ["jigsaw", "crop_size=255", "(2, 3, 32, 32)"]),
    (lambda: small_jigsaw(), (batch(2, 32) * 255).to(torch.uint8), ["jigsaw", "uint8", "(2, 3, 32, 32)"]),
    (lambda: small_jigsaw(), batch(2, 32)[0], ["jigsaw", "rank 4", "(3, 32, 32)"]),
    (lambda: build_transform("rotation"), batch(2, 32)[:, :, :30], ["rotation", "square", "(2, 3, 30, 32)"]),
    (lambda: build_transform("image"), batch(2, 32)[:, :2], ["image", "channels", "(2, 2, 32, 32)"]),
])
def test_bad_inputs_name_transform_parameter_and_shape(make, images, words):
    with pytest.raises(TransformInputError) as e:
        make()(images, gen())
    assert isinstance(e.value, ValueError) and isinstance(e.value, UserError)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_bad_parameters_and_names():
    with pytest.raises(ValueError, match=r"grid=4 does not divide crop_size=30"):
        Jigsaw(crop_size=30, grid=4, patch_size=6)
    with pytest.raises(ValueError, match=r"patch_size=12 does not fit a 10x10 cell"):
        Jigsaw(crop_size=30, patch_size=12)
    with pytest.raises(ConfigError, match=r"`jigsaw` turns images into patches, so it must come last"):
        build_transform("jigsaw+rotation")
    with pytest.raises(UnknownNameError, match=r"did you mean `jigsaw`"):
        build_transform("rotation+jigsow")
    with pytest.raises(ConfigError, match="num_permutations=0"):
        small_jigsaw(num_permutations=0)


# -------------------------------------------------------------------------------------------- registry and gin
def test_registry_lists_builtins_with_defaults():
    assert {"jigsaw", "rotation", "image"} <= set(TRANSFORMS.names())
    entry = TRANSFORMS.entry("jigsaw")
    assert entry.params["num_permutations"] is None and entry.params["crop_size"] == 255 and entry.doc
    with pytest.raises(ValueError, match="already registered"):
        TRANSFORMS.register("jigsaw")(Jigsaw)


def test_gin_bindings_configure_builtins(clean_gin):
    config.parse([], ["jigsaw.num_permutations = 12", "jigsaw.crop_size = None", "jigsaw.patch_size = None"],
                 finalize=False)
    chain = build_transform("rotation+jigsaw", configuration=GIN)
    assert chain.num_classes == 48
    view = chain(batch(2, 32), gen())
    assert tuple(view.data.shape) == (2, 9, 3, 8, 8)


def test_user_transform_from_its_own_module_through_gin(tmp_path, clean_gin):
    gin_file = tmp_path / "user.gin"
    gin_file.write_text("import user_transforms\nuser_dim.strength = 0.25\n")
    config.parse([gin_file], finalize=False)
    assert "user_dim" in TRANSFORMS
    images = batch(8, 30, seed=15)
    view = build_transform("user_dim", configuration=GIN)(images, gen(16))  # the binding applies at the edge
    expected = images * torch.where(view.label.bool(), 0.75, 1.0).view(-1, 1, 1, 1)
    torch.testing.assert_close(view.data, expected)
    chained = build_transform("user_dim+rotation", configuration=GIN)(images, gen(16))
    assert chained.num_classes == 8
    assert torch.equal(chained.label, chained.params["user_dim.dimmed"] * 4 + chained.params["rotation.rotation"])


# ---------------------------------------------------------------------------------------------- show-transform
def test_show_transform_writes_png(tmp_path, clean_gin, monkeypatch):
    monkeypatch.setenv("PIRL_ABLATE_QUIET", "1")  # restored after --quiet sets it
    out = tmp_path / "views" / "rotation_jigsaw.png"
    code = main(["--quiet", "show-transform", "rotation+jigsaw", "--images", "1", "--out", str(out),
                 "--bind", "jigsaw.num_permutations = 10"])
    assert code == 0
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000
    assert main(["--quiet", "show-transform", "jigsow", "--out", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()
