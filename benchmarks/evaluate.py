"""Feature extraction speed and linear-probe time on cached features, next to a probe that re-runs the backbone.

    .venv/bin/python benchmarks/evaluate.py [--images 2048] [--size 32] [--epochs 5] [--threads N]

A random-init ResNet-18 with the small stem (the smoke-scale backbone) on the first `--images` Fashion-MNIST train
images at `--size` px. Rows:
- extraction, images/second: one pass computing res5 only, and one pass computing all five layers (conv1, res2..res5
  pooled to ~9k dims each) — what `cached_features` does once per (run, dataset, split);
- linear probe on cached features, seconds per epoch (res5: 512 dims; res4: 9,216 dims);
- the baseline: a probe without the cache pays a backbone pass every epoch (extraction of one layer + the probe).
"""

from __future__ import annotations

import argparse

import torch
from rich.table import Table
from timing import seconds

from pirl_ablate.console import out, set_quiet
from pirl_ablate.data import build_dataset, to_device_batch
from pirl_ablate.evaluate.features import LAYERS, extract_features
from pirl_ablate.evaluate.linear import train_linear_probe
from pirl_ablate.models import Backbone


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    set_quiet(True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ds = build_dataset("fashion_mnist", "train", subset=args.images)
    batches = [(to_device_batch(ds.images[i:i + args.batch], device, args.size), ds.labels[i:i + args.batch])
               for i in range(0, len(ds), args.batch)]
    torch.manual_seed(0)
    backbone = Backbone("resnet18", small_stem=True).to(device).eval()
    extract_features(backbone, batches[:1], ["res5"])  # warm-up

    t_res5, _ = seconds(lambda: extract_features(backbone, batches, ["res5"]), device)
    t_all, (feats, labels) = seconds(lambda: extract_features(backbone, batches, LAYERS), device)
    t_res4, _ = seconds(lambda: extract_features(backbone, batches, ["res4"]), device)
    n = len(ds)
    split = int(0.8 * n)
    probe = {}
    for layer in ("res5", "res4"):
        x = feats[layer]
        probe[layer], _ = seconds(lambda x=x: train_linear_probe(x[:split], labels[:split], x[split:], labels[split:],
                                                                 10, epochs=args.epochs), device)
    table = Table(title=f"evaluation speed: ResNet-18 small stem, {n} Fashion-MNIST images at {args.size} px, "
                        f"{device.type}, {torch.get_num_threads()} threads")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("extraction res5 only, images/s", f"{n / t_res5:,.0f}")
    table.add_row("extraction all 5 layers in one pass, images/s", f"{n / t_all:,.0f}")
    table.add_row("feature dims conv1/res2/res3/res4/res5", "/".join(str(feats[k].shape[1]) for k in LAYERS))
    for layer, dims in (("res5", feats["res5"].shape[1]), ("res4", feats["res4"].shape[1])):
        per_epoch = probe[layer] / args.epochs
        extraction = t_res5 if layer == "res5" else t_res4
        table.add_row(f"probe {layer} ({dims} d) on cached features, s/epoch", f"{per_epoch:.3f}")
        table.add_row(f"baseline: probe {layer} re-running the backbone, s/epoch", f"{per_epoch + extraction:.3f}")
    out.print(table)


if __name__ == "__main__":
    main()
