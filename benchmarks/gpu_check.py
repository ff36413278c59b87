"""The GPU check's timings at paper settings, printed as one markdown table; the device's correctness is
tests/test_device_parity.py, which `gpu_check.sh` runs first.

    bash benchmarks/gpu_check.sh                          # on a lent GPU (installs the carried wheels first)
    python benchmarks/gpu_check.py --device cpu --tiny    # every row at tiny sizes in seconds (tests/test_gpu_check.py)

Rows, in this order (each section stops adding rows once `--budget` seconds, 8 minutes by default, are used up):

* speed at paper settings (ResNet-50, 224 px image view plus 9 patches of 64 px from 256 px uint8 images, batch
  256 or the largest that fits, |D| = 1,281,167, N = 32,000, bf16 autocast, channels_last on CUDA): the bare
  backbone step (forward, backward, SGD) on the same views, the full PIRL step through the method
  (`pirl_ablate.methods.PIRL`: uint8 -> float images -> its views -> loss + bank -> SGD) with the memory-bank
  source's chunked and dense scoring (`MemoryBankNegatives.scoring`), the transforms' share and the loss + bank
  share for each scoring. Median of `repeats` steps after two warm-up steps, each timed between device
  synchronisations (benchmarks/timing.py).
* input: images/s of the ImageNet-style input path over a folder of generated JPEGs (ImageNet-like sizes):
  decode (longer side <= 256 px) in DataLoader workers (the `imagefolder` dataset) against reading the bytes in
  workers and `torchvision.io.decode_jpeg` on the device, batched, then resizing there.

Status: ok / FAIL against the stated target (on a GPU), "-" for a measurement without one. The table also goes to
--out, by default $OUT/gpu_check.md when OUT is set. Exit status 1 if any row FAILs.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from timing import median_ms
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from pirl_ablate.console import set_quiet
from pirl_ablate.data import make_loader, to_device_batch
from pirl_ablate.data.imagefolder import imagefolder
from pirl_ablate.losses import MemoryBank, bank_contrast, estimator
from pirl_ablate.losses.dense import dense_bank_contrast
from pirl_ablate.methods import PIRL
from pirl_ablate.models import Backbone
from pirl_ablate.runs import atomic_write_text
from pirl_ablate.train import parameter_groups
from pirl_ablate.transforms.registry import TRANSFORMS

SHARE_TARGET, OVERHEAD_TARGET = 0.05, 1.10  # transforms and loss + bank < 5% of the step; PIRL within 10% of bare
TAU = 0.07
LAMBDA = 0.5  # Eq. 5's weight of the transformed-view term


@dataclass(frozen=True)
class Scale:
    """Sizes of one run of the check; PAPER is paper Section 4's, TINY the test suite's."""

    arch: str
    width: float
    source: int  # side of the uint8 images the input path produces (256 for ImageNet)
    view: int  # side of the image view f embeds (224)
    crop: int | None  # jigsaw crop side (255; None: fit the input)
    patch: int | None  # jigsaw patch side (64; None: 64/85 of a cell)
    batch: int
    dataset_size: int  # |D|
    negatives: int  # N
    repeats: int  # timed calls per speed row, after `warmup` untimed ones
    warmup: int
    jpegs: int
    jpeg_size: tuple[int, int]  # (width, height) of the generated JPEGs, half of them transposed


PAPER = Scale(arch="resnet50", width=1, source=256, view=224, crop=255, patch=64, batch=256, dataset_size=1_281_167,
              negatives=32_000, repeats=10, warmup=2, jpegs=4096, jpeg_size=(500, 375))
TINY = Scale(arch="resnet18", width=0.5, source=32, view=32, crop=None, patch=None, batch=4, dataset_size=1000,
             negatives=64, repeats=1, warmup=1, jpegs=16, jpeg_size=(40, 30))


@dataclass
class Row:
    section: str
    what: str
    result: str
    target: str = ""
    status: str = "-"


def verdict(passed: bool) -> str:
    return "ok" if passed else "FAIL"


def target_verdict(device: torch.device, passed: bool) -> str:
    """Speed targets are for a GPU: elsewhere the row is a measurement ("-")."""
    return verdict(passed) if device.type == "cuda" else "-"


# --------------------------------------------------------------------------------------------------- speed
def paper_parts(device: torch.device, scale: Scale, batch: int):
    """The PIRL method (trunk, heads, memory bank, transforms), optimiser and one uint8 batch of the speed
    section, with the generator of the views and draws."""
    torch.manual_seed(0)
    gen = torch.Generator(device=device).manual_seed(0)
    jigsaw = TRANSFORMS.get("jigsaw")(crop_size=scale.crop, patch_size=scale.patch)
    image = TRANSFORMS.get("image")(size=scale.view)
    bank = MemoryBank(scale.dataset_size, 128, gen, device=device)
    method = PIRL(Backbone(scale.arch, width_multiplier=scale.width).to(device), bank, jigsaw, image,
                  generator=gen, lambda_=LAMBDA, tau=TAU, num_negatives=scale.negatives).to(device)
    if device.type == "cuda":
        method = method.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(parameter_groups([method], 1e-4), lr=1e-3, momentum=0.9)
    uint8 = torch.randint(0, 256, (batch, 3, scale.source, scale.source), dtype=torch.uint8, device=device,
                          generator=gen)
    return method, opt, uint8, gen


def speed_rows(device: torch.device, scale: Scale, measured: dict[str, float]) -> list[Row]:
    """Step times at `scale`; on CUDA the batch halves from scale.batch until a PIRL step fits in memory.
    measured["pirl_images_per_s"] gets the faster PIRL step's rate."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    batch = scale.batch
    while True:
        try:
            return _speed_rows(device, scale, batch, autocast, memory_format, measured)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if batch == 1:
                raise
            batch //= 2


def _speed_rows(device: torch.device, scale: Scale, batch: int, autocast: torch.autocast,
                memory_format: torch.memory_format, measured: dict[str, float]) -> list[Row]:
    method, opt, uint8, gen = paper_parts(device, scale, batch)
    index = torch.randperm(scale.dataset_size, generator=gen, device=device)[:batch]
    labels = torch.zeros(batch, dtype=torch.long, device=device)  # PIRL ignores them

    def images() -> Tensor:
        """uint8 -> float (B, 3, s, s) in [0, 1], as the training loop hands the method its batch."""
        return to_device_batch(uint8, device, None).contiguous(memory_format=memory_format)

    def views() -> tuple[Tensor, object]:
        """The method's two views of a batch: its image view v_I and its jigsaw view v_It."""
        x = images()
        return method.image_view(x, gen).contiguous(memory_format=memory_format), method.transform(x, gen)

    fixed_image, fixed_patches = views()
    flat_patches = fixed_patches.data.flatten(0, 1)  # as Method.pooled_view passes them

    def sgd(total: Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    def bare_step() -> None:
        with autocast:
            total = (method.pooled(fixed_image).float().square().mean()
                     + method.pooled(flat_patches).float().square().mean())
        sgd(total)

    def pirl_step(scoring: str) -> Callable[[], None]:
        def step() -> None:
            method.negatives.scoring = scoring
            x = images()
            with autocast:
                total, _ = method(x, index, labels, gen)  # its views, Eq. 5 against the bank, the bank update
            sgd(total)
        return step

    q_fixed = F.normalize(torch.randn(batch, 2, 128, device=device, generator=gen), dim=2)
    loss_fn = estimator("nce", TAU, math.log(scale.dataset_size), scale.dataset_size)
    bank = method.memory_bank

    def loss_bank(contrast: Callable) -> Callable[[], None]:
        def step() -> None:
            q = q_fixed.clone().requires_grad_()
            negatives = bank.sample_negatives(index, scale.negatives, gen)
            out = contrast(q, bank.bank, index, negatives, loss_fn, TAU)
            bank.update(index, q[:, 1].detach())
            (LAMBDA * out.loss[:, 0].mean() + (1 - LAMBDA) * out.loss[:, 1].mean()).backward()
        return step

    steps = {"bare": bare_step, "pirl": pirl_step("chunked"), "pirl dense": pirl_step("dense"), "views": views,
             "chunked": loss_bank(bank_contrast), "dense": loss_bank(dense_bank_contrast)}
    ms = {name: median_ms(fn, scale.repeats, device, scale.warmup) for name, fn in steps.items()}
    dense_step = ms["pirl dense"]
    measured["pirl_images_per_s"] = 1000 * batch / min(ms["pirl"], dense_step)
    setting = (f"{scale.arch}, batch {batch}, {scale.view} px + 9 x {scale.patch or 'fit'} px, "
               f"|D| = {scale.dataset_size:,}, N = {scale.negatives:,}")
    overhead = min(ms["pirl"], dense_step) / ms["bare"]
    rows = [Row("speed", f"bare backbone step, same views ({setting})",
                f"{ms['bare']:.1f} ms ({1000 * batch / ms['bare']:.0f} img/s)"),
            Row("speed", "PIRL step, chunked scoring (uint8 -> method: views -> loss + bank -> SGD)",
                f"{ms['pirl']:.1f} ms ({1000 * batch / ms['pirl']:.0f} img/s)"),
            Row("speed", "PIRL step, dense scoring (MemoryBankNegatives.scoring = \"dense\")",
                f"{dense_step:.1f} ms ({1000 * batch / dense_step:.0f} img/s)"),
            Row("speed", "PIRL step / bare backbone, best scoring", f"{overhead:.2f}x", f"<= {OVERHEAD_TARGET:.2f}x",
                target_verdict(device, overhead <= OVERHEAD_TARGET)),
            Row("speed", "transforms (uint8 -> image view + jigsaw) / PIRL step",
                f"{ms['views']:.1f} ms, {ms['views'] / ms['pirl']:.1%}", f"< {SHARE_TARGET:.0%}",
                target_verdict(device, ms["views"] / ms["pirl"] < SHARE_TARGET))]
    for name, step in (("chunked", ms["pirl"]), ("dense", dense_step)):
        share = ms[name] / step
        rows.append(Row("speed", f"loss + bank, {name} scoring / PIRL step with it",
                        f"{ms[name]:.1f} ms, {share:.1%}", f"< {SHARE_TARGET:.0%}",
                        target_verdict(device, share < SHARE_TARGET)))
    rows.append(Row("speed", "the faster scoring here (\"auto\" picks dense on CUDA)",
                    "dense" if dense_step < ms["pirl"] else "chunked"))
    return rows


# --------------------------------------------------------------------------------------------------- input
class JpegBytes(Dataset):
    """The raw bytes of each file as a uint8 tensor (what workers hand to a device decoder)."""

    def __init__(self, files: list[Path]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Tensor:
        return torch.frombuffer(bytearray(self.files[i].read_bytes()), dtype=torch.uint8)


def write_jpegs(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """`count` JPEGs (quality 90) of smooth random content in folder/c0, half of them `size` (W, H), half H x W."""
    import torchvision.io

    g = torch.Generator().manual_seed(3)
    (folder / "c0").mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        w, h = size if i % 2 == 0 else size[::-1]
        coarse = torch.rand(1, 3, max(2, h // 16), max(2, w // 16), generator=g)
        pixels = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
        pixels = (pixels + 0.1 * torch.rand(3, h, w, generator=g)).clamp(0, 1).mul(255).to(torch.uint8)
        path = folder / "c0" / f"{i:05d}.jpg"
        torchvision.io.write_jpeg(pixels, str(path), quality=90)
        files.append(path)
    return files


def resize_square(image: Tensor, size: int) -> Tensor:
    """uint8 (3, H, W) -> float (3, size, size): shorter side to `size` (bilinear, antialiased), centre crop."""
    h, w = image.shape[-2:]
    scale = size / min(h, w)
    out = F.interpolate(image[None].float(), size=(max(size, round(h * scale)), max(size, round(w * scale))),
                        mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = (out.shape[-2] - size) // 2, (out.shape[-1] - size) // 2
    return out[:, top:top + size, left:left + size]


def input_rows(device: torch.device, scale: Scale, workdir: Path, pirl_images_per_s: float | None) -> list[Row]:
    """Images/s of JPEG decode + resize: PIL in DataLoader workers against decode_jpeg on `device`."""
    import torchvision.io

    files = write_jpegs(workdir / "jpegs", scale.jpegs, scale.jpeg_size)
    workers = os.cpu_count() or 1
    batch = min(scale.batch, scale.jpegs)
    dataset = imagefolder(root=str(workdir / "jpegs"), max_side=scale.source)
    loader = make_loader(dataset, batch, num_workers=workers, pin_memory=device.type == "cuda")
    bytes_loader = DataLoader(JpegBytes(files), batch_size=batch, num_workers=workers, collate_fn=list,
                              persistent_workers=True)

    def worker_pass() -> None:
        loader.set_epoch(0)
        for images, _, _ in loader:
            to_device_batch(images, device, None, whole=True)

    def device_pass() -> None:
        for data in bytes_loader:
            decoded = torchvision.io.decode_jpeg(data, device=device)
            torch.stack([resize_square(im, scale.source) for im in decoded])

    rate = {name: len(files) / (median_ms(fn, 1, device, warmup=1) / 1000)
            for name, fn in (("workers", worker_pass), ("device", device_pass))}
    target = f">= PIRL step ({pirl_images_per_s:.0f} img/s)" if pirl_images_per_s else ""

    def fed(r: float) -> str:
        return target_verdict(device, r >= pirl_images_per_s) if pirl_images_per_s else "-"

    w, h = scale.jpeg_size
    return [Row("input", f"JPEG decode, longer side <= {scale.source} px, PIL in {workers} DataLoader workers "
                         f"({len(files)} files of {w}x{h} / {h}x{w})", f"{rate['workers']:.0f} img/s", target,
                fed(rate["workers"])),
            Row("input", f"read in {workers} workers, torchvision.io.decode_jpeg on {device.type} + resize there",
                f"{rate['device']:.0f} img/s", target, fed(rate["device"]))]


# ---------------------------------------------------------------------------------------------------- main
def render(rows: list[Row], header: str) -> str:
    """A markdown table; a "|" inside a cell (as in |D|) is escaped."""
    lines = [header, "", "| section | check | result | target | status |", "|---|---|---|---|---|"]
    for r in rows:
        cells = (r.section, r.what, r.result, r.target, r.status)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (the test suite's run)")
    p.add_argument("--budget", type=float, default=480.0, help="seconds; later sections are skipped after it")
    p.add_argument("--out", help="also write the table here (default: $OUT/gpu_check.md when OUT is set)")
    args = p.parse_args(argv)
    set_quiet(True)  # the tiny training run's progress bars
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # torch.cuda.set_device needs an index
    scale = TINY if args.tiny else PAPER
    started = time.perf_counter()
    rows: list[Row] = []

    def section(name: str, fn: Callable[[], list[Row]]) -> None:
        if time.perf_counter() - started > args.budget:
            rows.append(Row(name, f"{name} rows", "skipped: time budget used", status="-"))
            return
        new = fn()
        rows.extend(new)
        print(f"[{time.perf_counter() - started:.0f} s] {len(new)} {name} rows", flush=True)

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        workdir = Path(tmp)
        measured: dict[str, float] = {}
        section("speed", lambda: speed_rows(device, scale, measured))
        section("input", lambda: input_rows(device, scale, workdir, measured.get("pirl_images_per_s")))
    header = (f"gpu_check {'--tiny ' if args.tiny else ''}on {device_name(device)} | torch {torch.__version__} | "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} | {time.perf_counter() - started:.0f} s")
    table = render(rows, header)
    print("\n" + table, end="")
    out = args.out or (Path(os.environ["OUT"]) / "gpu_check.md" if os.environ.get("OUT") else None)
    if out:
        atomic_write_text(Path(out), table)
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
