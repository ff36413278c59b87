"""The built-in protocols and `run_evaluations`: load a run, optionally recompute BN statistics, run the
protocols, write `evals/*.json`.

Each protocol writes `RunDir.write_eval(f"{protocol}-{dataset}", result)` with the schema

    {"protocol": "linear"|"knn"|"invariance"|"semisup"|"svm"|"low-shot"|"detection", "dataset": str,
     "mode": "online"|"cached" (linear only: the paper's protocol or the fast cached-feature one),
     "metrics": {GROUP: {METRIC: float}},   # GROUP: layer ("res5"), transform ("jigsaw") or fraction ("1%")
     "bn": "precise"|"train", "wall_s": float, "image_size": int, ...protocol extras}

Accuracies are in percent. The evaluation dataset is any registered dataset (default: the one the run pre-trained
on); its train split trains the probes (and feeds precise-BN), its test split is held out. The network comes from
the run's last checkpoint (`pirl_ablate.checkpoint.load_method`), so the baselines take the same path: a supervised
run (`gin/supervised.gin`) is loaded like any other, and the random-init baseline is a run trained with
`train.epochs = 0` (`gin/random_init.gin`), whose checkpoint holds the freshly initialised network.

The checkpoint's record says what the run trained on (dataset and its per-split arguments, image size, pretext
transform), so the run's gin config is never parsed. The evaluation's own settings come from the caller: an
`EvalSettings` and a `Configuration` for the protocols' settings and what they build (the gin edge,
`pirl_ablate.gin_edge.run_evaluations`, answers from gin files and bindings: `evaluation.*` (batch size, image
size, precise-BN batches, device, cache dtype and bound), `linear_eval.*` (mode "online" | "cached"),
`linear_probe.*`, `knn_eval.*`, `invariance_eval.*`, `semisup_eval.*`, `svm_eval.*`, `low_shot_eval.*`;
gin/eval/paper.gin binds the paper's protocols).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from pirl_ablate import checkpoint
from pirl_ablate.console import info
from pirl_ablate.data import DEFAULT_LOADER, ArrayDataset, ImageDataset, LoaderOptions
from pirl_ablate.distributed import initialized_world
from pirl_ablate.errors import ConfigError, UserError, did_you_mean
from pirl_ablate.evaluate.context import EvalContext, EvalSettings
from pirl_ablate.evaluate.features import check_layers
from pirl_ablate.evaluate.inputs import eval_view, random_resized_crop_flip
from pirl_ablate.evaluate.invariance import (
    GROUPS,
    RELATIVE_MAX,
    REPRESENTATIONS,
    pair_distances,
    representations,
    summarise,
)
from pirl_ablate.evaluate.knn import knn_scores
from pirl_ablate.evaluate.linear import topk_accuracy, train_linear_probe
from pirl_ablate.evaluate.linear_online import train_online_linear
from pirl_ablate.evaluate.registry import PROTOCOLS, register_protocol
from pirl_ablate.evaluate.registry import protocols as protocol_names
from pirl_ablate.evaluate.semisup import balanced_subset, finetune, fraction_name
from pirl_ablate.health import relative_distances
from pirl_ablate.locks import eval_lock
from pirl_ablate.models.precise_bn import precise_bn
from pirl_ablate.registry import PLAIN, Configuration
from pirl_ablate.runs import RunDir

LINEAR_MODES = ("cached", "online")


# ------------------------------------------------------------------------------------------------------ protocols
@register_protocol("linear", gin_name="linear_eval", data_parallel=lambda settings: settings["mode"] == "online")
def linear_protocol(ctx: EvalContext, mode: str = "cached", pooling: str = "grid",
                    crop_size: int | None = None, epochs: int = 28, batch_size: int = 256, lr_per_256: float = 0.01,
                    milestones: Sequence[int] = (8, 16, 24), weight_decay: float = 5e-4, momentum: float = 0.9,
                    nesterov: bool = True, seed: int = 0) -> dict:
    """Linear classifiers on each layer `ctx.layers` of the frozen trunk (paper Tables 2, 5, 7): {layer: {top1,
    top5}}.

    mode "online" (the paper's, `pirl_ablate.evaluate.linear_online`): fresh RandomResizedCrop `crop_size` + flip
    views every epoch, Resize + CenterCrop at test, BatchNorm2d + Linear per layer, the schedule given here
    (VISSL's: 28 epochs, lr 0.01 per 256, x0.1 at 8, 16, 24, wd 5e-4, momentum 0.9, Nesterov), data parallel over
    the ranks of a torch.distributed process group; `seed` draws the views and the batch order.
    mode "cached" (the fast one: smoke scale, quick looks; `pirl_ablate.evaluate.linear`): features extracted
    once from the decoded images at the evaluation's size, cached, and a BatchNorm1d + Linear trained on them
    (`linear_probe.*` sets its schedule; the ones here do not apply).
    pooling: "grid" or "vissl" (`pirl_ablate.evaluate.features`); crop_size: px, None = the evaluation's size.
    gin/eval/paper.gin binds the paper's setting.
    """
    layers = ctx.layers
    if mode not in LINEAR_MODES:
        raise ConfigError(f"linear_eval.mode = {mode!r}{did_you_mean(mode, LINEAR_MODES)} (valid: "
                          f"{', '.join(LINEAR_MODES)})")
    if mode == "cached":
        if initialized_world() > 1:
            raise ConfigError("linear_eval.mode = 'cached' runs in one process; bind linear_eval.mode = 'online' "
                              "to evaluate over several processes")
        train = ctx.features("train", layers, pooling=pooling)
        test = ctx.features("test", layers, pooling=pooling)
        probe = ctx.configuration.bind("linear_probe", train_linear_probe)
        metrics = {layer: probe(*train[layer], *test[layer], ctx.num_classes, description=f"linear probe {layer}")
                   for layer in layers}
        return {"mode": mode, "metrics": metrics,
                "feature_dims": {layer: int(train[layer][0].shape[1]) for layer in layers},
                "num_train": len(train[layers[0]][0]), "num_test": len(test[layers[0]][0]),
                "hyperparameters": {**_bound(ctx.configuration, "linear_probe", train_linear_probe),
                                    "pooling": pooling}}
    size = crop_size or ctx.image_size
    rank, world = (dist.get_rank(), dist.get_world_size()) if initialized_world() > 1 else (0, 1)
    if batch_size % world:
        raise ConfigError(f"linear_eval.batch_size = {batch_size} is not a multiple of the {world} ranks")
    train_set, test_set = ctx.split("train"), ctx.split("test")
    gen = torch.Generator().manual_seed(seed * 1000 + rank)  # this rank's crops and flips, epoch after epoch

    def augmented(images: Tensor, sizes: Tensor | None) -> Tensor:
        return random_resized_crop_flip(images, sizes, size, gen)

    def train_batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        return ctx.batches(train_set, seed=seed, epoch=epoch, batch_size=batch_size // world, view=augmented,
                           rank=rank, world_size=world, drop_last=True)

    test_batches = ctx.batches(test_set, batch_size=batch_size // world, view=eval_view("resize_crop", size),
                               rank=rank, world_size=world)
    metrics, dims, _ = train_online_linear(
        ctx.net.backbone, layers, ctx.num_classes, train_batches, test_batches, input_size=size, pooling=pooling,
        epochs=epochs, batch_size=batch_size, lr_per_256=lr_per_256, milestones=milestones,
        weight_decay=weight_decay, momentum=momentum, nesterov=nesterov)
    return {"mode": mode, "metrics": metrics, "feature_dims": dims, "num_train": len(train_set),
            "num_test": len(test_set), "world_size": world,
            "hyperparameters": {"pooling": pooling, "crop_size": size, "epochs": epochs, "batch_size": batch_size,
                                "lr_per_256": lr_per_256, "milestones": list(milestones),
                                "weight_decay": weight_decay, "momentum": momentum, "nesterov": nesterov,
                                "seed": seed}}


@register_protocol("knn", configurable=False)
def knn_protocol(ctx: EvalContext) -> dict:
    """Weighted kNN (k = 200, sigma = 0.07; `knn_eval.*`) on L2-normalised pooled res5 features: {"res5": {top1,
    top5}}."""
    train_x, train_y = ctx.features("train", ["res5"])["res5"]
    test_x, test_y = ctx.features("test", ["res5"])["res5"]
    scores = ctx.configuration.bind("knn_eval", knn_scores)(train_x, train_y, test_x, ctx.num_classes)
    return {"metrics": {"res5": topk_accuracy(scores, test_y, ctx.num_classes)},
            "num_train": len(train_x), "num_test": len(test_x),
            "hyperparameters": _bound(ctx.configuration, "knn_eval", knn_scores)}


@register_protocol("invariance", gin_name="invariance_eval")
def invariance_protocol(ctx: EvalContext, transform: str | None = None, num_images: int = 1000,
                        representation: str = "auto", bins: int = 40) -> dict:
    """Distances between normalised representations of I and I^t (paper Figure 4; definitions in
    `pirl_ablate.evaluate.invariance`) for the first `num_images` test images, raw and relative to the distance
    between different images, for the heads (f vs g) and for pooled res5, with the same transform draws.

    transform: a transform name or composition (default: the run's pretext transform); representation: whose
    relative distances the histogram holds: "heads", "pooled", or "auto" = "heads" when the run's method trains
    both f and g (PIRL), else "pooled".
    Result: {"heads" (methods with f and g only), "res5": {mean, std (raw), relative}} plus "histogram" {"edges",
    "counts"} of the relative distances over [0, RELATIVE_MAX].
    """
    from pirl_ablate.transforms import build_transform

    pretext = ctx.record["transform"] or {"name": None, "kwargs": {}}
    name = transform or pretext["name"]
    if name is None:
        raise ConfigError("the run records no pretext transform: bind invariance_eval.transform (e.g. 'jigsaw')")
    has_heads = {"image", "transformed"} <= set(ctx.net.views)  # f and g (PIRL); other methods: pooled res5 only
    if representation == "auto":
        representation = "heads" if has_heads else "pooled"
    if representation not in REPRESENTATIONS:
        raise ConfigError(f"invariance_eval.representation = {representation!r}"
                          f"{did_you_mean(representation, (*REPRESENTATIONS, 'auto'))}")
    t = build_transform(name, configuration=ctx.configuration,
                        **(pretext["kwargs"] if name == pretext["name"] else {}))
    test = ctx.split("test")
    subset = _subset(test, torch.arange(min(num_images, len(test))))
    if representation == "heads" and not has_heads:
        raise ConfigError(f"invariance_eval.representation = 'heads': this run's method "
                          f"({ctx.record['method']['name']}) trains no g head; use 'pooled'")
    reps = REPRESENTATIONS if has_heads else ("pooled",)
    pairs: dict[str, list[tuple[Tensor, Tensor]]] = {rep: [] for rep in reps}
    for i, (images, _) in enumerate(ctx.batches(subset, description=f"invariance {name}")):
        for rep in reps:  # the same draws for both: a generator per batch, seeded alike
            gen = torch.Generator(device=ctx.device).manual_seed(ctx.settings.seed * 100003 + i)
            pairs[rep].append(representations(ctx.net, images, t, gen, rep))
    metrics, relative = {}, {}
    for rep, batches in pairs.items():
        a, b = (torch.cat(parts) for parts in zip(*batches))
        raw = summarise(pair_distances(a, b))
        relative[rep] = relative_distances(a, b)
        metrics[GROUPS[rep]] = {"mean": raw["mean"], "std": raw["std"], "relative": float(relative[rep].mean())}
    summary = summarise(relative[representation], bins=bins, upper=RELATIVE_MAX)
    return {"metrics": metrics, "histogram": summary["histogram"], "transform": name,
            "representation": representation, "num_images": summary["n"]}


@register_protocol("semisup", gin_name="semisup_eval")
def semisup_protocol(ctx: EvalContext, fractions: Sequence[float] = (0.01, 0.1), epochs: int = 20,
                     lr: float = 0.01, head_lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4,
                     batch_size: int = 64, seed: int = 0) -> dict:
    """Fine-tune backbone + a fresh linear head on class-balanced `fractions` of the train labels (paper Table 3,
    1% and 10%); each fraction starts from the run's weights. Result: {"1%": {top1, top5}, "10%": {...}}."""
    train, test = ctx.split("train"), ctx.split("test")
    metrics, sizes = {}, {}
    for fraction in fractions:
        group = fraction_name(fraction)
        idx = balanced_subset(train.labels, fraction, seed)
        subset = _subset(train, idx)
        backbone = copy.deepcopy(ctx.net.backbone)
        metrics[group] = finetune(
            backbone, ctx.net.feature_dim, ctx.num_classes,
            lambda epoch, s=subset: ctx.batches(s, seed=seed, epoch=epoch, batch_size=batch_size),
            ctx.batches(test), epochs=epochs, lr=lr, head_lr=head_lr, momentum=momentum,
            weight_decay=weight_decay, description=f"fine-tune {group}")
        sizes[group] = len(idx)
    return {"metrics": metrics, "num_labels": sizes, "num_test": len(test),
            "hyperparameters": {"fractions": list(fractions), "epochs": epochs, "lr": lr, "head_lr": head_lr,
                                "momentum": momentum, "weight_decay": weight_decay, "batch_size": batch_size,
                                "seed": seed}}


# --------------------------------------------------------------------------------------------------- entry point
def run_evaluations(run_dir: str | Path, protocols: Sequence[str], dataset: str | None = None,
                    layers: Sequence[str] = ("res5",), *, settings: EvalSettings | None = None,
                    configuration: Configuration = PLAIN, loader_options: LoaderOptions = DEFAULT_LOADER
                    ) -> dict[str, dict]:
    """Evaluate the run in `run_dir` with each of the registered `protocols`; returns {eval name: result} and writes
    each result atomically to `run_dir/evals/<protocol>-<dataset>.json` as soon as it is done.

    `dataset` defaults to the pre-training dataset; `layers` are those of the per-layer protocols. `settings` (None:
    `EvalSettings()`),
    `configuration` (each protocol's settings under its gin name, and what it builds) and `loader_options` configure
    the evaluation; the run itself is described by its checkpoint's record. From gin files and bindings:
    `pirl_ablate.gin_edge.run_evaluations`.
    """
    run = RunDir(run_dir)
    names = protocol_names()
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ConfigError(f"unknown protocol `{unknown[0]}`{did_you_mean(unknown[0], names)} (registered: "
                          f"{', '.join(names)})")
    layers = check_layers(layers)
    if checkpoint.last(run.checkpoint_dir) is None:
        raise UserError(f"{run.checkpoint_dir}: no checkpoint (last.pt); is {run.path} a run folder written by "
                        f"`pirl-ablate train` or a sweep?")
    ctx = load_context(run, dataset, settings or EvalSettings(), layers=tuple(layers), configuration=configuration,
                       loader_options=loader_options)
    results = {}
    for protocol in protocols:
        entry = PROTOCOLS.entry(protocol)
        evaluate = configuration.bind(entry.gin_name, entry.obj) if entry.gin_name else entry.obj
        writer = initialized_world() == 1 or dist.get_rank() == 0  # data parallel (linear, detection): rank 0 writes
        with _writer_holds_lock(run, protocol):  # one evaluation at a time
            start = time.perf_counter()
            info(f"{run.path.name}: {protocol} on {ctx.dataset}")
            result = evaluate(ctx)
            result = {"protocol": protocol, "dataset": ctx.dataset, **result, "bn": ctx.bn,
                      "image_size": ctx.image_size, "wall_s": time.perf_counter() - start}
            name = f"{protocol}-{result['dataset']}"  # detection names its own (voc0712, voc07)
            if writer:
                run.write_eval(name, result)
        results[name] = result
    return results


@contextlib.contextmanager
def _writer_holds_lock(run: RunDir, protocol: str) -> Iterator[None]:
    """The run's lock for `protocol` (`eval_lock`), held by the process that writes the result: the only one, or
    rank 0 of a data-parallel evaluation. Rank 0 tells the other ranks whether it got the lock, so that a refused
    evaluation ends on every rank with rank 0's reason instead of leaving the others waiting in the protocol's
    first collective."""
    if initialized_world() == 1:
        with eval_lock(run.path, protocol):
            yield
        return
    with contextlib.ExitStack() as held:
        refusal: list[str | None] = [None]
        if dist.get_rank() == 0:
            try:
                held.enter_context(eval_lock(run.path, protocol))
            except UserError as e:
                refusal[0] = str(e)
                dist.broadcast_object_list(refusal, src=0)
                raise
        dist.broadcast_object_list(refusal, src=0)
        if refusal[0] is not None:
            raise UserError(f"rank 0 did not start the evaluation: {refusal[0]}")
        yield


def load_context(run: RunDir, dataset: str | None, settings: EvalSettings, **fields: Any) -> EvalContext:
    """The run's network on the evaluation device (eval mode, precise-BN applied if `settings` ask for it) and its
    context (`fields`: `EvalContext`'s optional ones)."""
    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    net = checkpoint.load_method(run.path, map_location=device)
    record = checkpoint.run_record(run.path)
    ctx = EvalContext(run=run, net=net, record=record, dataset=dataset or record["dataset"]["name"],
                      image_size=settings.image_size or record["image_size"], device=device,
                      settings=settings, bn=(run.result() or {}).get("bn", "train"), **fields)
    if settings.precise_bn_batches > 0:
        train = ctx.split("train")
        batches = (images for i, (images, _) in zip(range(settings.precise_bn_batches),
                                                    ctx.batches(train, seed=settings.seed)))
        if precise_bn(net.backbone, batches, lambda x: net.backbone(x, layers=("res5",))):
            ctx.bn = "precise"
        net.eval()
    return ctx


def _subset(dataset: ImageDataset, idx: Tensor) -> ImageDataset | torch.utils.data.Subset:
    """Items `idx` of `dataset`: an in-memory ArrayDataset stays one (indexed a batch at a time by the loader)."""
    if isinstance(dataset, ArrayDataset):
        return ArrayDataset(dataset.images[idx], dataset.labels[idx], name=dataset.name, split=dataset.split,
                            num_classes=dataset.num_classes)
    return torch.utils.data.Subset(dataset, idx.tolist())


def _bound(configuration: Configuration, name: str, fn: Any) -> dict:
    """The keyword defaults of `fn` with the values `configuration` has for `name` applied (recorded in results)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in configuration.settings(name, fn).items()
            if k != "description"}
