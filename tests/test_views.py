"""Views from the whole image: the crop draw against torchvision's RandomResizedCrop, images of their own sizes in one
batch, bounded JPEG decoding, the centre squares of evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from scipy import stats

from pirl_ablate.data import build_dataset, make_loader, to_device_batch
from pirl_ablate.data.loader import pad_to_canvas
from pirl_ablate.errors import DataError
from pirl_ablate.transforms import ImageBatch, ImageView, Jigsaw, Rotation, centre_squares, with_sizes
from pirl_ablate.transforms.base import random_resized_boxes

H, W = 375, 500  # ImageNet's most common size (height, width)
N = 4000


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def torchvision_boxes(scale: tuple[float, float], n: int, seed: int) -> np.ndarray:
    """(n, 4) x0, y0, x1, y1 from torchvision's own `RandomResizedCrop.get_params` on an H x W image."""
    torch.manual_seed(seed)
    image = torch.empty(1, H, W)
    out = []
    for _ in range(n):
        i, j, h, w = T.RandomResizedCrop.get_params(image, scale=list(scale), ratio=[3 / 4, 4 / 3])
        out.append((j, i, j + w, i + h))
    return np.asarray(out, dtype=np.float64)


def statistics(boxes: np.ndarray) -> dict[str, np.ndarray]:
    x0, y0, x1, y1 = boxes.T
    return {"area fraction": (x1 - x0) * (y1 - y0) / (H * W), "log aspect": np.log((x1 - x0) / (y1 - y0)),
            "x0": x0, "y0": y0, "x1": x1, "y1": y1}


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.6, 1.0)], ids=["image view", "jigsaw crop"])
def test_box_distribution_matches_torchvision_random_resized_crop(scale):
    """Area fraction, aspect ratio and position (coverage of the borders) of the project's batched draw on a
    500 x 375 image are torchvision's: a two-sample KS test does not tell them apart (p > 1e-3 each), while it does
    tell apart the same draw made on the image's centre square (the old decode)."""
    sizes = torch.tensor([[H, W]]).expand(N, 2)
    ours = statistics(random_resized_boxes(sizes, scale, (3 / 4, 4 / 3), gen(1), torch.device("cpu")).double().numpy())
    theirs = statistics(torchvision_boxes(scale, N, seed=2))
    for name in ours:
        assert stats.ks_2samp(ours[name], theirs[name]).pvalue > 1e-3, name
    square = torch.tensor([[H, H]]).expand(N, 2)
    centred = random_resized_boxes(square, scale, (3 / 4, 4 / 3), gen(1), torch.device("cpu")).double().numpy()
    centred[:, [0, 2]] += (W - H) / 2
    assert stats.ks_2samp(statistics(centred)["x0"], theirs["x0"]).pvalue < 1e-6


def test_fallback_is_torchvisions_centre_crop():
    """No try fits a 1000 x 100 strip at scale 0.9-1: the centre crop at the nearest allowed aspect ratio, as
    torchvision's fallback computes it (h = 100, w = round(100 * 4/3) = 133, left (1000 - 133) // 2 = 433)."""
    boxes = random_resized_boxes(torch.tensor([[100, 1000]]), (0.9, 1.0), (3 / 4, 4 / 3), gen(0), torch.device("cpu"))
    assert boxes.tolist() == [[433.0, 0.0, 566.0, 100.0]]


def mixed_batch() -> ImageBatch:
    """500 x 375, 333 x 500 (portrait) and 28 x 28 images, random pixels, on one padded canvas."""
    g = gen(3)
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in ((H, W), (W, 333),
                                                                                             (28, 28))]
    canvas, sizes = pad_to_canvas(images)
    return with_sizes(canvas.float() / 255, sizes)


def test_canvas_holds_each_image_and_repeats_its_edge_once():
    images = [torch.arange(6, dtype=torch.uint8).view(1, 2, 3), torch.full((1, 4, 1), 9, dtype=torch.uint8)]
    canvas, sizes = pad_to_canvas(images)
    assert sizes.tolist() == [[2, 3], [4, 1]] and canvas.shape == (2, 1, 4, 3)
    assert canvas[0, 0].tolist() == [[0, 1, 2], [3, 4, 5], [3, 4, 5], [0, 0, 0]]
    assert canvas[1, 0].tolist() == [[9, 9, 0]] * 4


@pytest.mark.parametrize("make", [lambda: ImageView(size=32), lambda: Jigsaw()], ids=["image", "jigsaw"])
def test_boxes_of_a_mixed_batch_stay_in_their_own_image(make):
    """Each image's boxes lie inside its own extent (never the canvas's), in every one of 200 draws per image; the
    transform runs on the mixed batch itself."""
    x = mixed_batch()
    transform = make()
    assert transform(x, gen(4)).data.shape[0] == 3
    sizes = x.sizes.repeat(200, 1)
    params = transform.sample(torch.Size((600, *x.shape[1:])), gen(4), torch.device("cpu"), sizes=sizes)
    boxes = params["box"].unsqueeze(1) if "box" in params else params["boxes"]
    h, w = sizes[:, :1].float(), sizes[:, 1:].float()
    assert (boxes[..., 0] >= 0).all() and (boxes[..., 1] >= 0).all()
    assert (boxes[..., 2] <= w + 1e-4).all() and (boxes[..., 3] <= h + 1e-4).all()
    crop = params["box"] if "box" in params else params["crop"]
    area = (crop[:, 2] - crop[:, 0]) * (crop[:, 3] - crop[:, 1]) / (h * w).squeeze(1)
    low = 0.08 if "box" in params else 0.6
    small = sizes[:, 0] == 28  # rounding the sides to pixels moves a 28 px image's fraction by up to 2 / 28
    assert area[~small].min() > low - 0.01 and area[small].min() > low - 2 / 28 and area.max() <= 1
    assert crop[small, 2].max() > 20 and crop[~small, 2].max() > 300  # each spans its own width, not the canvas's


def test_a_pixel_of_the_outer_strip_appears_in_some_view():
    """A 500 x 375 image black inside its centre square and white outside it: some image views and some jigsaw
    patches show white (the old decode kept only the centre square, so none could)."""
    image = torch.ones(1, 3, H, W)
    left = (W - H) // 2
    image[..., left:left + H] = 0
    batch = with_sizes(image.expand(64, -1, -1, -1).contiguous(), torch.tensor([[H, W]]).expand(64, 2))
    views = ImageView(size=32, photometric=False)(batch, gen(5)).data
    assert (views.amax(dim=(1, 2, 3)) == 1).sum() > 10
    patches = Jigsaw(photometric=False)(batch, gen(6)).data
    assert (patches.amax(dim=(2, 3, 4)) == 1).any()


def test_centre_squares_are_resize_then_centre_crop():
    """Evaluation's input: torchvision's Resize(s) + CenterCrop(s) of each image of the mixed batch (antialiased
    bilinear both; they differ only in the order of crop and resize, < 0.02 mean)."""
    x = mixed_batch()
    out = centre_squares(x, 64)
    assert out.shape == (3, 3, 64, 64) and not isinstance(out, ImageBatch)
    canvas = x.as_subclass(torch.Tensor)
    for b, (h, w) in enumerate(x.sizes.tolist()):
        image = canvas[b, :, :h, :w]
        expected = TF.center_crop(TF.resize(image, 64, antialias=True), 64)
        assert (out[b] - expected).abs().mean() < 0.02


def test_rotation_of_own_size_images_rotates_their_centre_squares():
    x = mixed_batch()
    view = Rotation()(with_sizes(x.as_subclass(torch.Tensor), x.sizes, 28), gen(7))
    squares = centre_squares(x, 28)
    for b, k in enumerate(view.params["rotation"].tolist()):
        torch.testing.assert_close(view.data[b], torch.rot90(squares[b], k, dims=(-2, -1)))


def write_jpegs(folder, sizes) -> None:
    """Smooth colour gradients (JPEG keeps them to a few levels) of the given (width, height), quality 90."""
    from PIL import Image

    folder.mkdir(parents=True)
    for n, (w, h) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w]
        rgb = np.stack([255 * xx / w, 255 * yy / h, 128 + 0 * xx], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"{n}.jpg", quality=90)


def test_jpegs_decode_at_their_own_aspect_ratio_bounded_and_batch_with_their_sizes(tmp_path):
    """500 x 375 and 333 x 500 JPEGs come whole; a 1200 x 900 one comes at 512 x 384 (decoded in draft mode, close
    to a full decode resized); the loader's batch carries each size, and its centre squares are evaluation's."""
    from PIL import Image

    write_jpegs(tmp_path / "train" / "a", [(500, 375), (333, 500), (1200, 900)])
    ds = build_dataset("imagefolder", "train", root=str(tmp_path), max_side=512)
    shapes = [tuple(ds[i][0].shape) for i in range(3)]
    assert shapes == [(3, 375, 500), (3, 500, 333), (3, 384, 512)]
    with Image.open(tmp_path / "train" / "a" / "2.jpg") as im:
        full = np.asarray(im.convert("RGB").resize((512, 384), Image.BILINEAR), dtype=np.float64)
    assert np.abs(ds[2][0].permute(1, 2, 0).numpy() - full).mean() < 2.0  # of 255
    with Image.open(tmp_path / "train" / "a" / "0.jpg") as im:
        assert np.array_equal(ds[0][0].permute(1, 2, 0).numpy(), np.asarray(im.convert("RGB")))
    loader = make_loader(ds, 3, shuffle=False, num_workers=0)
    loader.set_epoch(0)
    (images, _, _), = list(loader)
    assert isinstance(images, ImageBatch) and images.sizes.tolist() == [[375, 500], [500, 333], [384, 512]]
    whole = to_device_batch(images, "cpu", 64, whole=True)
    assert isinstance(whole, ImageBatch) and whole.shape == (3, 3, 500, 512) and whole.side == 64
    clean = to_device_batch(images, "cpu", 64)
    assert clean.shape == (3, 3, 64, 64)
    torch.testing.assert_close(clean, centre_squares(whole))
    assert not math.isnan(float(clean.sum()))


def test_jpegs_decoded_on_the_device_match_the_workers_decode(tmp_path):
    """`decode_on = "device"`: workers hand over the files' bytes, `to_device_batch` decodes them (here on the CPU,
    the same call as on CUDA) into the ImageBatch the workers' decode gives: same sizes, pixels within JPEG decoders'
    and resamplers' rounding. A file that is no JPEG is refused in the worker, named."""
    from PIL import Image

    write_jpegs(tmp_path / "train" / "a", [(500, 375), (333, 500), (1000, 750)])
    batches = {}
    for where in ("worker", "device"):
        ds = build_dataset("imagefolder", "train", root=str(tmp_path), max_side=512, decode_on=where)
        loader = make_loader(ds, 3, shuffle=False, num_workers=0)
        loader.set_epoch(0)
        (images, _, _), = list(loader)
        batches[where] = to_device_batch(images, "cpu", 64, whole=True)
    worker, device = batches["worker"], batches["device"]
    assert device.sizes.tolist() == worker.sizes.tolist() == [[375, 500], [500, 333], [384, 512]]
    for b, (h, w) in enumerate(worker.sizes.tolist()):
        diff = (worker.as_subclass(torch.Tensor)[b, :, :h, :w] - device.as_subclass(torch.Tensor)[b, :, :h, :w])
        assert diff.abs().mean() < 2 / 255
    Image.new("RGB", (20, 10)).save(tmp_path / "train" / "a" / "z.png")
    ds = build_dataset("imagefolder", "train", root=str(tmp_path), decode_on="device")
    with pytest.raises(DataError, match=r"z\.png.*decodes RGB or grey JPEGs only"):
        ds[3]


@pytest.mark.parametrize("make, words", [
    (lambda: ImageView(size=None), ["image", "size=None", "image.size", "224"]),
    (lambda: Jigsaw(crop_size=None, patch_size=None), ["jigsaw", "crop_size=None", "jigsaw.crop_size", "255 and 64"]),
])
def test_sizes_fitted_to_the_input_are_refused_for_images_of_their_own_sizes(make, words):
    """Fitted to an ImageBatch they would follow its canvas, i.e. the batch's largest image: an error says what to
    bind. A paper-size jigsaw crop from images smaller than 255 px is fine (resampled from each image's box)."""
    from pirl_ablate.transforms import TransformInputError

    with pytest.raises(TransformInputError) as e:
        make()(mixed_batch(), gen(8))
    assert all(w in str(e.value) for w in words)
    small = with_sizes(torch.rand(2, 3, 40, 50), torch.tensor([[40, 50], [30, 20]]))
    assert Jigsaw()(small, gen(9)).data.shape == (2, 9, 3, 64, 64)


def test_a_kornia_intensity_part_keeps_the_sizes_so_a_later_jigsaw_crops_each_image_from_its_own_extent():
    """`kornia:RandomSolarize+jigsaw` on own-size images: the solarized canvas keeps each image's sizes, so the jigsaw
    crop of the 28 x 28 image stays inside its 28 px (on the canvas it could reach the 500 px width); a geometric
    Kornia part (a flip) runs on the centre squares, as rotation does."""
    from pirl_ablate.transforms import build_transform

    x = mixed_batch()
    batch = with_sizes(x.as_subclass(torch.Tensor).repeat(20, 1, 1, 1), x.sizes.repeat(20, 1))
    view = build_transform("kornia:RandomSolarize+jigsaw")(batch, gen(7))
    crop = view.params["jigsaw.crop"]
    small = batch.sizes[:, 1] == 28
    assert crop[small, 2].max() <= 28 + 1e-4 and crop[~small, 2].max() > 300
    flipped = build_transform("kornia:RandomHorizontalFlip")(batch, gen(8)).data
    assert flipped.shape[-2:] == centre_squares(batch).shape[-2:]
