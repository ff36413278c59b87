"""The gin edge of training: `train.*` (and the part configurables) -> the plain objects `pretrain` takes.

`pirl-ablate train CONFIG.gin` and every sweep run go through `run_training(config_str, run_dir)`, which re-creates
the config, starts the run folder and calls `train(run_dir)`: it builds the datasets, the trunk (`Backbone.*`), the
negative source (`train.negatives`, settings under its gin name, e.g. `MomentumQueue.size`), the memory bank
(`MemoryBank.*`) when that source uses one, the transforms (`jigsaw.*`, `image.*`, ...), the method (`train.method`, its
hyperparameters under its gin name, e.g. `PIRL.lambda_`, the shared head settings under `heads.*`), the SGD
optimiser and the cosine schedule, records what evaluation needs, and trains.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from typing import Any

import gin
import torch
from torch import nn

from pirl_ablate import checkpoint, config, distributed
from pirl_ablate.console import info
from pirl_ablate.data import build_dataset
from pirl_ablate.errors import ConfigError, UserError
from pirl_ablate.gin_edge import GIN, build, configured
from pirl_ablate.losses import NEGATIVES, MomentumQueue
from pirl_ablate.methods import METHODS, Method
from pirl_ablate.methods.base import assemble_method
from pirl_ablate.run_guard import GIVEN_MARKER, check_train_values, guarded_run
from pirl_ablate.runs import RunDir
from pirl_ablate.train import SCHEDULE_PER, TrainingDiverged, TrainSettings, cosine, parameter_groups, pretrain
from pirl_ablate.transforms import TRANSFORMS, build_transform


@gin.configurable("heads")
def head_settings(embed_dim: int = 128, mlp_heads: bool = False, num_patches: int = 9,
                  patch_bn_stats: bool = True) -> dict[str, Any]:
    """Settings of the heads every method builds on the trunk (gin: `heads.*`); each method takes those it has.

    embed_dim: size of f, g and the bank entries (128, Section 3.2); mlp_heads: two-layer projections; num_patches:
    P of a patch view (9, the 3x3 Jigsaw grid); patch_bn_stats: whether the patch pass updates BN running statistics.
    """
    return {"embed_dim": embed_dim, "mlp_heads": mlp_heads, "num_patches": num_patches,
            "patch_bn_stats": patch_bn_stats}


def transform_spec(spec: str) -> dict[str, Any]:
    """{"name": spec, "kwargs": the gin bindings of its parts}: `build_transform(name, **kwargs)` builds it."""
    parts = [p.strip() for p in spec.split("+")]
    for part in parts:  # an unknown name is one line with close matches, before gin is asked for its bindings
        TRANSFORMS.get(part)
    kwargs = _part_kwargs(spec) if len(parts) == 1 else {p: _part_kwargs(p) for p in parts}
    return {"name": spec, "kwargs": kwargs}


def _part_kwargs(name: str) -> dict[str, Any]:
    """The gin bindings of transform `name` (under its gin name: `kornia:X` is `kornia.X`); a rotation after the
    image view (`rotation.augment`) also records the image view's, so that the record rebuilds the same view
    without gin."""
    kwargs = config.bound_kwargs(TRANSFORMS.entry(name).gin_name or name if name in TRANSFORMS else name)
    if name == "rotation" and kwargs.get("augment"):
        kwargs["image"] = config.bound_kwargs("image")
    return kwargs


def configured_transform(spec: str) -> Any:
    """The transform `spec` ("jigsaw", "rotation+jigsaw") with its gin bindings passed as keyword arguments."""
    recorded = transform_spec(spec)
    return build_transform(recorded["name"], configuration=GIN, **recorded["kwargs"])


def configured_method(method: str, dataset_size: int, num_classes: int | None, transform: str | None,
                      image_transform: str | None, generator: torch.Generator, device: torch.device,
                      negatives: str = "memory_bank", trains: bool = True) -> Method:
    """The method `method` of the current gin config for a dataset of `dataset_size` images in `num_classes`
    classes, assembled (`assemble_method`) from the parts its constructor takes: the trunk, the negative source
    `negatives` with its gin bindings, the memory bank if that source uses one, the transforms, the generator and
    the head settings. A method that `trains` no step (the random-init baseline) draws no negatives: its N is
    capped at what the bank holds."""
    entry = METHODS.entry(method)
    heads = head_settings()
    backbone = configured("Backbone")().to(device)
    hyperparameters: dict[str, Any] = {**heads, "num_classes": num_classes}
    if not trains and "num_negatives" in entry.params:
        bound = config.bound_kwargs(entry.gin_name or method).get("num_negatives", entry.params["num_negatives"])
        hyperparameters["num_negatives"] = max(1, min(bound, dataset_size - 1))

    def part(key: str) -> Any:
        if key == "negatives":
            return build(NEGATIVES, negatives)
        if key == "memory_bank":
            return configured("MemoryBank")(dataset_size, heads["embed_dim"], generator, device=device)
        spec = transform if key == "transform" else image_transform
        return configured_transform(spec) if spec else None

    built = assemble_method(method, backbone, generator, part, hyperparameters, configuration=GIN).to(device)
    check_queue_size(built, dataset_size)
    return built


def check_queue_size(method: nn.Module, dataset_size: int) -> None:
    """Refuse a momentum queue of more keys than the training set has images: it would hold older keys of a query's
    own image among the query's negatives (MoCo keeps K <= |D|: 65,536 of ImageNet's 1.28M)."""
    for name, module in method.named_modules():
        if isinstance(module, MomentumQueue) and module.size > dataset_size:
            key = "MoCoV2.queue_size" if name == "queue" else "MomentumQueue.size"
            raise ConfigError(f"{key} = {module.size} is larger than the {dataset_size} training images: the queue "
                              f"would hold older keys of a query's own image among its negatives; bind "
                              f"{key} <= {dataset_size}")


@gin.configurable("train", denylist=["run_dir"])
def train(run_dir: str | Path, *, method: str = "pirl", dataset: str = "fashion_mnist", transform: str = "jigsaw",
          image_transform: str | None = "image", negatives: str = "memory_bank", epochs: int = 800,
          batch_size: int = 1024, base_lr: float = 0.12, base_batch: int = 1024, final_lr_fraction: float = 1e-3,
          warmup_epochs: float = 0.0, schedule_per: str = "step", momentum: float = 0.9, weight_decay: float = 1e-4,
          image_size: int = 32, seed: int = 0, checkpoint_every: int = 1, monitor_every: int = 1,
          monitor_k: int = 200, monitor_sigma: float = 0.07, precise_bn_batches: int = 0, precision: str = "auto",
          channels_last: bool = False, health_images: int = 256, device: str | None = None) -> dict:
    """Build the run's objects from gin and `pretrain` them into `run_dir` (resuming if possible).

    Args:
        method: registered method ("pirl", "npid", "jigsaw", "rotation", "supervised", "moco_v2"; `pirl-ablate list
            methods`).
        dataset: registered dataset name; its "train" split is trained on, its "test" split feeds the kNN monitor.
        transform: pretext transform name or chain ("jigsaw", "rotation", "rotation+jigsaw"), for methods that
            use a transformed view.
        image_transform: the augmentation of the image view f embeds ("image"); None uses the plain images.
        negatives: the source of negatives of PIRL / NPID ("memory_bank", "momentum_queue", "in_batch"; `pirl-ablate
            list negatives`), its settings under its gin name (`MomentumQueue.size`, `MemoryBankNegatives.*`).
        base_lr, base_batch: peak lr = base_lr * batch_size / base_batch (paper: 0.12 at 1024).
        final_lr_fraction: the cosine ends at peak * this (paper: 0.12 -> 1.2e-4, i.e. 1e-3).
        warmup_epochs: linear warm-up from 0 (not in the paper; 0 disables).
        schedule_per: "step" (the lr follows the cosine every step) or "epoch" (held within an epoch: VISSL's).
        momentum, weight_decay: SGD (0.9, 1e-4 on conv/linear weights; none on BN and biases).
        seed: network init (torch.manual_seed), the method's generator (seed * 1000 + 2 * rank + 1: the memory
            bank, negatives, classifier initialisation), views and data order.
        device: None picks cuda:LOCAL_RANK when available, else the CPU.
        epochs, batch_size, image_size, checkpoint_every, monitor_every, monitor_k, monitor_sigma,
        precise_bn_batches, precision, channels_last, health_images: the loop's `pirl_ablate.train.TrainSettings`
            (seed too), documented there.
    Returns the result dict also written to result.json.
    """
    env = distributed.setup(device)
    run = RunDir(run_dir)
    try:
        try:
            check_train_values(epochs=epochs, batch_size=batch_size)  # before either is used
            train_set = build_dataset(dataset, "train", configuration=GIN)
            torch.manual_seed(seed)
            generator = torch.Generator(device=env.device).manual_seed(seed * 1000 + 2 * env.rank + 1)
            net = configured_method(method, len(train_set), train_set.num_classes, transform, image_transform,
                                    generator, env.device, negatives, trains=epochs > 0)
            optimizer = torch.optim.SGD(parameter_groups([net], weight_decay), lr=base_lr * batch_size / base_batch,
                                        momentum=momentum)
            if schedule_per not in SCHEDULE_PER:
                raise ConfigError(f"train.schedule_per = {schedule_per!r} (valid: {', '.join(SCHEDULE_PER)})")
            schedule = partial(cosine, epochs=epochs, warmup_epochs=warmup_epochs, final_fraction=final_lr_fraction,
                               per=schedule_per)
            monitor = monitor_every > 0 and net.memory_bank is not None and train_set.num_classes is not None
            test_set = build_dataset(dataset, "test", configuration=GIN) if monitor else None
            record = {"dataset": {"name": dataset, "kwargs": {s: config.bound_kwargs(dataset, s)
                                                              for s in ("train", "test", "unlabeled")}},
                      "transform": transform_spec(transform) if transform else None}
            # operative values first, then every binding as given: a binding training never read (e.g. the test
            # split's `fashion_mnist.subset` when no kNN monitor ran) is kept for whoever reads the config
            config_text = gin.operative_config_str() + GIVEN_MARKER + gin.config_str()
        except Exception as e:
            if env.is_main:
                run.fail(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            raise
        settings = TrainSettings(epochs=epochs, batch_size=batch_size, image_size=image_size, seed=seed,
                                 checkpoint_every=checkpoint_every, monitor_every=monitor_every, monitor_k=monitor_k,
                                 monitor_sigma=monitor_sigma, precise_bn_batches=precise_bn_batches,
                                 precision=precision, channels_last=channels_last, health_images=health_images)
        return pretrain(net, train_set, optimizer, run_dir, settings, schedule=schedule, test_dataset=test_set,
                        env=env, record=record, config_text=config_text, loader_options=configured("loader")())
    finally:
        distributed.teardown(env)


# ------------------------------------------------------------------------------------------- entry points
def run_training(config_str: str, run_dir: str | Path) -> dict:
    """Re-create the gin config `config_str` in this process, record it, and pre-train into `run_dir`.

    Used by sweeps (one call per run, in a worker) and by `pirl-ablate train`. Resumes from the run folder's last
    checkpoint; a complete run returns its result.json without training. A run folder this call created is removed
    again when bad input (a bad binding, a missing dataset: `_bad_input`) stops it before its first checkpoint: the
    error line says what was wrong, and no failed run is left behind. A sweep's run folders exist before their job
    starts, so they keep their failed result.json for `status` and reports.
    """
    config.parse_text(config_str)
    run = RunDir(run_dir)
    fresh, owner = not run.path.exists(), distributed.launcher_rank() == 0
    with guarded_run(run, config_str, owner=owner):  # lock, resume check, *.tmp
        if run.is_done():
            info(f"{run.path}: already done")
            return run.result()
        seed = config.bound_kwargs("train").get("seed", 0)
        if owner:
            run.start(config_str, seed=seed)
        try:
            return train(run_dir)
        except (UserError, TypeError, ValueError) as e:
            if fresh and owner and _bad_input(e) and checkpoint.last(run.checkpoint_dir) is None:
                shutil.rmtree(run.path)  # a folder this call created and trained nothing in goes again
            raise


def _bad_input(e: Exception) -> bool:
    """A mistake in the config or data (a UserError other than divergence, or a wrong-typed binding gin passed to a
    configurable), as opposed to a run that failed while training."""
    if isinstance(e, UserError):
        return not isinstance(e, TrainingDiverged)
    return config.configurable_error(e) is not None


__all__ = ["TrainingDiverged", "head_settings", "run_training", "train"]
