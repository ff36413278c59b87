"""Images/second of a PIRL training step next to the bare backbone forward/backward on the same images.

The ratio is the cost PIRL adds over the trunk: the transforms, the heads, the patch pass, the loss and the memory
bank (target: < 10% extra on a GPU at paper settings). Both sides run the same SGD update of the trunk, the same
batch of uint8 images converted on the device, alternating, best of `--repeats`. On the CPU at smoke settings the
patch pass alone is ~half the image pass's pixels, so expect a ratio well above 1.

    python benchmarks/train_step.py                          # smoke settings (gin/pirl_jigsaw.gin), this machine
    python benchmarks/train_step.py --config gin/paper/pirl_jigsaw.gin --batch 32 --device cuda   # one GPU's share
"""

from __future__ import annotations

import argparse

import torch
from timing import timings

from pirl_ablate import config
from pirl_ablate.build import configured_method
from pirl_ablate.data import to_device_batch
from pirl_ablate.train import parameter_groups


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="gin/pirl_jigsaw.gin")
    p.add_argument("--bind", action="append", default=[])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dataset-size", type=int, default=4000, help="memory bank entries (smoke: 4,000)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    config.parse([args.config], args.bind)
    train = config.bound_kwargs("train")
    dev = torch.device(args.device)
    size = train.get("image_size", 32)
    gen = torch.Generator(device=dev).manual_seed(0)
    torch.manual_seed(0)
    method = configured_method(train.get("method", "pirl"), args.dataset_size, None, train.get("transform", "jigsaw"),
                               "image", gen, dev).train()
    opt = torch.optim.SGD(parameter_groups([method], 1e-4), lr=1e-3, momentum=0.9)
    images = torch.randint(0, 256, (args.batch, 1, 28, 28), dtype=torch.uint8)
    index = torch.arange(args.batch, device=dev)

    def pirl_step() -> None:
        x = to_device_batch(images, dev, size)
        loss, _ = method(x, index, index, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def backbone_step() -> None:
        x = to_device_batch(images, dev, size)
        feats = method.pooled(x)
        opt.zero_grad(set_to_none=True)
        feats.square().mean().backward()
        opt.step()

    times = timings({"pirl": pirl_step, "backbone": backbone_step}, args.repeats, dev)
    pirl = args.batch / min(times["pirl"])
    bare = args.batch / min(times["backbone"])
    print(f"device {dev} ({torch.get_num_threads()} threads) | config {args.config} {' '.join(args.bind)} | "
          f"batch {args.batch} | {size} px | {type(method).__name__}")
    print(f"{'step':<34}{'images/s':>10}")
    print(f"{'bare backbone fwd/bwd + SGD':<34}{bare:>10.1f}")
    print(f"{'PIRL step (views, heads, loss)':<34}{pirl:>10.1f}")
    print(f"{'PIRL time / backbone time':<34}{bare / pirl:>10.2f}x")


if __name__ == "__main__":
    main()
