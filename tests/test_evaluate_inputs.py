"""Evaluation inputs (pirl_ablate.evaluate.inputs) against what torchvision's PIL transforms of VISSL's configs
compute on the same image, and the crop rule against its definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from pirl_ablate.evaluate.inputs import crop_box, random_resized_crop_flip, resize_center_crop, squash


def _image(h: int, w: int) -> tuple[Image.Image, torch.Tensor]:
    """A smooth h x w test image (a PIL image and its (1, 3, h, w) float tensor in [0, 1])."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x / w, y / h, (x + y) / (h + w)], axis=-1)
    array = (rgb * 255).round().astype(np.uint8)
    return Image.fromarray(array), torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255


def _pil(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)[None]


@pytest.mark.parametrize("h, w", [(60, 90), (90, 60)])
def test_squash_and_resize_crop_match_torchvisions_pil_transforms(h, w):
    """VISSL's SVM input (Resize 256, Resize (224, 224)) and test input (Resize 256, CenterCrop 224), scaled to
    32 / 28 px: the same geometry as PIL's; values within PIL's uint8 rounding and filter differences."""
    im, x = _image(h, w)
    expected_squash = _pil(T.Compose([T.Resize(32), T.Resize((28, 28))])(im))
    expected_crop = _pil(T.Compose([T.Resize(32), T.CenterCrop(28)])(im))
    got_squash, got_crop = squash(x, None, 28, resize=32), resize_center_crop(x, None, 32, 28)
    assert got_squash.shape == got_crop.shape == (1, 3, 28, 28)
    assert (got_squash - expected_squash).abs().mean() < 0.01
    assert (got_crop - expected_crop).abs().mean() < 0.01


def test_padded_images_use_only_their_content():
    """An image of its own size padded into a larger batch gives what it gives alone."""
    _, x = _image(40, 60)
    padded = torch.zeros(2, 3, 64, 64)
    padded[0, :, :40, :60] = x[0]
    padded[1] = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    sizes = torch.tensor([[40, 60], [64, 64]])
    torch.testing.assert_close(squash(padded, sizes, 28, resize=32)[0], squash(x, None, 28, resize=32)[0])
    torch.testing.assert_close(resize_center_crop(padded, sizes, 32, 28)[0], resize_center_crop(x, None, 32, 28)[0])


def test_random_resized_crop_boxes_follow_torchvisions_rule():
    """Every box lies in the image with area in [0.08, 1] of it and aspect ratio in [3/4, 4/3] (up to rounding)."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = crop_box(50, 80, gen)
        assert 0 <= top and top + h <= 50 and 0 <= left and left + w <= 80
        assert 0.08 * 4000 - 80 <= h * w <= 4000
        assert 3 / 4 - 0.1 <= w / h <= 4 / 3 + 0.1


def test_random_resized_crop_flip_is_reproducible_from_its_generator():
    _, x = _image(40, 60)
    batch = x.expand(4, -1, -1, -1)
    a = random_resized_crop_flip(batch, None, 24, torch.Generator().manual_seed(3))
    b = random_resized_crop_flip(batch, None, 24, torch.Generator().manual_seed(3))
    assert a.shape == (4, 3, 24, 24)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a[0], a[1])  # each image draws its own box
