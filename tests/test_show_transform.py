"""show-transform: every part of a composition drawn from the same draws the network gets (the rotated image is
torch.rot90 of the input by the drawn quarter turns; the last panel is the composition's own view and label), and
the images come from the configured dataset (Fashion-MNIST by default)."""

from __future__ import annotations

import torch
from test_fashion_mnist_fetch import bare_machine, write_idx_files  # noqa: F401  (fixture)

from pirl_ablate import config
from pirl_ablate.cli import main
from pirl_ablate.commands.show_transform import configured_dataset, configured_size
from pirl_ablate.gin_edge import GIN
from pirl_ablate.transforms.registry import build_transform
from pirl_ablate.transforms.show import apply_stages, describe, load_images


def test_composition_stages_are_the_networks_views_part_by_part():
    config.parse([], ["jigsaw.num_permutations = 10"])
    transform = build_transform("rotation+jigsaw", configuration=GIN)
    images = torch.rand(6, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    stages = apply_stages("rotation+jigsaw", transform, images, torch.Generator().manual_seed(5))
    assert [name for name, _ in stages] == ["rotation", "jigsaw"]
    rotation, jigsaw = stages[0][1], stages[1][1]
    for b in range(6):
        expected = torch.rot90(images[b], int(rotation.params["rotation"][b]), dims=(-2, -1))
        assert torch.equal(rotation.data[b], expected)
    network = transform(images, torch.Generator().manual_seed(5))  # what training would get from this seed
    assert torch.equal(jigsaw.data, network.data) and torch.equal(jigsaw.label, network.label)
    assert torch.equal(jigsaw.label, rotation.params["rotation"] * 10 + network.params["jigsaw.perm_index"])
    caption = describe(jigsaw, 0, part="jigsaw")
    assert "rotated" not in caption and f"of {4 * 10}" in caption and "permutation #" in caption


def test_images_come_from_the_configured_dataset(tmp_path, bare_machine, monkeypatch, capsys):  # noqa: F811
    config.parse([], [])
    assert configured_dataset() == "fashion_mnist"
    gin_file = tmp_path / "mine.gin"
    gin_file.write_text("train.dataset = 'synthetic'\n")
    config.parse([gin_file], [])
    assert configured_dataset() == "synthetic"

    out = tmp_path / "views.png"
    # Fashion-MNIST is the default: on a machine without it, show-transform says so
    assert main(["--quiet", "show-transform", "rotation", "--images", "2", "--out", str(out)]) == 2
    assert "Fashion-MNIST IDX files not found" in capsys.readouterr().err and not out.exists()
    write_idx_files(tmp_path / "data", count=3)
    monkeypatch.setenv("PIRL_ABLATE_DATA", str(tmp_path / "data"))
    assert main(["--quiet", "show-transform", "rotation+jigsaw", "--images", "2", "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")
    assert main(["--quiet", "show-transform", "jigsaw", "--gin", str(gin_file), "--out", str(out)]) == 0


def test_views_are_drawn_at_the_configured_runs_size_and_say_which():
    config.parse([], [])
    assert configured_size() == (256, configured_size()[1]) and "paper" in configured_size()[1]
    config.parse(["gin/pirl_jigsaw.gin"], [])  # the smoke scale: 32 px images, 3x3 cells of 10 px, 8 px patches
    size, scale = configured_size()
    assert size == 32 and "train.image_size" in scale
    images = load_images("synthetic", 2, torch.Generator().manual_seed(0), size)
    assert images.shape == (2, 3, 32, 32)
    assert build_transform("jigsaw", configuration=GIN)(images, torch.Generator().manual_seed(0)).data.shape \
        == (2, 9, 3, 8, 8)


def test_a_kornia_part_is_captioned_with_what_it_drew():
    transform = build_transform("rotation+kornia:RandomSolarize", **{"kornia:RandomSolarize": {"p": 1.0}})
    view = transform(torch.rand(2, 3, 16, 16), torch.Generator().manual_seed(0))
    threshold = float(view.params["kornia:RandomSolarize.thresholds"][1])
    caption = describe(view, 1, part="kornia:RandomSolarize")
    assert "applied" in caption and f"thresholds {threshold:.3g}" in caption and "rotated" not in caption


def test_digits_are_drawn_from_the_digits_datasets_test_split():
    """The bundle's last 300 images (data/digits.py's test split), its 0..16 values scaled to [0, 1] (to the uint8
    rounding of 255/16 steps), grey in all three channels."""
    from sklearn.datasets import load_digits

    test = torch.from_numpy(load_digits().images[-300:]).double().div(16)  # (300, 8, 8)
    images = load_images("digits", 5, torch.Generator().manual_seed(0), size=8).double()
    assert images.shape == (5, 3, 8, 8) and torch.equal(images[:, 0], images[:, 2])
    distance = (images[:, None, 0] - test[None]).abs().amax(dim=(2, 3))  # (5, 300)
    assert (distance.min(dim=1).values < 0.6 / 255).all()
