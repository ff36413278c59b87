"""The synthetic VOCdevkit of Fashion-MNIST garments (`write_synthetic_voc(objects="fashion_mnist")`, the smoke
detection transfer's data) checked against the VOC on-disk format and against what its images hold."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from fmnist import FMNIST, needs_fmnist
from PIL import Image

from pirl_ablate.data import voc
from pirl_ablate.data.voc import read_voc, write_synthetic_voc
from pirl_ablate.errors import DataError

pytestmark = needs_fmnist

# the VOC2007 devkit's annotation format (devkit_doc, "Annotation"): per image these elements, per object these
OBJECT_TAGS = {"name", "pose", "truncated", "difficult", "bndbox"}
BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")
# trousers stand taller than wide and sneakers lie wider than tall in every Fashion-MNIST image; bags vary
SHAPED = ("trouser", "sneaker", "bag")


def _write(root, **kw):
    kw = {"num_trainval": 6, "num_test": 4, "image_size": 64, "classes": SHAPED, "max_objects": 3,
          "objects": "fashion_mnist", "fashion_mnist_root": str(FMNIST), **kw}
    return write_synthetic_voc(root, **kw) / "VOCdevkit" / "VOC2007"


def _objects(base):
    """[(image id, name, difficult, (xmin, ymin, xmax, ymax) as the XML writes them)] in image-id order."""
    out = []
    for xml in sorted((base / "Annotations").glob("*.xml")):
        for obj in ET.parse(xml).getroot().iter("object"):
            box = tuple(int(obj.find("bndbox").find(t).text) for t in BOX_TAGS)
            out.append((xml.stem, obj.find("name").text, obj.find("difficult").text, box))
    return out


def test_the_garment_devkit_is_in_voc_format(tmp_path):
    base = _write(tmp_path)
    sets = {s: (base / "ImageSets" / "Main" / f"{s}.txt").read_text().split() for s in ("trainval", "test")}
    assert len(sets["trainval"]) == 6 and len(sets["test"]) == 4 and not set(sets["trainval"]) & set(sets["test"])
    for image_id in sets["trainval"] + sets["test"]:
        ann = ET.parse(base / "Annotations" / f"{image_id}.xml").getroot()
        assert ann.tag == "annotation" and ann.find("filename").text == f"{image_id}.jpg"
        size = {t: int(ann.find("size").find(t).text) for t in ("width", "height", "depth")}
        with Image.open(base / "JPEGImages" / f"{image_id}.jpg") as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (size["width"], size["height"]) == (64, 64)
        assert size["depth"] == 3
        objects = ann.findall("object")
        assert 1 <= len(objects) <= 3
        for obj in objects:
            assert {child.tag for child in obj} == OBJECT_TAGS
            assert obj.find("name").text in SHAPED and obj.find("difficult").text in ("0", "1")
            xmin, ymin, xmax, ymax = (int(obj.find("bndbox").find(t).text) for t in BOX_TAGS)
            assert 1 <= xmin <= xmax <= 64 and 1 <= ymin <= ymax <= 64  # VOC: 1-based, inclusive
    # torchvision's VOC reader takes it as a real devkit
    assert len(read_voc(tmp_path, "2007", "test", SHAPED)) == 4


def test_boxes_enclose_the_garment_pixels_and_nothing_else(tmp_path, monkeypatch):
    """On a black background every bright pixel lies in a box, and each box touches a garment pixel on each of its
    four edges; trousers' boxes are taller than wide and sneakers' wider than tall (the class is the garment's)."""
    monkeypatch.setitem(voc.BACKGROUND, "fashion_mnist", (0, 1))
    base = _write(tmp_path, num_trainval=12, num_test=4)
    objects = _objects(base)
    for image_id in {o[0] for o in objects}:
        with Image.open(base / "JPEGImages" / f"{image_id}.jpg") as im:
            rgb = np.asarray(im).astype(int)
        assert np.abs(rgb - rgb[..., :1]).max() <= 8  # grey: the three channels alike (JPEG's chroma error aside)
        grey = rgb.mean(-1)
        inside = np.zeros_like(grey, dtype=bool)
        for _, name, _, (xmin, ymin, xmax, ymax) in (o for o in objects if o[0] == image_id):
            x0, y0, x1, y1 = xmin - 1, ymin - 1, xmax, ymax  # 0-based, exclusive end
            inside[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = True  # 1 px for JPEG's blur of the edge
            patch = grey[y0:y1, x0:x1]
            # the box is tight: the garment (pixels >= 32 when pasted) reaches each edge
            assert patch[0].max() >= 16 and patch[-1].max() >= 16, (image_id, name)
            assert patch[:, 0].max() >= 16 and patch[:, -1].max() >= 16, (image_id, name)
            if name == "trouser":
                assert y1 - y0 > x1 - x0
            if name == "sneaker":
                assert x1 - x0 > y1 - y0
        assert grey[~inside].max() < 16, image_id
    assert {o[1] for o in objects} == set(SHAPED)


def test_every_fifth_object_is_difficult_and_a_seed_redraws_the_devkit(tmp_path):
    objects = _objects(_write(tmp_path / "a"))
    assert [o[2] for o in objects] == ["1" if (i + 1) % 5 == 0 else "0" for i in range(len(objects))]
    again = _write(tmp_path / "b")
    other = _write(tmp_path / "c", seed=1)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert _objects(again) == objects and _objects(other) != objects


def test_bad_object_kinds_and_class_names_are_refused(tmp_path):
    with pytest.raises(DataError, match="synthetic_voc.objects = 'circles'.*valid: rectangles, fashion_mnist"):
        write_synthetic_voc(tmp_path, objects="circles")
    with pytest.raises(DataError, match=r"\['aeroplane'\] are not Fashion-MNIST classes"):
        write_synthetic_voc(tmp_path, objects="fashion_mnist", classes=("aeroplane", "coat"))
    assert not (tmp_path / "VOCdevkit").exists()


def test_trainval_and_test_garments_come_from_the_two_halves_of_the_test_split(tmp_path, monkeypatch):
    """Stand-in garments whose shape tells their half (test images 0..4999: a wide bar, 5000..9999: a tall one)
    and whose grey level tells their label: trainval boxes are wide, test boxes tall, each of its garment's class."""
    monkeypatch.setitem(voc.BACKGROUND, "fashion_mnist", (0, 1))
    labels = torch.arange(10000) % 10
    images = torch.zeros(10000, 28, 28, dtype=torch.uint8)
    level = 60 + 15 * labels.to(torch.uint8)
    images[:5000, 10:18, 2:26] = level[:5000, None, None]
    images[5000:, 2:26, 10:18] = level[5000:, None, None]
    monkeypatch.setattr(voc, "_test_garments", lambda root: (images, labels))
    names = ("coat", "bag", "trouser")
    base = _write(tmp_path, num_trainval=8, num_test=8, classes=names)
    trainval = set((base / "ImageSets" / "Main" / "trainval.txt").read_text().split())
    for image_id, name, _, (xmin, ymin, xmax, ymax) in _objects(base):
        wide = xmax - xmin > ymax - ymin
        assert wide == (image_id in trainval), (image_id, name)
        with Image.open(base / "JPEGImages" / f"{image_id}.jpg") as im:
            centre = np.asarray(im.convert("L"))[(ymin + ymax) // 2 - 1, (xmin + xmax) // 2 - 1]
        assert abs(int(centre) - (60 + 15 * voc.GARMENTS.index(name))) <= 6, (image_id, name, centre)
