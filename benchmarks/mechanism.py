"""Does PIRL's mechanism work in a recipe? Train one gin config with probes, print its health per epoch.

The run is the one `pirl-ablate train CONFIG` makes (same seeds, data order, views, negatives and steps: the loop
below calls the same pieces in the same order as pirl_ablate.train), with probes that draw from their own
generator and leave BatchNorm statistics alone, so probing changes nothing in the run. Every `--probe-every`
steps, on the batch about to be trained on and the bank about to score it (pirl_ablate.diagnostics):

    pos/neg_<term>   mean cosine of f(v_I) / g(v_It) with m_I and with 256 random bank entries
    Z, Z_batch       the partition estimate in use, and mean exp(s / tau) * |D| over those scores
                     (pirl_ablate.losses.nce.mean_exp_score); z_drift = log10(Z / Z_batch)

and after each epoch: the loss, the bank's uniformity, relative invariance of the heads and of pooled res5 on a
fixed batch of 256 test images (eval mode, fixed views), and at the end kNN and linear top-1 (res5, train ->
test split, the evaluation protocols' functions). `--z-every-epoch` re-estimates a fixed Z from the first probe of
each epoch (the fix this script demonstrates for NCE's stale Z; see benchmarks/RESULTS.md).

    python benchmarks/mechanism.py gin/pirl_jigsaw.gin --bind fashion_mnist.subset=3000 --bind train.epochs=3
    python benchmarks/mechanism.py gin/random_init.gin --json out.json       # epochs = 0: only the evaluations
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import time
from pathlib import Path

import gin
import torch

from pirl_ablate import config, diagnostics
from pirl_ablate.data import build_dataset, make_loader, to_device_batch
from pirl_ablate.evaluate import knn_scores, topk_accuracy, train_linear_probe
from pirl_ablate.evaluate.invariance import representations
from pirl_ablate.losses import build_loss
from pirl_ablate.losses.nce import mean_exp_score
from pirl_ablate.models import build_network, frozen_bn_stats
from pirl_ablate.train import fill_bank, lr_factor, parameter_groups, pretrain
from pirl_ablate.transforms.registry import build_transform

PROBE_NEGATIVES = 256


def setting(name: str):
    """train.<name> as bound, else pretrain's default."""
    try:
        return gin.query_parameter(f"train.{name}")
    except ValueError:
        return inspect.signature(pretrain).parameters[name].default


@torch.no_grad()
def probe(net, loss, image_view, view, index, gen) -> dict[str, float]:
    """Alignment of each term and the partition check on one training batch, BN statistics untouched."""
    bank = loss.memory_bank
    with frozen_bn_stats(net.backbone):
        queries = {"image": net.embed_image(image_view)}
        if loss.needs_transformed_view:
            queries["transformed"] = net.embed_transformed(view)
    negatives = torch.randint(0, bank.size, (len(index), PROBE_NEGATIVES), generator=gen)
    row = {}
    for term, q in queries.items():
        row[f"pos_sim_{term}"], row[f"neg_sim_{term}"] = diagnostics.alignment(q, bank.bank, index, negatives)
    q = torch.stack(list(queries.values()), dim=1)
    row["Z_batch"] = float(mean_exp_score(q, bank.bank, index, negatives, loss.tau)) * bank.size
    if loss.estimator == "nce" and float(loss.Z) > 0:
        row["Z"] = float(loss.Z)
        row["z_drift"] = math.log10(row["Z"] / row["Z_batch"])
    return row


@torch.no_grad()
def held_out(net, loss, pretext, images) -> dict[str, float]:
    """Relative invariance (heads where the loss trains g, and pooled res5) on fixed views of fixed images."""
    was = net.training
    net.eval()
    row = {}
    reps = ("heads", "pooled") if loss is not None and getattr(loss, "needs_transformed_view", False) else ("pooled",)
    for rep in reps:
        gen = torch.Generator().manual_seed(0)
        row[f"rel_inv_{rep}"] = diagnostics.relative_invariance(*representations(net, images, pretext, gen, rep))
    net.train(was)
    return row


@torch.no_grad()
def final_scores(net, train_set, test_set, image_size) -> dict[str, float]:
    """kNN and linear top-1 (%) on pooled res5, the train split as the memory / training set."""
    net.eval()

    def feats(ds):
        loader = make_loader(ds, 256, shuffle=False, drop_last=False, num_workers=0)
        loader.set_epoch(0)
        xs, ys = zip(*[(net.pooled(to_device_batch(im, "cpu", image_size)), y) for im, _, y in loader])
        return torch.cat(xs), torch.cat(ys)

    (tx, ty), (vx, vy) = feats(train_set), feats(test_set)
    c = train_set.num_classes
    knn = topk_accuracy(knn_scores(tx, ty, vx, c), vy, c)["top1"]
    with torch.enable_grad():
        linear = train_linear_probe(tx, ty, vx, vy, c)["top1"]
    return {"knn": knn, "linear": linear}


def run(config_files: list[str], bindings: list[str], probe_every: int, z_every_epoch: bool) -> dict:
    config.parse(config_files, bindings)
    seed, epochs, batch_size = setting("seed"), setting("epochs"), setting("batch_size")
    image_size = setting("image_size")
    train_set, test_set = build_dataset(setting("dataset"), "train"), build_dataset(setting("dataset"), "test")
    loader = make_loader(train_set, batch_size, seed=seed)
    torch.manual_seed(seed)
    net, loss = build_network(), build_loss()
    bank_loss = loss.memory_bank is not None or hasattr(loss, "num_negatives")
    pretext = build_transform(setting("transform"))
    augment = build_transform(setting("image_transform")) if loss.needs_image_view else None
    classes = {"transform": getattr(pretext, "num_classes", None), "dataset": train_set.num_classes
               }.get(getattr(loss, "label_space", None))
    loss_gen = torch.Generator().manual_seed(seed * 1000 + 1)
    view_gen = torch.Generator().manual_seed(seed * 1000 + 2)
    probe_gen = torch.Generator().manual_seed(seed * 1000 + 7)
    loss.bind(len(train_set), net, classes, loss_gen)
    steps = len(loader)
    peak = setting("base_lr") * batch_size / setting("base_batch")
    opt = torch.optim.SGD(parameter_groups([net, loss], setting("weight_decay")), lr=peak, momentum=setting("momentum"))
    final_lr = setting("final_lr_fraction")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, epochs * steps, 0, final_lr))
    fixed_images = next(iter(make_loader(test_set, 256, shuffle=False, drop_last=False)))[0]
    fixed = to_device_batch(fixed_images, "cpu", image_size)
    bank = loss.memory_bank
    if epochs > 0 and bank is not None and bank.init == "features":
        fill_bank(net, bank, train_set, _single(), image_size, batch_size, torch.autocast("cpu", enabled=False))
    rows = []
    net.train()
    step = 0
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        sums: dict[str, float] = {}
        probes: list[dict] = []
        t0 = time.perf_counter()
        for images, index, labels in loader:
            x = to_device_batch(images, "cpu", image_size)
            view = pretext(x, view_gen) if loss.needs_transformed_view else None
            image_view = augment(x, view_gen).data if augment is not None else None
            if bank_loss and step % probe_every == 0:
                probes.append(probe(net, loss, image_view, view, index, probe_gen))
                if z_every_epoch and len(probes) == 1 and epoch > 0 and loss.estimator == "nce":
                    loss.Z.fill_(probes[-1]["Z_batch"])
            out = loss(net, image_view, view, index, labels if loss.needs_labels else None)
            opt.zero_grad(set_to_none=True)
            out.total.backward()
            opt.step()
            sched.step()
            step += 1
            for k, v in {"loss": out.total, **out.parts}.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
        row = {"epoch": epoch + 1, "epoch_s": time.perf_counter() - t0, **{k: v / steps for k, v in sums.items()}}
        row.update({f"probe_{k}": sum(p[k] for p in probes) / len(probes) for k in (probes[0] if probes else {})})
        if bank is not None:
            row["uniformity"] = diagnostics.uniformity(bank.bank, 4096, probe_gen)
        row.update(held_out(net, loss, pretext, fixed))
        rows.append(row)
        print(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    result = {"config": config_files, "bindings": bindings, "epochs": rows, "final": final_scores(
        net, train_set, test_set, image_size)}
    if epochs == 0:
        result["final"].update(held_out(net, None, pretext, fixed))
        pirl = build_transform("jigsaw")
        gen = torch.Generator().manual_seed(0)
        result["final"]["rel_inv_pooled_jigsaw"] = diagnostics.relative_invariance(
            *representations(net.eval(), fixed, pirl, gen, "pooled"))
    print(json.dumps(result["final"]), flush=True)
    return result


def _single():
    from pirl_ablate.distributed import DistEnv

    return DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="+")
    p.add_argument("--bind", action="append", default=[])
    p.add_argument("--probe-every", type=int, default=4)
    p.add_argument("--z-every-epoch", action="store_true")
    p.add_argument("--json", help="write the rows and final scores here")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    result = run(args.config, args.bind, args.probe_every, args.z_every_epoch)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
