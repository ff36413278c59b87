"""Pre-training: `pirl-ablate train CONFIG.gin`, configured only through gin, from a laptop CPU to 32 GPUs.

One epoch of the loop, per batch of uint8 images with their dataset indices:

    x  = to_device_batch(images)                  (B, 3, s, s) float in [0, 1] on the device
    vI = image_transform(x)                       augmented image view (for f), if the loss wants one
    vT = transform(x)                             the pretext view v_It (patches or an image), if the loss wants one
    L  = loss(net, vI, vT, index, labels)         updates the memory bank itself
    SGD step (momentum 0.9, weight decay 1e-4 on weights only), learning rate from a per-step cosine schedule

Paper settings (Section 4): lr 0.12 at batch 1024 scaled linearly with the batch, cosine to 1e-3 of it, 800 epochs.
The run folder (pirl_ablate.runs) gets meta.json at the start, one metrics.jsonl row per epoch, checkpoints/last.pt
every `checkpoint_every` epochs and at the end, and result.json last. A run restarts from its last checkpoint:
the data order is a function of (seed, epoch) and every generator state is in the checkpoint, so a run killed at
any point and resumed ends with the same weights, bit for bit (on the CPU), as one that was never interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

import gin
import torch
from rich.progress import TextColumn
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from pirl_ablate import checkpoint, config, distributed, tensorboard
from pirl_ablate.console import info, progress, track
from pirl_ablate.data import ImageDataset, build_dataset, make_loader, to_device_batch
from pirl_ablate.errors import ConfigError, UserError
from pirl_ablate.losses import MemoryBank, build_loss
from pirl_ablate.models import Backbone, PIRLNet, build_network, frozen_bn_stats
from pirl_ablate.runs import RunDir, atomic_torch_save, atomic_write_text
from pirl_ablate.transforms.registry import build_transform

PRECISIONS = ("auto", "fp32", "bf16")


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


# ------------------------------------------------------------------------------------------- optimisation
def parameter_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict]:
    """SGD groups: weight decay on conv/linear weights only, none on BatchNorm parameters and biases (1-d)."""
    decay, no_decay = [], []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, total_steps: int, warmup_steps: int, final_fraction: float) -> float:
    """Multiplier of the peak lr at `step`: linear warm-up from 0, then cosine from 1 down to `final_fraction`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress_ = min(1.0, (step - warmup_steps) / span)
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress_))


class _Step(nn.Module):
    """The network and the loss as one module, so DDP synchronises the gradients of both (loss heads included)
    while the loss calls the network's embedding methods."""

    def __init__(self, net: PIRLNet, loss: nn.Module):
        super().__init__()
        self.net, self.loss = net, loss

    def forward(self, image_view: Tensor | None, view: Any, index: Tensor, labels: Tensor | None
                ) -> tuple[Tensor, dict[str, Tensor]]:
        out = self.loss(self.net, image_view, view, index, labels)
        return out.total, out.parts


# ---------------------------------------------------------------------------------------------- monitoring
@torch.no_grad()
def embed_dataset(net: PIRLNet, dataset: ImageDataset, device: torch.device, image_size: int,
                  batch_size: int = 256) -> Tensor:
    """f(v_I) (N, embed_dim) of every image, in dataset order, network in eval mode."""
    was_training = net.training
    net.eval()
    loader = make_loader(dataset, batch_size, shuffle=False, drop_last=False, num_workers=0)
    loader.set_epoch(0)
    out = [net.embed_image(to_device_batch(images, device, image_size)) for images, _, _ in loader]
    net.train(was_training)
    return torch.cat(out)


def knn_top1(bank: Tensor, bank_labels: Tensor, queries: Tensor, query_labels: Tensor, num_classes: int,
             k: int = 200, sigma: float = 0.07, chunk: int = 256) -> float:
    """Weighted kNN top-1 (NPID): each of the k most similar bank entries votes exp(s / sigma) for its class.

    bank (N, d) and queries (M, d) L2-normalised; labels long. k = 200 and sigma = 0.07 as NPID's monitor.
    """
    bank_labels = bank_labels.to(bank.device)
    k = min(k, len(bank))
    correct = 0
    for i in range(0, len(queries), chunk):
        q = queries[i:i + chunk].to(bank.device, bank.dtype)
        sims, idx = (q @ bank.T).topk(k, dim=1)
        votes = torch.zeros(len(q), num_classes, device=bank.device, dtype=torch.float64)
        votes.scatter_add_(1, bank_labels[idx], (sims.double() / sigma).exp())
        correct += int((votes.argmax(1) == query_labels[i:i + chunk].to(bank.device)).sum())
    return correct / len(queries)


@torch.no_grad()
def fill_bank(net: PIRLNet, bank: MemoryBank, dataset: ImageDataset, env: distributed.DistEnv, image_size: int,
              batch_size: int, autocast: torch.autocast) -> None:
    """`MemoryBank.init = "features"`: every entry <- f(v_I) of its clean image under the current network, before
    the first step. The network runs as in the loss (training mode, batch statistics) but its BN running statistics
    are left untouched; each process embeds its share of the images and the bank gathers all of them."""
    loader = make_loader(dataset, batch_size, shuffle=False, drop_last=False, rank=env.rank,
                         world_size=env.world_size)
    loader.set_epoch(0)
    was_training = net.training
    with frozen_bn_stats(net.backbone), autocast:
        for images, index, _ in track(loader, "memory bank <- f(images)", total=len(loader)):
            net.train(len(images) > 1)  # batch statistics of one image are undefined where res5 is 1x1
            bank.fill(index.to(env.device), net.embed_image(to_device_batch(images, env.device, image_size)))
    net.train(was_training)


@torch.no_grad()
def recompute_bn(net: PIRLNet, dataset: ImageDataset, device: torch.device, image_size: int, batches: int,
                 batch_size: int) -> int:
    """Precise-BN: BatchNorm running statistics re-estimated on `batches` clean (un-augmented) image batches, in
    dataset order; returns the number of images used."""
    from pirl_ablate.evaluate.precise_bn import precise_bn

    loader = make_loader(dataset, batch_size, shuffle=False, drop_last=False, num_workers=0)
    loader.set_epoch(0)
    clean = (to_device_batch(images, device, image_size) for b, (images, _, _) in zip(range(batches), loader))
    return precise_bn(net.backbone, clean, lambda x: net.backbone(x, ("res5",)))


# ------------------------------------------------------------------------------------------------ the loop
def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _network_config(net: PIRLNet) -> dict[str, Any]:
    """Constructor arguments of `net`, stored in the checkpoint so `load_network` needs no gin."""
    b = net.backbone
    return {"arch": b.arch, "width_multiplier": b.width_multiplier, "small_stem": b.small_stem,
            "mean": b.mean.flatten().tolist(), "std": b.std.flatten().tolist(), "embed_dim": net.embed_dim,
            "mlp_heads": not isinstance(net.image_head, nn.Linear), "num_patches": net.num_patches,
            "patch_bn_stats": net.patch_bn_stats}


def _trim_metrics(run: RunDir, epoch: int) -> None:
    """Keep the metrics rows of epochs up to `epoch`: rows (or a torn line) written after the checkpoint by a
    killed process are redone after the restart."""
    kept = [r for r in run.metrics() if r.get("epoch", 0) <= epoch]
    atomic_write_text(run.metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))


@gin.configurable("train", denylist=["run_dir"])
def pretrain(run_dir: str | Path, *, dataset: str = "fashion_mnist", transform: str = "jigsaw",
             image_transform: str | None = "image", epochs: int = 800, batch_size: int = 1024,
             base_lr: float = 0.12, base_batch: int = 1024, final_lr_fraction: float = 1e-3,
             warmup_epochs: float = 0.0, momentum: float = 0.9, weight_decay: float = 1e-4, image_size: int = 32,
             seed: int = 0, checkpoint_every: int = 1, monitor_every: int = 1, monitor_k: int = 200,
             monitor_sigma: float = 0.07, precise_bn_batches: int = 0, precision: str = "auto",
             channels_last: bool = False, device: str | None = None) -> dict:
    """Pre-train the gin-built network (`build_network`) with the gin-built loss (`build_loss`); resume if possible.

    Args:
        run_dir: the run folder (written through pirl_ablate.runs.RunDir).
        dataset: registered dataset name; its "train" split is trained on, its "test" split feeds the kNN monitor.
        transform: pretext transform name or chain ("jigsaw", "rotation", "rotation+jigsaw"), for losses that use
            a transformed view.
        image_transform: the augmentation of the image view f embeds ("image"); None uses the plain images.
        epochs: passes over the data (paper: 800; ablations 400). 0 writes the random-init network (baseline).
        batch_size: global batch over all processes (paper: 1024 = 32 GPUs x 32).
        base_lr, base_batch: peak lr = base_lr * batch_size / base_batch (paper: 0.12 at 1024).
        final_lr_fraction: the cosine ends at peak * this (paper: 0.12 -> 1.2e-4, i.e. 1e-3).
        warmup_epochs: linear warm-up from 0 (not in the paper; 0 disables).
        momentum, weight_decay: SGD (0.9, 1e-4 on conv/linear weights; none on BN and biases).
        image_size: side the uint8 images are resized to on the device (32 at smoke scale, 224 in the paper).
        seed: network init, augmentation, negatives and data order.
        checkpoint_every: epochs between checkpoints (always one at the end).
        monitor_every: epochs between weighted-kNN monitors on the memory bank (k = monitor_k = 200,
            sigma = monitor_sigma = 0.07, as NPID); 0 disables. Needs labels and a memory bank.
        precise_bn_batches: > 0 recomputes BN statistics on that many clean batches before the final monitor and
            checkpoint (recorded in result.json as "bn": "precise").
        precision: "auto" (bf16 autocast on CUDA devices that support it, fp32 elsewhere), "fp32", "bf16".
        channels_last: NHWC memory format for the network and inputs (faster convolutions on recent GPUs).
        device: None picks cuda:LOCAL_RANK when available, else the CPU.
    Returns the result dict also written to result.json.
    """
    env = distributed.setup(device)
    run = RunDir(run_dir)
    try:
        return _pretrain(run, env, dataset=dataset, transform=transform, image_transform=image_transform,
                         epochs=epochs, batch_size=batch_size, base_lr=base_lr, base_batch=base_batch,
                         final_lr_fraction=final_lr_fraction, warmup_epochs=warmup_epochs, momentum=momentum,
                         weight_decay=weight_decay, image_size=image_size, seed=seed,
                         checkpoint_every=checkpoint_every, monitor_every=monitor_every, monitor_k=monitor_k,
                         monitor_sigma=monitor_sigma, precise_bn_batches=precise_bn_batches, precision=precision,
                         channels_last=channels_last)
    except Exception as e:
        if env.is_main and not isinstance(e, TrainingDiverged):
            run.fail(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise
    finally:
        distributed.teardown(env)


def _pretrain(run: RunDir, env: distributed.DistEnv, *, dataset: str, transform: str, image_transform: str | None,
              epochs: int, batch_size: int, base_lr: float, base_batch: int, final_lr_fraction: float,
              warmup_epochs: float, momentum: float, weight_decay: float, image_size: int, seed: int,
              checkpoint_every: int, monitor_every: int, monitor_k: int, monitor_sigma: float,
              precise_bn_batches: int, precision: str, channels_last: bool) -> dict:
    dev = env.device
    if batch_size % env.world_size:
        raise ConfigError(f"train.batch_size = {batch_size} is not divisible by the {env.world_size} processes")
    if precision not in PRECISIONS:
        raise ConfigError(f"train.precision = {precision!r} (valid: {', '.join(PRECISIONS)})")
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"

    # ---- data, network, loss, views: built from gin at this edge
    train_set = build_dataset(dataset, "train")
    loader = make_loader(train_set, batch_size // env.world_size, seed=seed, rank=env.rank,
                         world_size=env.world_size)
    if len(loader) == 0:
        raise ConfigError(f"train.batch_size = {batch_size} is larger than the {len(train_set)} training images")
    torch.manual_seed(seed)
    net = build_network().to(dev)
    loss = build_loss().to(dev)
    pretext = build_transform(transform) if loss.needs_transformed_view else None
    augment = build_transform(image_transform) if loss.needs_image_view and image_transform else None
    classes = {"transform": getattr(pretext, "num_classes", None), "dataset": train_set.num_classes
               }.get(getattr(loss, "label_space", None))
    loss_gen = _generator(dev, seed * 1000 + 2 * env.rank + 1)
    view_gen = _generator(dev, seed * 1000 + 2 * env.rank + 2)
    loss.bind(len(train_set), net, classes, loss_gen)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)

    steps_per_epoch = len(loader)
    total_steps = epochs * steps_per_epoch
    warmup_steps = round(warmup_epochs * steps_per_epoch)
    peak_lr = base_lr * batch_size / base_batch
    optimizer = torch.optim.SGD(parameter_groups([net, loss], weight_decay), lr=peak_lr, momentum=momentum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup_steps, final_lr_fraction))
    generators = {"loss": loss_gen, "view": view_gen}

    # ---- resume
    start_epoch, step = 0, 0
    last = checkpoint.last(run.checkpoint_dir)
    if last is not None:
        state = checkpoint.load(last)  # on the CPU: load_state_dict copies onto the device
        if state["dataset_size"] != len(train_set):
            raise ConfigError(f"{last} was trained on {state['dataset_size']} images but the config gives "
                              f"{len(train_set)}: use another run folder (--out)")
        net.load_state_dict(state["network"])
        loss.load_state_dict(state["loss"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        checkpoint.restore_rng_states(state["rng"], generators)
        start_epoch, step = state["epoch"], state["step"]
        if env.is_main:
            _trim_metrics(run, start_epoch)
        info(f"resuming {run.path} from {last} (epoch {start_epoch}/{epochs})")

    step_module: nn.Module = _Step(net, loss)
    if env.distributed:
        step_module = DistributedDataParallel(step_module, device_ids=[dev.index] if dev.type == "cuda" else None,
                                              broadcast_buffers=False, find_unused_parameters=True)
    test_set = None
    monitor = monitor_every > 0 and train_set.num_classes is not None and loss.memory_bank is not None
    if monitor:
        test_set = build_dataset(dataset, "test")

    info(f"[bold]train[/] {dataset} ({len(train_set)} images) | {env.world_size} x {dev.type} | {precision} | "
         f"batch {batch_size} ({batch_size // env.world_size}/process) | {epochs} epochs x {steps_per_epoch} steps"
         f"\n  SGD lr {peak_lr:.4g} (= {base_lr:g} x {batch_size}/{base_batch}) cosine -> "
         f"{peak_lr * final_lr_fraction:.3g}, warm-up {warmup_steps} steps, momentum {momentum}, weight decay "
         f"{weight_decay:g} (not on BN/bias) | transform {transform if pretext else '-'} | image view "
         f"{image_transform if augment else '-'} | {type(loss).__name__}")

    started = time.perf_counter()
    last_row: dict[str, Any] = {}
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    bank = loss.memory_bank
    if last is None and epochs > 0 and bank is not None and bank.init == "features":
        fill_bank(net, bank, train_set, env, image_size, batch_size // env.world_size, autocast)
    net.train()
    for epoch in range(start_epoch, epochs):
        loader.set_epoch(epoch)
        sums: dict[str, Tensor] = {}
        seen, t0 = 0, time.perf_counter()
        with progress(TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[ips]:.0f} img/s")
                      ) as bar:
            task = bar.add_task(f"epoch {epoch + 1}/{epochs}", total=steps_per_epoch, loss=float("nan"), ips=0.0)
            for images, index, labels in loader:
                x = to_device_batch(images, dev, image_size)
                index, labels = index.to(dev), labels.to(dev)
                view = pretext(x, view_gen) if pretext is not None else None
                image_view = (augment(x, view_gen).data if augment is not None else x) \
                    if loss.needs_image_view else None
                if channels_last and image_view is not None:
                    image_view = image_view.contiguous(memory_format=torch.channels_last)
                if step == 0 and env.is_main:  # once per run: TensorBoard's picture of what the network sees
                    tensorboard.log_views(run.path, x, image_view, view)
                with autocast:
                    total, parts = step_module(image_view, view, index, labels if loss.needs_labels else None)
                value = total.detach().float()
                if not distributed.all_true(bool(torch.isfinite(value)), env):
                    _diverged(run, env, value, epoch, step)
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                for name, v in {"loss": value, **parts}.items():
                    sums[name] = sums.get(name, 0.0) + v.detach().float()
                seen += len(images) * env.world_size
                bar.update(task, advance=1, loss=float(value), ips=seen / (time.perf_counter() - t0))
        epoch_s = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"],
               "images_per_s": seen / epoch_s, "epoch_s": epoch_s,
               **{k: float(v) / steps_per_epoch for k, v in sums.items()}}
        final = epoch + 1 == epochs
        if final and precise_bn_batches > 0:
            recompute_bn(net, train_set, dev, image_size, precise_bn_batches, batch_size // env.world_size)
        if monitor and ((epoch + 1) % monitor_every == 0 or final) and env.is_main:
            row["knn_top1"] = _monitor(net, loss, train_set, test_set, dev, image_size, monitor_k, monitor_sigma)
        if env.is_main:
            run.log_metrics(row)
            info(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        if (epoch + 1) % checkpoint_every == 0 or final:
            _save(run, env, net, loss, optimizer, scheduler, generators, epoch + 1, step, len(train_set))
        last_row = row

    if epochs == 0 or start_epoch == epochs:  # nothing trained in this process: random init or already complete
        if precise_bn_batches > 0 and start_epoch == 0:
            recompute_bn(net, train_set, dev, image_size, precise_bn_batches, batch_size // env.world_size)
        if last is None:
            _save(run, env, net, loss, optimizer, scheduler, generators, 0, 0, len(train_set))
        last_row = (run.metrics() or [{}])[-1]  # (a random bank has nothing to monitor)
    if not distributed.same_on_all_ranks(sum(p.double().sum() for p in net.parameters()), env):
        raise RuntimeError("the processes ended with different weights (DDP replicas out of sync)")
    result = {"epochs": epochs, "steps": step, "final": last_row, "wall_s": time.perf_counter() - started,
              "bn": "precise" if precise_bn_batches > 0 else "train", "lr": peak_lr, "batch_size": batch_size,
              "world_size": env.world_size, "dataset_size": len(train_set), "precision": precision}
    if env.is_main:
        # operative values first, then every binding as given: a binding training never read (e.g. the test
        # split's `fashion_mnist.subset` when no kNN monitor ran) must survive for evaluation, which re-parses this
        run.write_config(gin.operative_config_str() + "\n# All bindings as given\n" + gin.config_str())
        result = run.finish(**result)
    distributed.barrier(env)
    return result


def _monitor(net: PIRLNet, loss: nn.Module, train_set: ImageDataset, test_set: ImageDataset | None,
             dev: torch.device, image_size: int, k: int, sigma: float) -> float:
    assert test_set is not None and train_set.num_classes is not None
    queries = embed_dataset(net, test_set, dev, image_size)
    return knn_top1(loss.memory_bank.bank, train_set.labels, queries, test_set.labels, train_set.num_classes,
                    k=k, sigma=sigma)


def _save(run: RunDir, env: distributed.DistEnv, net: PIRLNet, loss: nn.Module, optimizer: torch.optim.Optimizer,
          scheduler: Any, generators: dict[str, torch.Generator], epoch: int, step: int, dataset_size: int) -> None:
    """Rank 0 writes checkpoints/last.pt atomically; the others wait for it."""
    if env.is_main:
        checkpoint.save({"epoch": epoch, "step": step, "network": net.state_dict(),
                         "network_config": _network_config(net), "loss": loss.state_dict(),
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "rng": checkpoint.rng_states(generators), "world_size": env.world_size,
                         "dataset_size": dataset_size}, run.checkpoint_dir)
    distributed.barrier(env)


def _diverged(run: RunDir, env: distributed.DistEnv, value: Tensor, epoch: int, step: int) -> NoReturn:
    """Mark the run failed with the step (the last checkpoint is left as it is) and stop."""
    kept = checkpoint.last(run.checkpoint_dir)
    where = f"the last good checkpoint {kept} is kept" if kept else "no checkpoint was written"
    reason = f"loss is {float(value)} at step {step + 1} (epoch {epoch + 1}); {where}"
    if env.is_main:
        run.fail(reason, step=step + 1, epoch=epoch + 1)
    raise TrainingDiverged(reason)


# ------------------------------------------------------------------------------------------- entry points
def run_training(config_str: str, run_dir: str | Path) -> dict:
    """Re-create the gin config `config_str` in this process, record it, and pre-train into `run_dir`.

    Used by sweeps (one call per run, in a worker) and by `pirl-ablate train`. Resumes from the run folder's last
    checkpoint; a complete run returns its result.json without training.
    """
    config.parse_text(config_str)
    run = RunDir(run_dir)
    if run.is_done():
        info(f"{run.path}: already done")
        return run.result()
    seed = gin.query_parameter("train.seed") if _bound("train.seed") else 0
    if distributed.launcher_rank() == 0:
        run.start(config_str, seed=seed)
    return pretrain(run_dir)


def _bound(key: str) -> bool:
    try:
        gin.query_parameter(key)
    except ValueError:
        return False
    return True


def train_command(args: argparse.Namespace) -> int:
    """`pirl-ablate train CONFIG.gin [--gin F] [--bind K=V] [--out DIR]`."""
    config_str = config.parse([args.config, *args.gin], args.bind)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    result = run_training(config_str, out)
    final = result.get("final", {})
    info(f"done: {out} | loss {final.get('loss', float('nan')):.4f}"
         + (f" | kNN top-1 {final['knn_top1']:.3f}" if "knn_top1" in final else ""))
    return 0


def load_network(run_dir: str | Path, map_location: str | torch.device = "cpu") -> PIRLNet:
    """The PIRLNet of a run folder's last checkpoint (read with weights_only=True), in eval mode; no gin needed."""
    run = RunDir(run_dir)
    path = checkpoint.last(run.checkpoint_dir)
    if path is None:
        raise UserError(f"{run.checkpoint_dir}: no checkpoint (last.pt); train the run first")
    state = checkpoint.load(path, map_location=map_location)
    cfg = state["network_config"]
    backbone = Backbone(arch=cfg["arch"], width_multiplier=cfg["width_multiplier"], small_stem=cfg["small_stem"],
                        mean=cfg["mean"], std=cfg["std"])
    net = PIRLNet(backbone, embed_dim=cfg["embed_dim"], mlp_heads=cfg["mlp_heads"], num_patches=cfg["num_patches"],
                  patch_bn_stats=cfg["patch_bn_stats"])
    net.load_state_dict(state["network"])
    return net.to(map_location).eval()


def export_command(args: argparse.Namespace) -> int:
    """`pirl-ablate export RUN_DIR --out FILE.pth`: the trunk as a plain torchvision ResNet state_dict."""
    net = load_network(args.run_dir)
    path = atomic_torch_save(net.backbone.torchvision_state_dict(), args.out)
    info(f"wrote {path} (torchvision {net.backbone.arch}; fc is zeros: replace it before fine-tuning"
         + ("; small stem: set conv1 to 3x3 stride 1 and maxpool to Identity" if net.backbone.small_stem else "")
         + ")")
    return 0


__all__ = ["TrainingDiverged", "export_command", "knn_top1", "load_network", "lr_factor", "parameter_groups",
           "pretrain", "run_training", "train_command"]
