"""Does PIRL's mechanism work in a recipe? Train one gin config with probes, print its health per epoch.

The run is the one `pirl-ablate train CONFIG` makes: this script calls `pirl_ablate.build.run_training` itself
(same seeds, data order, views, negatives and steps; the run folder goes to a temporary folder, or `--out`). The
probes hook the method's forward: before each probed step they redraw the step's views from a copy of the view
generator, embed them with no gradient and BatchNorm statistics left alone, and draw their negatives from their own
generator, so probing changes nothing in the run. Every `--probe-every` steps, on the batch about to be trained on
and the bank about to score it (pirl_ablate.health):

    pos/neg_<term>   mean cosine of f(v_I) / g(v_It) with m_I and with 256 random bank entries
    Z, Z_batch       the partition estimate in use, and mean exp(s / tau) * |D| over those scores
                     (pirl_ablate.losses.mean_exp_score); z_drift = log10(Z / Z_batch)

and after each epoch: the run's own metrics row (loss and the method's parts), the bank's uniformity, relative
invariance of the heads and of pooled res5 on a fixed batch of 256 test images (eval mode, fixed views), and at the
end kNN and linear top-1 (res5, train -> test split, the evaluation protocols' functions). `--z-every-epoch`
re-estimates a fixed Z from the first probe of each epoch (an intervention, not a probe: the fix this script
demonstrates for NCE's stale Z; see benchmarks/RESULTS.md).

    python benchmarks/mechanism.py gin/pirl_jigsaw.gin --bind fashion_mnist.subset=3000 --bind train.epochs=3
    python benchmarks/mechanism.py gin/random_init.gin --json out.json       # epochs = 0: only the evaluations
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import tempfile
from pathlib import Path

import gin
import torch
from torch import nn

from pirl_ablate import build, config, health
from pirl_ablate.checkpoint import load_method
from pirl_ablate.data import build_dataset, make_loader, to_device_batch
from pirl_ablate.evaluate import knn_scores, topk_accuracy, train_linear_probe
from pirl_ablate.evaluate.invariance import representations
from pirl_ablate.gin_edge import GIN
from pirl_ablate.losses import mean_exp_score
from pirl_ablate.methods import Method
from pirl_ablate.models import frozen_bn_stats
from pirl_ablate.runs import RunDir
from pirl_ablate.transforms import build_transform

PROBE_NEGATIVES = 256


def setting(name: str):
    """train.<name> as bound, else build.train's default."""
    try:
        return gin.query_parameter(f"train.{name}")
    except ValueError:
        return inspect.signature(build.train).parameters[name].default


def _copy(gen: torch.Generator) -> torch.Generator:
    copy = torch.Generator(device=gen.device)
    copy.set_state(gen.get_state())
    return copy


@torch.no_grad()
def probe(method: Method, images, index, view_gen, gen) -> dict[str, float]:
    """Alignment of each term and the partition check on one training batch, before the method's step on it.

    The views are those the step will make (drawn in forward's order from a copy of its view generator); BN
    running statistics are untouched, the negatives come from `gen`."""
    bank = method.memory_bank
    copy = _copy(view_gen)
    view = method.transform(images, copy) if "transformed" in method.views else None
    image_view = method.image_view(images, copy)
    with frozen_bn_stats(method.backbone):
        queries = {}
        if view is not None:
            queries["transformed"] = method.embed_transformed(view)
        queries["image"] = method.embed_image(image_view)
    index = index.to(bank.bank.device)
    negatives = torch.randint(0, bank.size, (len(index), PROBE_NEGATIVES), generator=gen).to(bank.bank.device)
    row = {}
    for term, q in queries.items():
        row[f"pos_sim_{term}"], row[f"neg_sim_{term}"] = health.alignment(q, bank.bank, index, negatives)
    q = torch.stack([q.float() for q in queries.values()], dim=1)
    row["Z_batch"] = float(mean_exp_score(q, bank.bank, index, negatives, method.tau)) * bank.size
    if method.estimator == "nce" and method.partition.started:
        row["Z"] = float(method.partition.Z)
        row["z_drift"] = math.log10(row["Z"] / row["Z_batch"])
    return row


@torch.no_grad()
def held_out(method: Method, pretext, images) -> dict[str, float]:
    """Relative invariance (heads where the method trains g, and pooled res5) on fixed views of fixed images."""
    was = method.training
    method.eval()
    row = {}
    reps = ("heads", "pooled") if "transformed" in method.views and hasattr(method, "g") else ("pooled",)
    for rep in reps:
        gen = torch.Generator(device=images.device).manual_seed(0)
        row[f"rel_inv_{rep}"] = health.relative_invariance(*representations(method, images, pretext, gen, rep))
    method.train(was)
    return row


@torch.no_grad()
def final_scores(method: Method, train_set, test_set, image_size, device) -> dict[str, float]:
    """kNN and linear top-1 (%) on pooled res5, the train split as the memory / training set."""
    method.eval()

    def feats(ds):
        loader = make_loader(ds, 256, shuffle=False, drop_last=False, num_workers=0)
        loader.set_epoch(0)
        xs, ys = zip(*[(method.pooled(to_device_batch(im, device, image_size)).float().cpu(), y)
                       for im, _, y in loader])
        return torch.cat(xs), torch.cat(ys)

    (tx, ty), (vx, vy) = feats(train_set), feats(test_set)
    c = train_set.num_classes
    knn = topk_accuracy(GIN.bind("knn_eval", knn_scores)(tx, ty, vx, c), vy, c)["top1"]
    with torch.enable_grad():
        linear = GIN.bind("linear_probe", train_linear_probe)(tx, ty, vx, vy, c)["top1"]
    return {"knn": knn, "linear": linear}


class Probes:
    """The forward pre-hook: probes every `probe_every` steps, epoch-end measures at each epoch's first step."""

    def __init__(self, run_dir: Path, steps: int, probe_every: int, z_every_epoch: bool, pretext, fixed_images,
                 image_size: int, seed: int):
        self.run_dir, self.steps, self.probe_every, self.z_every_epoch = run_dir, steps, probe_every, z_every_epoch
        self.pretext, self.fixed_images, self.image_size = pretext, fixed_images, image_size
        self.gen = torch.Generator().manual_seed(seed * 1000 + 7)
        self.method: Method | None = None
        self.step, self.probes, self.rows = 0, [], []

    def __call__(self, module: nn.Module, args, kwargs=None) -> None:
        if not isinstance(module, Method):
            return
        self.method = module
        images, index, _, view_gen = args
        if self.step % self.steps == 0 and self.step > 0:
            self.end_epoch()
        bank = getattr(module, "memory_bank", None)
        if bank is not None and hasattr(module, "embed_image") and self.step % self.probe_every == 0:
            self.probes.append(probe(module, images, index, view_gen, self.gen))
            first = len(self.probes) == 1 and self.step >= self.steps
            if self.z_every_epoch and first and module.estimator == "nce" and module.partition.started:
                module.partition.Z.fill_(self.probes[-1]["Z_batch"])
        self.step += 1

    def end_epoch(self) -> None:
        """The epoch just trained: the run's metrics row, the probes' means, uniformity, relative invariance."""
        method = self.method
        epoch = self.step // self.steps
        logged = [r for r in RunDir(self.run_dir).metrics() if r.get("epoch") == epoch]
        row = {"epoch": epoch, **{k: v for k, v in (logged[-1] if logged else {}).items() if k != "epoch"}}
        row.update({f"probe_{k}": sum(p[k] for p in self.probes if k in p) / sum(k in p for p in self.probes)
                    for k in dict.fromkeys(k for p in self.probes for k in p)})
        if method.memory_bank is not None:
            bank = method.memory_bank.bank
            row["uniformity"] = health.uniformity(bank, 4096, torch.Generator(device=bank.device).manual_seed(
                int(torch.randint(0, 2**31 - 1, (1,), generator=self.gen))))
        device = next(method.parameters()).device
        row.update(held_out(method, self.pretext, to_device_batch(self.fixed_images, device, self.image_size)))
        self.rows.append(row)
        self.probes = []
        print(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)


def run(config_files: list[str], bindings: list[str], probe_every: int, z_every_epoch: bool,
        out: str | None = None) -> dict:
    config_str = config.parse(config_files, bindings)
    seed, epochs, batch_size = setting("seed"), setting("epochs"), setting("batch_size")
    image_size, dataset = setting("image_size"), setting("dataset")
    train_set = build_dataset(dataset, "train", configuration=GIN)
    test_set = build_dataset(dataset, "test", configuration=GIN)
    steps = len(make_loader(train_set, batch_size, seed=seed))
    pretext = build.configured_transform(setting("transform") or "jigsaw")
    fixed_images = next(iter(make_loader(test_set, 256, shuffle=False, drop_last=False, num_workers=0)))[0]
    tmp = None if out else tempfile.TemporaryDirectory(prefix="mechanism-")
    run_dir = Path(out or tmp.name) / "run"
    probes = Probes(run_dir, steps, probe_every, z_every_epoch, pretext, fixed_images, image_size, seed)
    hook = nn.modules.module.register_module_forward_pre_hook(probes)
    try:
        build.run_training(config_str, run_dir)
    finally:
        hook.remove()
    if probes.method is not None:
        probes.end_epoch()  # the last epoch (after precise BN, if bound: the run's final state)
    method = probes.method
    if method is None:  # epochs = 0 (or a complete --out run): the run's saved network
        method = load_method(run_dir, map_location="cuda" if torch.cuda.is_available() else "cpu")
    device = next(method.parameters()).device
    fixed = to_device_batch(fixed_images, device, image_size)
    result = {"config": config_files, "bindings": bindings, "epochs": probes.rows, "final": final_scores(
        method, train_set, test_set, image_size, device)}
    if epochs == 0:
        result["final"].update(held_out(method, pretext, fixed))
        jigsaw = build_transform("jigsaw", configuration=GIN)
        gen = torch.Generator(device=device).manual_seed(0)
        result["final"]["rel_inv_pooled_jigsaw"] = health.relative_invariance(
            *representations(method.eval(), fixed, jigsaw, gen, "pooled"))
    print(json.dumps(result["final"]), flush=True)
    if tmp is not None:
        tmp.cleanup()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="+")
    p.add_argument("--bind", action="append", default=[])
    p.add_argument("--probe-every", type=int, default=4)
    p.add_argument("--z-every-epoch", action="store_true")
    p.add_argument("--json", help="write the rows and final scores here")
    p.add_argument("--out", help="keep the run folder here (OUT/run); default: a temporary folder")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1); CPU runs match `pirl-ablate train` bit for bit at the same thread count")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    result = run(args.config, args.bind, args.probe_every, args.z_every_epoch, args.out)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
