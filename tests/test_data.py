"""Datasets, loaders and the device-side conversion, checked against the files' bytes and known answers."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import gin
import numpy as np
import pytest
import torch
from fmnist import FMNIST, needs_fmnist

from pirl_ablate import config
from pirl_ablate.data import build_dataset, fashion_mnist, make_loader, to_device_batch
from pirl_ablate.errors import DataError
from pirl_ablate.gin_edge import GIN


@pytest.fixture(autouse=True)
def _clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


# ------------------------------------------------------------------------------------------------ Fashion-MNIST
@needs_fmnist
def test_fashion_mnist_matches_the_idx_bytes_and_known_labels():
    raw_labels = gzip.open(FMNIST / "train-labels-idx1-ubyte.gz").read()
    raw_images = gzip.open(FMNIST / "train-images-idx3-ubyte.gz").read()
    assert raw_labels[:4] == b"\x00\x00\x08\x01" and raw_images[:4] == b"\x00\x00\x08\x03"
    train = build_dataset("fashion_mnist", "train")
    test = build_dataset("fashion_mnist", "test")
    assert (len(train), len(test)) == (60_000, 10_000)
    # Known answer: the first training image is an ankle boot (9), then two T-shirts (0, 0), a dress (3).
    assert train.labels[:4].tolist() == [9, 0, 0, 3] == list(raw_labels[8:12])
    assert int(test.labels[0]) == 9
    image, index, label = train[1]
    assert image.shape == (1, 28, 28) and image.dtype == torch.uint8 and (index, label) == (1, 0)
    expected = torch.tensor(list(raw_images[16 + 784:16 + 2 * 784]), dtype=torch.uint8).view(1, 28, 28)
    assert torch.equal(image, expected)
    # Fashion-MNIST is balanced: 6,000 images per class in train, 1,000 in test.
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10


@needs_fmnist
def test_subsets_first_n_seeded_and_too_large():
    full = build_dataset("fashion_mnist", "test")
    first = build_dataset("fashion_mnist", "test", subset=50)
    assert torch.equal(first.images, full.images[:50])
    a = build_dataset("fashion_mnist", "test", subset=50, subset_seed=1)
    b = build_dataset("fashion_mnist", "test", subset=50, subset_seed=1)
    c = build_dataset("fashion_mnist", "test", subset=50, subset_seed=2)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert not torch.equal(a.images, first.images)
    with pytest.raises(DataError, match=r"subset=70000 .* 10000"):
        build_dataset("fashion_mnist", "test", subset=70_000)


@needs_fmnist
def test_gin_binds_the_two_splits_apart(tmp_path):
    cfg = tmp_path / "data.gin"
    cfg.write_text("fashion_mnist.subset = 100\ntest/fashion_mnist.subset = 20\n")
    config.parse([cfg])
    assert len(build_dataset("fashion_mnist", "train", configuration=GIN)) == 100
    assert len(build_dataset("fashion_mnist", "test", configuration=GIN)) == 20


def test_fashion_mnist_not_found_lists_the_three_places(tmp_path, monkeypatch):
    monkeypatch.setenv("PIRL_ABLATE_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    with pytest.raises(DataError) as e:
        build_dataset("fashion_mnist")
    msg = str(e.value).splitlines()[0]  # gin appends "In call to configurable ..." on further lines
    assert str(tmp_path / "nowhere") in msg and "no-debian" in msg and "FashionMNIST" in msg


def _idx(path: Path, dims: tuple[int, ...], value: int) -> None:
    """A gzipped unsigned-byte IDX file of shape `dims` filled with `value`."""
    header = b"\x00\x00\x08" + bytes([len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    with gzip.open(path, "wb") as fh:
        fh.write(header + bytes([value]) * int(np.prod(dims)))


def test_fashion_mnist_root_folder_is_used_first(tmp_path):
    _idx(tmp_path / "train-images-idx3-ubyte.gz", (3, 28, 28), 7)
    _idx(tmp_path / "train-labels-idx1-ubyte.gz", (3,), 4)
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", (2, 28, 28), 9)
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", (2,), 1)
    ds = build_dataset("fashion_mnist", "train", root=str(tmp_path))
    assert len(ds) == 3 and int(ds.images.min()) == int(ds.images.max()) == 7 and ds.labels.tolist() == [4] * 3
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as fh:  # header says 2 images, holds 1
        fh.write(b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(784))
    with pytest.raises(DataError, match="truncated"):
        build_dataset("fashion_mnist", "test", root=str(tmp_path))


# ------------------------------------------------------------------------------------- CIFAR-10 / STL-10 formats
def test_cifar10_reads_the_python_batch_format(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=3).tolist()
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, fh)
        batches[name] = (data, labels)
    train = build_dataset("cifar10", "train", root=str(tmp_path))
    test = build_dataset("cifar10", "test", root=str(tmp_path))
    assert (len(train), len(test)) == (15, 3)
    data, labels = batches["data_batch_2"]
    image, index, label = train[4]  # second image of the second batch
    # CIFAR-10 rows are channel-major: pixel (c, y, x) is byte c*1024 + y*32 + x
    assert int(image[2, 5, 7]) == int(data[1, 2 * 1024 + 5 * 32 + 7])
    assert int(image[0, 31, 0]) == int(data[1, 31 * 32])
    assert (index, label) == (4, labels[1])
    assert test.labels.tolist() == batches["test_batch"][1]


def test_cifar10_offline_names_the_expected_path(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "cifar-10-batches-py" / "data_batch_1")):
        build_dataset("cifar10", "train", root=str(tmp_path))


def test_stl10_reads_the_column_major_binary(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    raw = np.random.default_rng(1).integers(0, 256, size=2 * 3 * 96 * 96, dtype=np.uint8)
    raw.tofile(folder / "test_X.bin")
    np.array([3, 10], dtype=np.uint8).tofile(folder / "test_y.bin")
    ds = build_dataset("stl10", "test", root=str(tmp_path))
    image, _, label = ds[1]
    # column-major per channel: pixel (c, y, x) of image i is byte i*27648 + c*9216 + x*96 + y
    assert int(image[1, 10, 40]) == int(raw[27648 + 9216 + 40 * 96 + 10])
    assert ds.labels.tolist() == [2, 9] and label == 9


# ------------------------------------------------------------------------------------------------- imagefolder
def _png(path: Path, colour: tuple[int, int, int], size=(40, 20)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_imagefolder_classes_resize_and_corrupt_policy(tmp_path):
    _png(tmp_path / "train" / "cat" / "a.png", (255, 0, 0))
    _png(tmp_path / "train" / "cat" / "b.png", (250, 0, 0))
    _png(tmp_path / "train" / "dog" / "c.png", (0, 0, 255))
    (tmp_path / "train" / "dog" / "broken.jpg").write_bytes(b"not a jpeg at all")
    ds = build_dataset("imagefolder", "train", root=str(tmp_path), max_side=16)
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2
    assert ds.files[2].name == "broken.jpg" and ds.files[3].name == "c.png"  # sorted within each class
    image, _, label = ds[3]
    assert image.shape == (3, 8, 16) and label == 1  # 40 x 20 at its own aspect ratio, longer side 16
    assert image[2].min() == 255 and image[:2].max() == 0  # pure blue survives the resize
    loader = make_loader(ds, 4, num_workers=0)
    loader.set_epoch(0)
    with pytest.raises(DataError, match=r"broken\.jpg"):
        list(loader)
    skipping = build_dataset("imagefolder", "train", root=str(tmp_path), max_side=16, on_error="skip")
    loader = make_loader(skipping, 4, num_workers=0)
    loader.set_epoch(0)
    (images, index, labels), = list(loader)
    assert index.tolist() == [0, 1, 3] and labels.tolist() == [0, 0, 1] and images.shape == (3, 3, 8, 16)
    assert images.sizes.tolist() == [[8, 16]] * 3
    workers = make_loader(skipping, 2, num_workers=2)  # decoding in worker processes gives the same batches
    workers.set_epoch(0)
    batches = list(workers)
    assert torch.cat([i for _, i, _ in batches]).tolist() == [0, 1, 3]
    assert torch.equal(torch.cat([im for im, _, _ in batches]), images)


def test_imagefolder_flat_folder_is_unlabelled(tmp_path):
    for i in range(3):
        _png(tmp_path / f"{i}.png", (i, i, i))
    ds = build_dataset("imagefolder", "train", root=str(tmp_path), max_side=8)
    assert len(ds) == 3 and ds.num_classes is None and ds.labels.tolist() == [-1, -1, -1]
    assert int(ds[2][0].max()) == 2


# ------------------------------------------------------------------------------------------- digits, synthetic
def test_digits_and_synthetic():
    train, test = build_dataset("digits", "train"), build_dataset("digits", "test")
    assert len(train) + len(test) == 1797 and train.images.shape[1:] == (1, 8, 8)
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0  # 0..16 stretched to 0..255
    a = build_dataset("synthetic", size=40, num_classes=4, image_size=16)
    b = build_dataset("synthetic", size=40, num_classes=4, image_size=16)
    assert torch.equal(a.images, b.images) and a.labels.tolist() == [i % 4 for i in range(40)]
    # classes are separable: nearest class mean on held-out images beats chance (25%) by far
    t = build_dataset("synthetic", "test", size=40, num_classes=4, image_size=16)
    x, y = a.images.flatten(1).float(), a.labels
    means = torch.stack([x[y == c].mean(0) for c in range(4)])
    pred = torch.cdist(t.images.flatten(1).float(), means).argmin(1)
    assert (pred == t.labels).float().mean() > 0.6


# -------------------------------------------------------------------------------------------------- the loader
def test_loader_order_depends_on_seed_and_epoch_and_ranks_partition():
    ds = build_dataset("synthetic", size=20, image_size=8)
    loader = make_loader(ds, 5, seed=3)
    orders = {}
    for epoch in (0, 1, 0):
        loader.set_epoch(epoch)
        orders.setdefault(epoch, []).append(torch.cat([i for _, i, _ in loader]).tolist())
    assert orders[0][0] == orders[0][1] != orders[1][0]
    assert sorted(orders[0][0]) == list(range(20))
    loader.set_epoch(0, start_step=2)
    assert torch.cat([i for _, i, _ in loader]).tolist() == orders[0][0][10:]
    shares = []
    for rank in range(2):
        part = make_loader(ds, 5, seed=3, rank=rank, world_size=2)
        part.set_epoch(0)
        shares.append(torch.cat([i for _, i, _ in part]).tolist())
    assert len(shares[0]) == len(shares[1]) == 10 and sorted(shares[0] + shares[1]) == list(range(20))
    images, index, labels = next(iter(make_loader(ds, 5)))
    assert index.tolist() == [0, 1, 2, 3, 4] and torch.equal(images, ds.images[:5])


def test_to_device_batch_converts_expands_and_resizes():
    grey = torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)
    grey[1] = 51
    x = to_device_batch(grey, "cpu", size=32)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.ones(3, 32, 32)) and torch.allclose(x[1], torch.full((3, 32, 32), 0.2))
    ramp = torch.arange(16, dtype=torch.uint8).repeat(1, 3, 16, 1) * 16  # x-ramp, (1, 3, 16, 16)
    small = to_device_batch(ramp, "cpu", size=8)
    assert small.shape == (1, 3, 8, 8)
    # antialiased 2x downsampling averages pixel pairs (bilinear, triangle filter of width 2: 1/4, 3/4, 3/4, 1/4)
    expected = (0.25 * 48 + 0.75 * 64 + 0.75 * 80 + 0.25 * 96) / 2 / 255  # input pixels 3..6 around 4.5
    assert abs(float(small[0, 0, 0, 2]) - expected) < 1e-5
