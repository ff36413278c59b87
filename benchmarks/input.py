"""Images/s per CPU core of the input path's worker stage, against VISSL's per-sample PIL pipeline, same run.

    python benchmarks/input.py [--images 60] [--repeats 3] [--out benchmarks/input.md]

Writes `--images` JPEGs of 333-800 px at ImageNet's aspect ratios (4:3, 3:4, 3:2, 2:3, 1:1; quality 90, smooth
content with noise, about ImageNet's file sizes) into a temporary folder and times, on one core
(torch.set_num_threads(1)), the best of `--repeats` passes over them of:

- VISSL-style: what one VISSL PIRL worker does per image with torchvision's PIL transforms (VISSL's
  `pirl_jigsaw_4node_resnet50.yaml`): decode, RandomResizedCrop(224) + ColorJitter(0.4, 0.4, 0.4, 0.2) +
  RandomGrayscale(0.2) + flip + ToTensor for the image view, and RandomResizedCrop(255, scale 0.6-1) cut into nine
  64 px patches jittered inside 85 px cells, each with its own ColorJitter + RandomGrayscale + flip + ToTensor.
- pirl-ablate worker: `imagefolder`'s decode (own aspect ratio, longer side <= 512, PIL draft mode) and the batch's
  padding to a canvas (`pad_to_canvas`, batches of 32): everything a worker does; the views are made on the device.
- the previous worker: decode to the 256 px centre square (`imagefolder.decode`, still VOC's).
- torchvision.io.decode_jpeg alone (file bytes -> uint8 tensor, no resize), and PIL's draft-mode decode alone
  (draft to a 256 px shorter side, as ImageNet pipelines that resize to 256 would).
- the worker of `imagefolder.decode_on = "device"`: the JPEG's header checked by PIL and its bytes read; with a GPU,
  also `torchvision.io.decode_jpeg(device="cuda")` of the batch there (device time; "no GPU here" otherwise).
"""

from __future__ import annotations

import argparse
import io
import platform
import random
import tempfile
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torchvision.io
import torchvision.transforms as T
from PIL import Image
from timing import timings

from pirl_ablate.data.imagefolder import decode, decode_bounded, read_jpeg
from pirl_ablate.data.loader import collate_skipping, pad_to_canvas

ASPECTS = (4 / 3, 3 / 4, 3 / 2, 2 / 3, 1.0)


def write_jpegs(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` JPEGs with a longer side of 333-800 px at ImageNet's aspect ratios."""
    rng = np.random.default_rng(seed)
    files = []
    for n in range(count):
        longer = int(rng.integers(333, 801))
        aspect = ASPECTS[n % len(ASPECTS)]
        w, h = (longer, round(longer / aspect)) if aspect >= 1 else (round(longer * aspect), longer)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        phase = rng.uniform(0, 6.28, 3)
        smooth = np.stack([np.sin(xx / (20 + 15 * c) + yy / (30 + 10 * c) + phase[c]) for c in range(3)], -1)
        rgb = np.clip(128 + 90 * smooth + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        path = folder / f"{n:03d}.jpg"
        Image.fromarray(rgb).save(path, quality=90)
        files.append(path)
    return files


class VisslPirl:
    """VISSL's PIRL jigsaw recipe per sample, with torchvision's PIL transforms (its `ImgPilToPatchesAndImage`)."""

    def __init__(self):
        jitter = T.ColorJitter(0.4, 0.4, 0.4, 0.2)
        self.image = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), jitter, T.RandomGrayscale(0.2),
                                T.ToTensor()])
        self.crop = T.RandomResizedCrop(255, scale=(0.6, 1.0))
        self.patch = T.Compose([T.RandomHorizontalFlip(), jitter, T.RandomGrayscale(0.2), T.ToTensor()])

    def __call__(self, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        with Image.open(path) as im:
            im = im.convert("RGB")
        crop = self.crop(im)
        patches = []
        for cell in range(9):
            top, left = divmod(cell, 3)
            dy, dx = random.randint(0, 21), random.randint(0, 21)
            x, y = left * 85 + dx, top * 85 + dy
            patches.append(self.patch(crop.crop((x, y, x + 64, y + 64))))
        return self.image(im), torch.stack(patches)


def best_rates(stages: dict[str, Callable[[], None]], count: int, repeats: int) -> dict[str, float]:
    """Images/s of each stage's fastest of `repeats` passes (each runs one pass over `count` images), the stages
    interleaved round by round so that a change in the machine's load touches all of them alike."""
    return {name: count / min(t) for name, t in timings(stages, repeats, warmup=0).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    random.seed(0)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_jpegs(Path(tmp), args.images)
        data = [f.read_bytes() for f in files]
        vissl = VisslPirl()

        def ours() -> None:
            for start in range(0, len(files), 32):
                pad_to_canvas([decode_bounded(f, 512) for f in files[start:start + 32]])

        def draft() -> None:
            for blob in data:
                with Image.open(io.BytesIO(blob)) as im:
                    w, h = im.size
                    im.draft("RGB", (w * 256 // min(w, h), h * 256 // min(w, h)))
                    im.load()

        def device_worker() -> None:
            collate_skipping([(read_jpeg(f, 512), 0, 0) for f in files])

        stages = {
            "VISSL-style PIL pipeline (decode, image view, 9 jittered patches)": lambda: [vissl(f) for f in files],
            "pirl-ablate worker (decode, longer side <= 512, pad to canvas)": ours,
            "previous worker (decode to the 256 px centre square)": lambda: [decode(f, 256) for f in files],
            "torchvision.io.decode_jpeg alone (no resize)":
                lambda: [torchvision.io.decode_jpeg(torch.frombuffer(bytearray(b), dtype=torch.uint8)) for b in data],
            "PIL draft-mode decode alone (shorter side >= 256)": draft,
            "pirl-ablate worker with imagefolder.decode_on = 'device' (header check, file read)": device_worker,
        }
        rates = best_rates(stages, len(files), args.repeats)
        device_rows = []
        if torch.cuda.is_available():
            blobs = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in data]

            def on_device() -> None:
                torchvision.io.decode_jpeg(blobs, device="cuda")
                torch.cuda.synchronize()

            on_device()
            device_rows.append((f"torchvision.io.decode_jpeg on {torch.cuda.get_device_name()} (batched, device "
                                "time, not a CPU core's)", best_rates({"": on_device}, len(files), args.repeats)[""]))
    baseline = rates[next(iter(stages))]
    sizes = sorted(Image.open(io.BytesIO(b)).size for b in data)
    lines = [f"{date.today().isoformat()}, {platform.processor() or platform.machine()}, one core "
             f"(torch.set_num_threads(1)), {len(files)} JPEGs of {min(max(s) for s in sizes)}-"
             f"{max(max(s) for s in sizes)} px (longer side), best of {args.repeats} passes", "",
             "| stage | images/s per core | x VISSL-style |", "|---|---|---|"]
    lines += [f"| {name} | {rate:.0f} | {rate / baseline:.1f} |" for name, rate in rates.items()]
    lines += [f"| {name} | {rate:.0f} | - |" for name, rate in device_rows]
    if not device_rows:
        lines.append("| torchvision.io.decode_jpeg on a GPU | no GPU here | - |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
