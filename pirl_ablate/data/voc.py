"""PASCAL VOC in its standard VOCdevkit layout: image-level multi-label targets (`voc2007`) and boxes (detection).

    ROOT/VOCdevkit/VOC2007/{JPEGImages/<id>.jpg, Annotations/<id>.xml, ImageSets/Main/{trainval,test}.txt}
    ROOT/VOCdevkit/VOC2012/...   (trainval only; VOC07+12 detection trains on both trainvals)

Split files and annotation XML are read with torchvision's VOC parsers (`VOCDetection`'s file lists and
`parse_voc_xml`). Image-level targets follow VOC's own `ImageSets/Main/<class>_<split>.txt` convention as Goyal et
al. 2019 / VISSL load it: per image and class, 1 = an object of the class that is not marked difficult, -1 = only
difficult objects of the class (ignored by the SVM protocol's AP), 0 = absent.

`write_synthetic_voc` writes a small VOCdevkit with known classes and boxes (some difficult): coloured rectangles
(the test fixture) or Fashion-MNIST garments on a dark background (the smoke-scale detection transfer, whose boxes
need garment features to be classified).
"""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from pirl_ablate.data.arrays import ImageDataset, Item, subset_indices
from pirl_ablate.data.imagefolder import decode
from pirl_ablate.data.registry import register_dataset
from pirl_ablate.errors import DataError

if TYPE_CHECKING:
    from PIL import ImageDraw

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
IMAGE_SETS = {"train": "trainval", "test": "test"}  # our split -> VOC's image set


@dataclass
class Annotation:
    """One image's objects: boxes (K, 4) float xyxy in continuous pixel coordinates (VOC's 1-based inclusive
    corners: xmin - 1, ymin - 1, xmax, ymax, as Detectron2 reads them), labels (K,) long class indices, difficult
    (K,) bool; width, height of the image."""

    path: Path
    boxes: Tensor
    labels: Tensor
    difficult: Tensor
    width: int
    height: int


def read_voc(root: str | Path, year: str, image_set: str, classes: tuple[str, ...] = VOC_CLASSES
             ) -> list[Annotation]:
    """Every image of VOC `year`'s `image_set` under `root` (the folder holding VOCdevkit/) with its objects.

    Objects of classes not in `classes` are dropped. Raises DataError naming the missing folder or file.
    """
    from torchvision.datasets import VOCDetection

    try:
        voc = VOCDetection(str(root), year=year, image_set=image_set)
    except (RuntimeError, FileNotFoundError, ValueError) as e:
        raise DataError(f"VOC{year} {image_set} under {root}: {e} (expected {root}/VOCdevkit/VOC{year}/ with "
                        f"JPEGImages/, Annotations/, ImageSets/Main/{image_set}.txt)") from None
    out = []
    for image, xml in zip(voc.images, voc.targets):
        try:
            ann = voc.parse_voc_xml(ET.parse(xml).getroot())["annotation"]
        except (OSError, ET.ParseError) as e:
            raise DataError(f"{xml}: cannot read VOC annotation ({e})") from None
        objects = [o for o in ann.get("object", []) if o["name"] in classes]
        try:
            width, height = int(ann["size"]["width"]), int(ann["size"]["height"])
            boxes = [[float(o["bndbox"][k]) - (k in ("xmin", "ymin")) for k in ("xmin", "ymin", "xmax", "ymax")]
                     for o in objects]
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{xml}: cannot read VOC annotation (size or bndbox: {type(e).__name__} {e})") from None
        _check_boxes(xml, boxes, width, height)
        out.append(Annotation(
            path=Path(image), boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            labels=torch.tensor([classes.index(o["name"]) for o in objects], dtype=torch.long),
            difficult=torch.tensor([o.get("difficult", "0") == "1" for o in objects], dtype=torch.bool),
            width=width, height=height))
    return out


def _check_boxes(xml: str, boxes: list[list[float]], width: int, height: int) -> None:
    """Every box (x0, y0, x1, y1, continuous coordinates) non-empty and inside the `width` x `height` image:
    DataError naming the file and the box (as the XML writes it, 1-based) otherwise."""
    for x0, y0, x1, y1 in boxes:
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise DataError(f"{xml}: box xmin={x0 + 1:g} ymin={y0 + 1:g} xmax={x1:g} ymax={y1:g} is inverted or "
                            f"outside the {width}x{height} image (VOC boxes: 1 <= xmin <= xmax <= width, "
                            "1 <= ymin <= ymax <= height)")


def image_targets(annotations: list[Annotation], num_classes: int) -> Tensor:
    """(N, num_classes) int8: 1 = a non-difficult object of the class, -1 = only difficult ones, 0 = none."""
    targets = torch.zeros(len(annotations), num_classes, dtype=torch.int8)
    for i, a in enumerate(annotations):
        targets[i, a.labels[a.difficult]] = -1
        targets[i, a.labels[~a.difficult]] = 1
    return targets


class VOCClassification(ImageDataset):
    """Images decoded to uint8 (3, image_size, image_size) (shorter side resized, centre crop), with multi-label
    `targets` (N, C) int8 as `image_targets`. `labels` (N,) is the first present class (-1 if none): the feature
    cache keys on it; the SVM protocol reads `targets`."""

    def __init__(self, annotations: list[Annotation], classes: tuple[str, ...], *, split: str, image_size: int):
        self.annotations, self.classes = annotations, classes
        self.name, self.split, self.num_classes = "voc2007", split, len(classes)
        self.image_size = image_size
        self.targets = image_targets(annotations, len(classes))
        present = self.targets == 1
        self.labels = torch.where(present.any(1), present.to(torch.int8).argmax(1), -1).long()

    def __getitem__(self, index: int) -> Item:
        return decode(self.annotations[index].path, self.image_size), index, int(self.labels[index])


@register_dataset("voc2007")
def voc2007(split: str = "train", subset: int | None = None, subset_seed: int | None = None,
            root: str | None = None, image_size: int = 224, classes: tuple[str, ...] = VOC_CLASSES
            ) -> VOCClassification:
    """VOC2007 image classification (paper Tables 2, 4, 5 and Figure 7): trainval for "train", test for "test".

    root: the folder holding VOCdevkit/ (gin: `voc2007.root`). image_size 224: the input size of Goyal et al.'s
    SVM benchmark (shorter side resized, centre crop). classes: VOC's 20; a synthetic devkit binds its own.
    """
    if root is None:
        raise DataError("voc2007: bind voc2007.root to the folder holding VOCdevkit/VOC2007")
    if split not in IMAGE_SETS:
        raise DataError(f"voc2007: split {split!r} (valid: {', '.join(IMAGE_SETS)})")
    annotations = read_voc(root, "2007", IMAGE_SETS[split], tuple(classes))
    idx = subset_indices(len(annotations), subset, subset_seed, what=f"voc2007 {split}")
    if idx is not None:
        annotations = [annotations[i] for i in idx.tolist()]
    return VOCClassification(annotations, tuple(classes), split=split, image_size=image_size)


# ------------------------------------------------------------------------------------------ synthetic VOCdevkit
SHAPE_COLOURS = ((230, 40, 40), (40, 200, 40), (40, 80, 230), (230, 200, 40), (200, 40, 200))
# Fashion-MNIST's ten classes (pirl_ablate.data.fashion_mnist.CLASSES, in label order) as VOC object names
GARMENTS = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")
OBJECTS = ("rectangles", "fashion_mnist")
GARMENT_INK = 32  # resized garment pixels below this are left out (background): the box encloses the rest
BACKGROUND = {"rectangles": (90, 150), "fashion_mnist": (0, 32)}  # grey noise, uniform in [low, high)


def write_synthetic_voc(root: str | Path, *, num_trainval: int = 96, num_test: int = 48, image_size: int = 64,
                        classes: tuple[str, ...] = VOC_CLASSES[:3], max_objects: int = 2,
                        difficult_every: int = 5, seed: int = 0, years: tuple[str, ...] = ("2007",),
                        objects: str = "rectangles", fashion_mnist_root: str | None = None) -> Path:
    """Write a VOCdevkit of `image_size`^2 JPEGs on noise, each with 1..max_objects objects; every
    `difficult_every`-th object is marked difficult. Returns `root`. Every draw comes from a torch.Generator seeded
    with `seed`. VOC2007 gets trainval and test; any other year (e.g. "2012") gets trainval only, like the real
    devkit. The objects:

    - "rectangles": filled rectangles on grey noise (uint8 90..149 per channel) whose colour is their class
      (SHAPE_COLOURS[class]), sides image_size / 4 .. image_size / 2; any `classes` names (at most 5).
    - "fashion_mnist": grey Fashion-MNIST garments of the TEST split (the pre-training reads the train split)
      resized to a square of side image_size / 4 .. image_size / 2 and pasted (pixel-wise maximum) on dark grey
      noise (0..31), every channel alike: the pre-training's domain (grey garments on black). `classes` are names
      of GARMENTS; trainval draws its garments from test images 0..4999, test from 5000..9999, so no garment is in
      both. The box is the tight box of the pasted garment's pixels of at least GARMENT_INK; garments never
      overlap (a garment that finds no free place in 10 draws is left out). fashion_mnist_root: the folder of its
      IDX files (None: `pirl_ablate.data.fashion_mnist.find_files`' search).

    The devkit is written into a temporary folder beside it and renamed to `root`/VOCdevkit when complete, so a
    process killed while writing leaves no VOCdevkit (a hidden `.VOCdevkit-*` folder at most), never half of one;
    DataError if `root`/VOCdevkit exists already.
    """
    classes = tuple(classes)
    if objects not in OBJECTS:
        raise DataError(f"synthetic_voc.objects = {objects!r} (valid: {', '.join(OBJECTS)})")
    garments = None
    if objects == "rectangles" and len(classes) > len(SHAPE_COLOURS):
        raise DataError(f"synthetic_voc: at most {len(SHAPE_COLOURS)} classes, got {len(classes)}")
    if objects == "fashion_mnist":
        unknown = [c for c in classes if c not in GARMENTS]
        if unknown:
            raise DataError(f"synthetic_voc.objects = 'fashion_mnist': classes {unknown} are not Fashion-MNIST "
                            f"classes (valid: {', '.join(GARMENTS)})")
        garments = _test_garments(fashion_mnist_root)
    root = Path(root)
    target = root / "VOCdevkit"
    if target.exists():
        raise DataError(f"{target}: exists already; remove it to write the synthetic devkit again")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".VOCdevkit-") as tmp:
        _write_devkit(Path(tmp), image_size, classes, max_objects, difficult_every, seed, years,
                      {"trainval": num_trainval, "test": num_test}, garments)
        os.rename(Path(tmp) / "VOCdevkit", target)
    return root


def _test_garments(root: str | None) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST's test split as read from its IDX files: images (10000, 28, 28) uint8, labels (10000,) long
    (read directly, so that no gin binding of the `fashion_mnist` dataset, e.g. its subset, applies)."""
    from pirl_ablate.data.fashion_mnist import FILES, find_files, read_idx

    folder = find_files(root)
    images, labels = (torch.from_numpy(read_idx(folder / f).copy()) for f in FILES["test"])
    return images, labels.long()


def _write_devkit(root: Path, image_size: int, classes: tuple[str, ...], max_objects: int, difficult_every: int,
                  seed: int, years: tuple[str, ...], sizes: dict[str, int],
                  garments: tuple[Tensor, Tensor] | None) -> None:
    """`write_synthetic_voc`'s drawing, into `root`/VOCdevkit (garments: `_test_garments`, or None for rectangles)."""
    from PIL import Image, ImageDraw

    gen = torch.Generator().manual_seed(seed)
    num_images = num_objects = 0
    low, high = BACKGROUND["rectangles" if garments is None else "fashion_mnist"]

    def draw(n: int) -> int:
        return int(torch.randint(n, (1,), generator=gen))

    for year in years:
        base = root / "VOCdevkit" / f"VOC{year}"
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        sets = sizes if year == "2007" else {"trainval": sizes["trainval"]}
        for image_set, n in sets.items():
            pool = None if garments is None else _garment_pool(garments, classes, image_set, gen)
            ids = []
            for _ in range(n):
                image_id = f"{year}_{num_images:06d}"
                num_images += 1
                ids.append(image_id)
                if garments is None:
                    noise = torch.randint(low, high, (image_size, image_size, 3), generator=gen, dtype=torch.uint8)
                    im = Image.fromarray(np.asarray(noise))
                    placed = _draw_rectangles(ImageDraw.Draw(im), image_size, len(classes), max_objects, draw)
                else:
                    noise = torch.randint(low, high, (image_size, image_size), generator=gen, dtype=torch.uint8)
                    canvas, placed = _paste_garments(noise, garments[0], pool, max_objects, draw)
                    im = Image.fromarray(np.asarray(canvas)).convert("RGB")
                xml = _annotation_xml(image_id, year, image_size)
                for c, (x0, y0, x1, y1) in placed:
                    num_objects += 1
                    difficult = difficult_every > 0 and num_objects % difficult_every == 0
                    obj = ET.SubElement(xml, "object")
                    for tag, value in (("name", classes[c]), ("pose", "Unspecified"), ("truncated", "0"),
                                       ("difficult", "1" if difficult else "0")):
                        ET.SubElement(obj, tag).text = value
                    box = ET.SubElement(obj, "bndbox")
                    for tag, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
                        ET.SubElement(box, tag).text = str(value)
                im.save(base / "JPEGImages" / f"{image_id}.jpg", quality=95)
                ET.ElementTree(xml).write(base / "Annotations" / f"{image_id}.xml")
            (base / "ImageSets" / "Main" / f"{image_set}.txt").write_text("\n".join(ids) + "\n")


def _annotation_xml(image_id: str, year: str, image_size: int) -> ET.Element:
    """A VOC annotation's image-level elements (folder, filename, size, segmented), objects to be added."""
    xml = ET.Element("annotation")
    ET.SubElement(xml, "folder").text = f"VOC{year}"
    ET.SubElement(xml, "filename").text = f"{image_id}.jpg"
    size = ET.SubElement(xml, "size")
    for tag, value in (("width", image_size), ("height", image_size), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(xml, "segmented").text = "0"
    return xml


def _draw_rectangles(canvas: ImageDraw.ImageDraw, image_size: int, num_classes: int, max_objects: int,
                     draw: Callable[[int], int]) -> list[tuple[int, tuple[int, int, int, int]]]:
    """1..max_objects filled rectangles (may overlap) on `canvas` (PIL ImageDraw): [(class, (x0, y0, x1, y1))] with
    0-based x0, y0 and exclusive x1, y1."""
    placed = []
    for _ in range(1 + draw(max_objects)):
        c = draw(num_classes)
        w, h = image_size // 4 + draw(image_size // 4), image_size // 4 + draw(image_size // 4)
        x0, y0 = draw(image_size - w), draw(image_size - h)
        canvas.rectangle((x0, y0, x0 + w - 1, y0 + h - 1), fill=SHAPE_COLOURS[c])
        placed.append((c, (x0, y0, x0 + w, y0 + h)))
    return placed


def _garment_pool(garments: tuple[Tensor, Tensor], classes: tuple[str, ...], image_set: str,
                  gen: torch.Generator) -> list[list[int]]:
    """Per class of `classes`, the indices of its test-split garments of `image_set`'s half (trainval: 0..4999,
    test: 5000..9999) in a seeded random order; `_paste_garments` takes them in turn."""
    labels = garments[1]
    half = len(labels) // 2
    offset = 0 if image_set == "trainval" else half
    pool = []
    for name in classes:
        idx = offset + (labels[offset:offset + half] == GARMENTS.index(name)).nonzero().flatten()
        pool.append(idx[torch.randperm(len(idx), generator=gen)].tolist())
    return pool


def _paste_garments(canvas: Tensor, images: Tensor, pool: list[list[int]], max_objects: int,
                    draw: Callable[[int], int]) -> tuple[Tensor, list[tuple[int, tuple[int, int, int, int]]]]:
    """Paste 1..max_objects garments (classes drawn uniformly, images taken in turn from `pool`, each resized to a
    square of side S / 4 .. S / 2 - 1 with PIL's bilinear filter, pixels below GARMENT_INK dropped) on the (S, S)
    uint8 `canvas` by the pixel-wise maximum, their squares not overlapping. Returns the canvas and [(class, the
    tight box (x0, y0, x1, y1) of the garment's pixels, 0-based x0, y0, exclusive x1, y1)]."""
    from PIL import Image

    size = canvas.shape[0]
    canvas = canvas.clone()
    squares: list[tuple[int, int, int]] = []
    placed = []
    for _ in range(1 + draw(max_objects)):
        c = draw(len(pool))
        side = size // 4 + draw(size // 4)
        for _ in range(10):
            x0, y0 = draw(size - side + 1), draw(size - side + 1)
            if all(x0 + side <= x or x + s <= x0 or y0 + side <= y or y + s <= y0 for x, y, s in squares):
                break
        else:
            continue
        source = pool[c].pop(0)
        pool[c].append(source)  # a class that runs out of garments starts its order again
        garment = torch.from_numpy(np.asarray(
            Image.fromarray(images[source].numpy()).resize((side, side), Image.BILINEAR)).copy())
        garment[garment < GARMENT_INK] = 0
        rows, cols = garment.any(1).nonzero().flatten(), garment.any(0).nonzero().flatten()
        if len(rows) == 0:
            continue
        region = canvas[y0:y0 + side, x0:x0 + side]
        torch.maximum(region, garment, out=region)
        squares.append((x0, y0, side))
        placed.append((c, (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1)))
    return canvas, placed
