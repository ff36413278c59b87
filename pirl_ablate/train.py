"""Pre-training: `pretrain(method, dataset, optimizer, run_dir, ...)`, plain objects in, a run folder out.

One epoch of the loop, per batch of uint8 images with their dataset indices and labels:

    x = to_device_batch(images, whole=True)       (B, 3, s, s) float in [0, 1] on the device (images of their own
                                                  sizes: an ImageBatch the views crop from)
    loss, parts = method(x, index, labels, gen)   the method makes its views from x and updates its memory bank
    SGD step, learning rate from a per-step schedule (paper: cosine to 1e-3 of the peak, Section 4)

The run folder (pirl_ablate.runs) gets one metrics.jsonl row per epoch, checkpoints/last.pt every
`checkpoint_every` epochs and at the end (holding the metrics rows so far: a restart rewrites metrics.jsonl to
exactly the history of the training it resumes), and result.json last. A run restarts from its last checkpoint: the data
order is a function of (seed, epoch) and every generator state is in the checkpoint, so a run killed at any point
and resumed ends with the same weights, bit for bit (on the CPU), as one that was never interrupted.
gin builds the objects for `pirl-ablate train` and sweeps in `pirl_ablate.build`; this module never reads gin.

    method = build_method("npid", backbone=Backbone("resnet18"), memory_bank=MemoryBank(len(data), 128, g),
                          generator=g, num_negatives=256)
    optimizer = torch.optim.SGD(parameter_groups([method], 1e-4), lr=0.03, momentum=0.9)
    pretrain(method, data, optimizer, "runs/npid", TrainSettings(epochs=10, batch_size=64, image_size=32))
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import torch
from rich.progress import TextColumn
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from pirl_ablate import checkpoint, distributed, tensorboard
from pirl_ablate.console import info, progress, track
from pirl_ablate.data import DEFAULT_LOADER, EpochLoader, ImageDataset, LoaderOptions, make_loader, to_device_batch
from pirl_ablate.errors import ConfigError, UserError
from pirl_ablate.evaluate.knn import knn_top1
from pirl_ablate.health import epoch_health
from pirl_ablate.methods import Method
from pirl_ablate.models import frozen_bn_stats, precise_bn
from pirl_ablate.run_guard import check_train_values
from pirl_ablate.runs import RunDir
from pirl_ablate.transforms import ImageBatch

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


SCHEDULE_PER = ("step", "epoch")


def cosine(step: int, steps_per_epoch: int, *, epochs: int, warmup_epochs: float = 0.0,
           final_fraction: float = 1e-3, per: str = "step") -> float:
    """`lr_factor` of a run of `epochs` epochs with `warmup_epochs` of warm-up (a `pretrain` schedule), stepped
    every step ("step") or held within each epoch at its first step's value ("epoch", VISSL's CosineParamScheduler
    with update_interval epoch)."""
    if per == "epoch":
        return lr_factor(step // steps_per_epoch, epochs, round(warmup_epochs), final_fraction)
    return lr_factor(step, epochs * steps_per_epoch, round(warmup_epochs * steps_per_epoch), final_fraction)


# ---------------------------------------------------------------------------------------------- monitoring
@torch.no_grad()
def embed_dataset(method: Method, dataset: ImageDataset, device: torch.device, image_size: int,
                  batch_size: int = 256) -> Tensor:
    """f(v_I) (N, embed_dim) of every image, in dataset order, network in eval mode."""
    was_training = method.training
    method.eval()
    loader = make_loader(dataset, batch_size, shuffle=False, drop_last=False, num_workers=0)
    loader.set_epoch(0)
    out = [method.embed_image(to_device_batch(images, device, image_size)) for images, _, _ in loader]
    method.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def fill_bank(method: Method, dataset: ImageDataset, env: distributed.DistEnv, image_size: int, batch_size: int,
              autocast: torch.autocast, loader_options: LoaderOptions = DEFAULT_LOADER) -> None:
    """`MemoryBank.init = "features"`: every entry <- f(v_I) of its clean image under the current network, before
    the first step. The network runs as in the loss (training mode, batch statistics) but its BN running statistics
    are left untouched; each process embeds its share of the images and the bank gathers all of them."""
    loader = make_loader(dataset, batch_size, shuffle=False, drop_last=False, rank=env.rank,
                         world_size=env.world_size, **asdict(loader_options))
    loader.set_epoch(0)
    was_training = method.training
    with frozen_bn_stats(method.backbone), autocast:
        for images, index, _ in track(loader, "memory bank <- f(images)", total=len(loader)):
            method.train(len(images) > 1)  # batch statistics of one image are undefined where res5 is 1x1
            x = to_device_batch(images, env.device, image_size)
            method.memory_bank.fill(index.to(env.device), method.embed_image(x))
    method.train(was_training)


@torch.no_grad()
def recompute_bn(method: Method, dataset: ImageDataset, device: torch.device, image_size: int, batches: int,
                 batch_size: int, seed: int = 0) -> int:
    """Precise-BN: BatchNorm running statistics re-estimated on `batches` clean (un-augmented) image batches drawn
    in a shuffled order of `seed` (dataset order is sorted by class in folder datasets); returns the number of
    images used."""
    loader = make_loader(dataset, batch_size, seed=seed, drop_last=False, num_workers=0)
    loader.set_epoch(0)
    clean = (to_device_batch(images, device, image_size) for b, (images, _, _) in zip(range(batches), loader))
    return precise_bn(method.backbone, clean, lambda x: method.backbone(x, ("res5",)))


# ------------------------------------------------------------------------------------------------ the loop
@dataclass
class _Loop:
    """Everything one `pretrain` call works with; built once, then resumed, run epoch by epoch, finished."""

    run: RunDir
    env: distributed.DistEnv
    method: Method
    module: nn.Module  # the method, or DDP around it
    dataset: ImageDataset
    test_dataset: ImageDataset | None
    loader: EpochLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generators: dict[str, torch.Generator]
    autocast: torch.autocast
    settings: TrainSettings
    peak_lr: float  # the first step's lr: the peak lr unless there is a warm-up
    record: dict[str, Any]
    start_epoch: int = 0
    step: int = 0
    resumed: bool = False
    last_row: dict[str, Any] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)  # metrics.jsonl's lines of this training, saved in checkpoints
    health_images: Tensor | None = None  # the fixed held-out batch of the relative invariance (diagnostics)


@dataclass(frozen=True)
class TrainSettings:
    """How `pretrain` trains: the loop's settings, each read once where it is used. `pirl-ablate train` and sweeps
    build it from the `train.*` bindings of the same names (`pirl_ablate.build.train`); from Python, pass one.

    epochs: passes over the data (paper: 800; ablations 400). 0 writes the initial network (random init).
    batch_size: global batch over all processes (paper: 1024 = 32 GPUs x 32).
    image_size: side the uint8 images are resized to on the device (32 at smoke scale, 224 in the paper).
    seed: the data order, the view generator (seed * 1000 + 2 * rank + 2) and the health numbers' draws
        (seed * 1000 + 999).
    checkpoint_every: epochs between checkpoints (always one at the end).
    monitor_every: epochs between weighted-kNN monitors of the memory bank against the labelled test set (k =
        monitor_k = 200, sigma = monitor_sigma = 0.07, as NPID); 0 disables.
    precise_bn_batches: > 0 recomputes BN statistics on that many clean batches before the final monitor and
        checkpoint (recorded in result.json as "bn": "precise").
    precision: "auto" (bf16 autocast on CUDA devices that support it, fp32 elsewhere), "fp32", "bf16".
    channels_last: NHWC memory format for the method and inputs (faster convolutions on recent GPUs).
    health_images: size of the fixed held-out batch (the first images of the test set, else of the training set) on
        which every epoch's row measures f against g (`pirl_ablate.diagnostics.epoch_health`); 0 skips that number.
        The other health numbers (alignment, uniformity, Z, warnings) are always in the row.
    """

    epochs: int
    batch_size: int
    image_size: int
    seed: int = 0
    checkpoint_every: int = 1
    monitor_every: int = 1
    monitor_k: int = 200
    monitor_sigma: float = 0.07
    precise_bn_batches: int = 0
    precision: str = "auto"
    channels_last: bool = False
    health_images: int = 256


def pretrain(method: Method, dataset: ImageDataset, optimizer: torch.optim.Optimizer, run_dir: str | Path,
             settings: TrainSettings, *, schedule: Callable[[int, int], float] | None = None,
             test_dataset: ImageDataset | None = None, env: distributed.DistEnv | None = None,
             record: dict[str, Any] | None = None, config_text: str | None = None,
             loader_options: LoaderOptions = DEFAULT_LOADER) -> dict:
    """Pre-train `method` on `dataset` into the run folder `run_dir` as `settings` say; resume from its last
    checkpoint if any.

    Args:
        method: a `pirl_ablate.methods.Method` on its device (its memory bank, if any, sized len(dataset)).
        dataset: the index-returning training set; `test_dataset` (labelled) feeds the kNN monitor.
        optimizer: over the method's parameters (`parameter_groups`); its lr is the peak lr.
        schedule: `schedule(step, steps_per_epoch)`, the lr multiplier of each step; None: `cosine` from 1 to 1e-3
            of the peak over all steps, no warm-up (Section 4).
        env: the process's place in torch.distributed (`distributed.setup()`); None: one process.
        record: what evaluation needs besides the method (`checkpoint.run_record`: dataset name and per-split
            keyword arguments, the pretext transform, ...); None records the dataset's name.
        config_text: the configuration to keep as the run's config.gin (the gin builder's operative config).
        loader_options: how the training loader reads a file dataset (workers, pinned memory).
    Returns the result dict also written to result.json.
    """
    env = env or distributed.single_process(next(method.parameters()).device)
    run = RunDir(run_dir)
    try:
        loop = _build(run, env, method, dataset, optimizer, settings, schedule, test_dataset, record, loader_options)
        _resume(loop)
        _announce(loop)
        started = time.perf_counter()
        if not loop.resumed and settings.epochs > 0 and method.memory_bank is not None \
                and method.memory_bank.init == "features":
            fill_bank(method, dataset, env, settings.image_size, settings.batch_size // env.world_size, loop.autocast,
                      loader_options)
        method.train()
        for epoch in range(loop.start_epoch, settings.epochs):
            _run_epoch(loop, epoch)
        return _finish(loop, time.perf_counter() - started, config_text)
    except Exception as e:
        if env.is_main and not isinstance(e, TrainingDiverged):
            run.fail(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise


def _build(run: RunDir, env: distributed.DistEnv, method: Method, dataset: ImageDataset,
           optimizer: torch.optim.Optimizer, settings: TrainSettings, schedule: Callable[[int, int], float] | None,
           test_dataset: ImageDataset | None, record: dict[str, Any] | None,
           loader_options: LoaderOptions = DEFAULT_LOADER) -> _Loop:
    """Check the settings; make the loader, the lr scheduler, the view generator and the DDP wrapper. The loop's
    settings are `settings` with "auto" precision resolved and the monitor off where it has nothing to monitor."""
    dev, s = env.device, settings
    check_train_values(epochs=s.epochs, batch_size=s.batch_size)
    if s.batch_size % env.world_size:
        raise ConfigError(f"train.batch_size = {s.batch_size} is not divisible by the {env.world_size} processes")
    if s.precision not in PRECISIONS:
        raise ConfigError(f"train.precision = {s.precision!r} (valid: {', '.join(PRECISIONS)})")
    precision = s.precision
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    loader = make_loader(dataset, s.batch_size // env.world_size, seed=s.seed, rank=env.rank,
                         world_size=env.world_size, **asdict(loader_options))
    if len(loader) == 0:
        raise ConfigError(f"train.batch_size = {s.batch_size} is larger than the {len(dataset)} training images")
    schedule = schedule or partial(cosine, epochs=s.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(schedule, steps_per_epoch=len(loader)))
    generators = {"view": torch.Generator(device=dev).manual_seed(s.seed * 1000 + 2 * env.rank + 2)}
    if method.generator is not None:
        generators["method"] = method.generator
    if s.channels_last:
        method.to(memory_format=torch.channels_last)
    module: nn.Module = method
    if env.distributed:
        module = DistributedDataParallel(method, device_ids=[dev.index] if dev.type == "cuda" else None,
                                         broadcast_buffers=False)
    monitor = s.monitor_every > 0 and method.memory_bank is not None and test_dataset is not None \
        and dataset.num_classes is not None
    settings = replace(s, precision=precision, monitor_every=s.monitor_every if monitor else 0)
    given = record or {}
    recorded = checkpoint.method_record(method)
    # the pretext transform the config names (train.transform), else the method's own
    recorded["transform"] = given.get("transform") or recorded["transform"]
    record = {"dataset": {"name": getattr(dataset, "name", None)}, **given, **recorded,
              "image_size": s.image_size, "dataset_size": len(dataset)}
    return _Loop(run, env, method, module, dataset, test_dataset, loader, optimizer, scheduler, generators,
                 torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"), settings,
                 optimizer.param_groups[0]["lr"], record,
                 health_images=_held_out_batch(test_dataset or dataset, s.health_images, dev, s.image_size))


def _held_out_batch(dataset: ImageDataset, size: int, device: torch.device, image_size: int) -> Tensor | None:
    """The first `size` images of `dataset` on `device` (None for size < 2: relative distances need two)."""
    if min(size, len(dataset)) < 2:
        return None
    loader = make_loader(dataset, min(size, len(dataset)), shuffle=False, drop_last=False, num_workers=0)
    loader.set_epoch(0)
    images, _, _ = next(iter(loader))
    return to_device_batch(images, device, image_size)


def _resume(loop: _Loop) -> None:
    """Restore the method, optimiser, schedule and generators from the run's last checkpoint, if it has one."""
    last = checkpoint.last(loop.run.checkpoint_dir)
    if last is None:
        if loop.env.is_main and loop.run.meta() is None:  # called from Python: no gin builder started the folder
            loop.run.start("# trained from Python (pirl_ablate.train.pretrain), not from a gin config\n",
                           seed=loop.settings.seed)
        if loop.env.is_main and loop.run.metrics_path.exists():  # an earlier attempt's rows: this one starts over
            loop.run.rewrite_metrics([])
        return
    state = checkpoint.load(last)  # on the CPU: load_state_dict copies onto the device
    if state["dataset_size"] != len(loop.dataset):
        raise ConfigError(f"{last} was trained on {state['dataset_size']} images but the config gives "
                          f"{len(loop.dataset)}: use another run folder (--out)")
    loop.method.load_state_dict(state["method"])
    loop.optimizer.load_state_dict(state["optimizer"])
    loop.scheduler.load_state_dict(state["scheduler"])
    checkpoint.restore_rng_states(state["rng"], loop.generators)
    loop.start_epoch, loop.step, loop.resumed = state["epoch"], state["step"], True
    if loop.env.is_main:
        _restore_metrics(loop, state.get("metrics"))
    info(f"resuming {loop.run.path} from {last} (epoch {loop.start_epoch}/{loop.settings.epochs})")


def _announce(loop: _Loop) -> None:
    s, env = loop.settings, loop.env
    info(f"[bold]train[/] {loop.record['method']['name']} on {loop.record['dataset']['name']} ({len(loop.dataset)} "
         f"images) | {env.world_size} x {env.device.type} | {s.precision} | batch {s.batch_size} "
         f"({s.batch_size // env.world_size}/process) | {s.epochs} epochs x {len(loop.loader)} steps | "
         f"peak lr {loop.peak_lr:.4g} | views {', '.join(loop.method.views) or '-'}")


def _log_views(loop: _Loop, x: Tensor) -> None:
    """The first batch's views, drawn from a copy of the view generator so the run itself is unchanged."""
    gen = loop.generators["view"]
    copy = torch.Generator(device=gen.device)
    copy.set_state(gen.get_state())
    method = loop.method
    image_view = method.image_view(x, copy) if "image" in method.views else None
    view = method.transform(x, copy) if "transformed" in method.views and method.transform is not None else None
    tensorboard.log_views(loop.run.path, x, image_view, view)


def _run_epoch(loop: _Loop, epoch: int) -> None:
    """One pass over the data, then the epoch's metrics row, monitor and checkpoint."""
    env, method, s = loop.env, loop.method, loop.settings
    loop.loader.set_epoch(epoch)
    sums: dict[str, Tensor] = {}
    seen, t0 = 0, time.perf_counter()
    steps = len(loop.loader)
    with progress(TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[ips]:.0f} img/s")) as bar:
        task = bar.add_task(f"epoch {epoch + 1}/{s.epochs}", total=steps, loss=float("nan"), ips=0.0)
        for images, index, labels in loop.loader:
            x = to_device_batch(images, env.device, s.image_size, whole=True)  # own-size images stay whole
            if s.channels_last and not isinstance(x, ImageBatch):  # a canvas is only cropped from, never convolved
                x = x.contiguous(memory_format=torch.channels_last)
            if loop.step == 0 and env.is_main:  # once per run: TensorBoard's picture of what the network sees
                _log_views(loop, x)
            with loop.autocast:
                total, parts = loop.module(x, index.to(env.device), labels.to(env.device), loop.generators["view"])
            value = total.detach().float()
            if not distributed.all_true(bool(torch.isfinite(value)), env):
                _diverged(loop, value, epoch)
            loop.optimizer.zero_grad(set_to_none=True)
            total.backward()
            loop.optimizer.step()
            loop.scheduler.step()
            loop.step += 1
            for name, v in {"loss": value, **parts}.items():
                sums[name] = sums.get(name, 0.0) + v.detach().float()
            seen += len(images) * env.world_size
            bar.update(task, advance=1, loss=float(value), ips=seen / (time.perf_counter() - t0))
    epoch_s = time.perf_counter() - t0
    row = {"epoch": epoch + 1, "step": loop.step, "lr": loop.optimizer.param_groups[0]["lr"],
           "images_per_s": seen / epoch_s, "epoch_s": epoch_s, **{k: float(v) / steps for k, v in sums.items()}}
    final = epoch + 1 == s.epochs
    if final and s.precise_bn_batches > 0:
        recompute_bn(method, loop.dataset, env.device, s.image_size, s.precise_bn_batches,
                     s.batch_size // env.world_size, seed=s.seed * 1000 + 997)
    if s.monitor_every and ((epoch + 1) % s.monitor_every == 0 or final) and env.is_main:
        queries = embed_dataset(method, loop.test_dataset, env.device, s.image_size)
        row["knn_top1"] = knn_top1(method.memory_bank.bank, loop.dataset.labels, queries, loop.test_dataset.labels,
                                   loop.dataset.num_classes, k=s.monitor_k, sigma=s.monitor_sigma)
    if env.is_main:
        health = torch.Generator(device=env.device).manual_seed(s.seed * 1000 + 999)  # same draws each epoch
        row.update(epoch_health(method, row, loop.health_images, health))
        loop.history.append(loop.run.log_metrics(row))
        info(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                        if k != "warnings"))
        for warning in row["warnings"]:
            info(f"[yellow]warning[/] epoch {epoch + 1}: {warning}")
    if (epoch + 1) % s.checkpoint_every == 0 or final:
        _save(loop, epoch + 1)
    loop.last_row = row


def _finish(loop: _Loop, wall_s: float, config_text: str | None) -> dict:
    """The random-init / already-complete cases, the replica check, config.gin and result.json."""
    env, s = loop.env, loop.settings
    if s.epochs == 0 or loop.start_epoch == s.epochs:  # nothing trained here: random init or complete
        if s.precise_bn_batches > 0 and loop.start_epoch == 0:
            recompute_bn(loop.method, loop.dataset, env.device, s.image_size, s.precise_bn_batches,
                         s.batch_size // env.world_size)
        if not loop.resumed:
            _save(loop, 0)
        loop.last_row = (loop.run.metrics() or [{}])[-1]  # (a random bank has nothing to monitor)
    if not distributed.same_on_all_ranks(sum(p.double().sum() for p in loop.method.parameters()), env):
        raise RuntimeError("the processes ended with different weights (DDP replicas out of sync)")
    result = {"epochs": s.epochs, "steps": loop.step, "final": loop.last_row,
              "warnings": loop.last_row.get("warnings", []), "wall_s": wall_s,
              "bn": "precise" if s.precise_bn_batches > 0 else "train", "lr": loop.peak_lr,
              "batch_size": s.batch_size, "world_size": env.world_size, "dataset_size": len(loop.dataset),
              "precision": s.precision}
    if env.is_main:
        if config_text is not None:
            loop.run.write_config(config_text)
        loop.run.update_meta(record=loop.record)
        result = loop.run.finish(**result)
    distributed.barrier(env)
    return result


def _restore_metrics(loop: _Loop, lines: list[str] | None) -> None:
    """metrics.jsonl <- the rows of the training the checkpoint holds (`lines`, saved with it): rows written after
    the checkpoint by a killed process are redone after the restart, and a row torn or lost after it is written
    again. A checkpoint without them (written by an earlier version) keeps the file's rows up to its epoch."""
    if lines is None:
        rows = [r for r in loop.run.metrics() if r.get("epoch", 0) <= loop.start_epoch]
        lines = [json.dumps(r, sort_keys=True) + "\n" for r in rows]
    loop.history = list(lines)
    loop.run.rewrite_metrics(loop.history)


def _save(loop: _Loop, epoch: int) -> None:
    """Rank 0 writes checkpoints/last.pt atomically; the others wait for it."""
    if loop.env.is_main:
        checkpoint.save({"epoch": epoch, "step": loop.step, "method": loop.method.state_dict(),
                         "optimizer": loop.optimizer.state_dict(), "scheduler": loop.scheduler.state_dict(),
                         "rng": checkpoint.rng_states(loop.generators), "world_size": loop.env.world_size,
                         "dataset_size": len(loop.dataset), "record": loop.record, "metrics": loop.history},
                        loop.run.checkpoint_dir)
    distributed.barrier(loop.env)


def _diverged(loop: _Loop, value: Tensor, epoch: int) -> NoReturn:
    """Mark the run failed with the step (the last checkpoint is left as it is) and stop."""
    kept = checkpoint.last(loop.run.checkpoint_dir)
    where = f"the last good checkpoint {kept} is kept" if kept else "no checkpoint was written"
    reason = f"loss is {float(value)} at step {loop.step + 1} (epoch {epoch + 1}); {where}"
    if loop.env.is_main:
        loop.run.fail(reason, step=loop.step + 1, epoch=epoch + 1)
    raise TrainingDiverged(reason)


__all__ = ["SCHEDULE_PER", "TrainSettings", "TrainingDiverged", "cosine", "embed_dataset", "fill_bank", "lr_factor",
           "parameter_groups", "pretrain", "recompute_bn"]
