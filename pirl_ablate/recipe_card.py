"""`pirl-ablate recipe CONFIG.gin`: the operative recipe of a config beside the paper's and VISSL's values.

Every row is one hyperparameter that defines the method, its optimisation, its views, its negatives, or an
evaluation protocol; its value is what the config binds (else the configurable's default: what would run). The
reference values are written here from the paper (Misra & van der Maaten, CVPR 2020, Section 4 and supplementary
B/C) and, where the paper is silent, from VISSL's reproduction (`configs/config/pretrain/pirl/
pirl_jigsaw_4node_resnet50.yaml`, the transforms and `vissl/losses/nce_loss.py` it names, and its benchmark configs):
they are not read from the code's defaults. A row differs when the value matches neither the paper's (or VISSL's
where the paper names none). Named deviations are the project's deliberate choices, each with the binding that turns
it back. A 0-epoch run (the random-init baseline) trains nothing, so only its network rows are compared.

    card = recipe_card(["gin/paper/pirl_jigsaw.gin"])
    card.differences()           # rows that differ: [] for a paper config
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gin

from pirl_ablate import config
from pirl_ablate.registry import signature_parameters

PRETRAINING = ("method", "optimisation", "views", "negatives")
# methods whose optimisation the paper states (PIRL, NPID, NPID++); the others' schedules are listed, not compared
PAPER_SCHEDULES = ("pirl", "npid")
SECTIONS = (*PRETRAINING, "evaluation")


@dataclass(frozen=True)
class AnyOf:
    """A reference that accepts any of `values` (e.g. 800 epochs, or the ablations' 400)."""

    values: tuple
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class ByMethod:
    """A reference that depends on the method: `contrastive` for PIRL and NPID (supplementary B: detection lr 0.003,
    1,000 warm-up iterations), `other` for the rest (Jigsaw, supervised: 0.02, 100)."""

    contrastive: Any
    other: Any

    def of(self, method: str) -> Any:
        return self.contrastive if method in ("pirl", "npid") else self.other

    def __str__(self) -> str:
        return f"{show_value(self.contrastive)} / {show_value(self.other)}"


@dataclass(frozen=True)
class Config:
    """The operative values of one parsed config, read by key ("Configurable.param", unscoped)."""

    bound: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        if key in self.bound:
            return self.bound[key]
        name, param = key.rsplit(".", 1)
        target = config.configurable_target(name)
        if target is None:
            return None
        p = (signature_parameters(target) or {}).get(param)
        return None if p is None or p.default is inspect.Parameter.empty else p.default

    @property
    def method(self) -> str:
        return self["train.method"]

    @property
    def transform(self) -> str:
        return (self["train.transform"] or "") if self.method in ("pirl", "jigsaw", "rotation") else ""

    @property
    def bank(self) -> bool:
        return self.method in ("pirl", "npid") and self["train.negatives"] == "memory_bank"

    @property
    def trains(self) -> bool:
        return (self["train.epochs"] or 0) > 0


@dataclass(frozen=True)
class Row:
    """One hyperparameter: `key` (a gin key, or a name with `value` computing it), the paper's and VISSL's values
    (None: silent), where it applies, and, for a named deviation, its name and the binding that turns it back."""

    section: str
    what: str
    key: str
    paper: Any = None
    vissl: Any = None
    applies: Callable[[Config], bool] = lambda c: True
    value: Callable[[Config], Any] | None = None
    deviation: str | None = None
    switch: str | None = None


def _detection_setting(c: Config, name: str) -> Any:
    """`detection_train.<name>` as detection runs it for the config's method: bound in gin, else the protocol's
    per-method table (`detection_eval.per_method`), else the argument's default."""
    if f"detection_train.{name}" in c.bound:
        return c.bound[f"detection_train.{name}"]
    from pirl_ablate.evaluate.detection_protocol import method_settings

    return method_settings(c.method, c["detection_eval.per_method"] or {}, {}).get(name, c[f"detection_train.{name}"])


def _pirl(c: Config) -> bool:
    return c.method == "pirl"


def _npid(c: Config) -> bool:
    return c.method == "npid"


def _jigsaw(c: Config) -> bool:
    return "jigsaw" in c.transform.split("+")


def _rotation_alone(c: Config) -> bool:
    """PIRL (Rotation): the paper augments the image, then rotates it (rotation+jigsaw rotates, then jigsaw crops)."""
    return c.method == "pirl" and c.transform == "rotation"


def _image_view(c: Config) -> bool:
    return c.method in ("pirl", "npid") and c["train.image_transform"] == "image"


def _resnet_rows() -> list[Row]:
    return [Row("method", "trunk", "Backbone.arch", "resnet50", "resnet50"),
            Row("method", "trunk stem: 7x7/2 conv + max-pool", "Backbone.small_stem", False, False),
            Row("method", "trunk width multiplier", "Backbone.width_multiplier", 1, 1)]


_TAU = {"pirl": "PIRL", "npid": "NPID"}

# The paper-scale recipe, row by row (paper Section 4 / VISSL's pirl_jigsaw_4node_resnet50.yaml unless named).
ROWS: tuple[Row, ...] = (
    Row("method", "method", "train.method"),
    Row("method", "transform", "train.transform", applies=lambda c: c.method in ("pirl", "jigsaw", "rotation")),
    Row("method", "lambda (Eq. 5)", "PIRL.lambda_", 0.5, 0.5, _pirl),
    *_resnet_rows(),
    Row("method", "embedding size of f, g and the bank", "heads.embed_dim", 128, 128, _pirl),
    Row("method", "linear heads (no MLP)", "heads.mlp_heads", False, False, lambda c: c.method in ("pirl", "npid")),
    Row("method", "patch pass updates BN statistics", "heads.patch_bn_stats", None, True, _jigsaw),
    Row("method", "permutations T (PIRL: all 9!)", "jigsaw.num_permutations", AnyOf((None,), "all 9!"), None,
        lambda c: c.method == "pirl" and _jigsaw(c)),
    Row("optimisation", "epochs", "train.epochs", AnyOf((800, 400), "800 (ablations 400)"), 800),
    Row("optimisation", "global batch", "train.batch_size", 1024, 1024),
    Row("optimisation", "peak lr", "peak_lr", 0.12, 0.12,
        value=lambda c: c["train.base_lr"] * c["train.batch_size"] / c["train.base_batch"]),
    Row("optimisation", "final lr / peak (cosine to 1.2e-4)", "train.final_lr_fraction", 1e-3, 1e-3),
    Row("optimisation", "warm-up epochs", "train.warmup_epochs", None, 0.0),
    Row("optimisation", "SGD momentum", "train.momentum", 0.9, 0.9),
    Row("optimisation", "weight decay", "train.weight_decay", 1e-4, 1e-4),
    Row("optimisation", "cosine stepped per", "train.schedule_per", None, "epoch", deviation="per-step cosine",
        switch="train.schedule_per = 'epoch'"),
    Row("optimisation", "precision", "train.precision", None, "fp32", deviation="bf16 autocast on CUDA",
        switch="train.precision = 'fp32'"),
    Row("optimisation", "precise-BN batches after the last epoch", "train.precise_bn_batches", None, 0,
        deviation="precise-BN", switch="train.precise_bn_batches = 0"),
    Row("views", "image view: crop size", "image.size", 224, 224, _image_view),
    Row("views", "image view: crop area", "image.scale", (0.08, 1.0), (0.08, 1.0), _image_view),
    Row("views", "image view: crop aspect ratio", "image.ratio", None, (3 / 4, 4 / 3), _image_view),
    Row("views", "image view: flip", "image.flip", True, True, _image_view),
    Row("views", "image view: brightness jitter", "image.brightness", None, 0.4, _image_view),
    Row("views", "image view: contrast jitter", "image.contrast", None, 0.4, _image_view),
    Row("views", "image view: saturation jitter", "image.saturation", None, 0.4, _image_view),
    Row("views", "image view: hue jitter", "image.hue", None, 0.2, _image_view),
    Row("views", "image view: grayscale p", "image.grayscale_p", None, 0.2, _image_view),
    Row("views", "image view: random photometric p", "image.random_photometric_p", None, 0.66, _image_view),
    Row("views", "jigsaw: crop resized to", "jigsaw.crop_size", 255, 255, _jigsaw),
    Row("views", "jigsaw: crop area (>= 60%)", "jigsaw.crop_scale", (0.6, 1.0), (0.6, 1.0), _jigsaw),
    Row("views", "jigsaw: grid", "jigsaw.grid", 3, 3, _jigsaw),
    Row("views", "jigsaw: patch size", "jigsaw.patch_size", 64, 64, _jigsaw),
    Row("views", "jigsaw: per-patch hue jitter", "jigsaw.hue", None, 0.2, _jigsaw),
    Row("views", "jigsaw: per-patch grayscale p", "jigsaw.grayscale_p", None, 0.2, _jigsaw),
    Row("views", "jigsaw: per-patch random photometric p", "jigsaw.random_photometric_p", None, 0.66, _jigsaw),
    Row("views", "rotation: augment to 224 first", "rotation.augment", True, None, _rotation_alone),
    Row("negatives", "negative source", "train.negatives", "memory_bank", "memory_bank",
        lambda c: c.method in ("pirl", "npid")),
    Row("negatives", "N negatives (PIRL)", "PIRL.num_negatives", 32000, 32000, lambda c: _pirl(c) and c.bank),
    Row("negatives", "N negatives (NPID / NPID++)", "NPID.num_negatives",
        AnyOf((4096, 32000), "4,096 (NPID) / 32,000 (NPID++)"), None, lambda c: _npid(c) and c.bank),
    *(Row("negatives", f"estimator ({loss})", f"{loss}.estimator", "nce", "nce", lambda c, m=m: c.method == m)
      for m, loss in _TAU.items()),
    *(Row("negatives", f"temperature ({loss})", f"{loss}.tau", 0.07, 0.07, lambda c, m=m: c.method == m)
      for m, loss in _TAU.items()),
    *(Row("negatives", f"Z ({loss})", f"{loss}.z", "fixed", "fixed", lambda c, m=m: c.method == m)
      for m, loss in _TAU.items()),
    Row("negatives", "Z from the first batch's scores of", "PIRL.z_from", None, "transformed", _pirl),
    Row("negatives", "bank initialisation", "MemoryBank.init", "random", "random", lambda c: c.bank),
    Row("negatives", "bank momentum", "MemoryBank.momentum", 0.5, 0.5, lambda c: c.bank),
    Row("negatives", "positive excluded from the negatives", "MemoryBank.exclude_positive", None, False,
        lambda c: c.bank),
    Row("negatives", "a fresh negative draw per term", "MemoryBankNegatives.per_term", None, True,
        lambda c: c.bank and _pirl(c)),
    Row("evaluation", "linear: features of", "linear_eval.mode", "online", "online"),
    Row("evaluation", "linear: pooling (about 9k per layer)", "linear_eval.pooling", "vissl", "vissl"),
    Row("evaluation", "linear: crop", "linear_eval.crop_size", None, 224),
    Row("evaluation", "linear: epochs", "linear_eval.epochs", 28, 28),
    Row("evaluation", "linear: lr per 256", "linear_eval.lr_per_256", 0.01, 0.01),
    Row("evaluation", "linear: batch", "linear_eval.batch_size", None, 256),
    Row("evaluation", "linear: momentum", "linear_eval.momentum", 0.9, 0.9),
    Row("evaluation", "linear: Nesterov", "linear_eval.nesterov", None, True),
    Row("evaluation", "linear: weight decay", "linear_eval.weight_decay", 5e-4, 5e-4),
    Row("evaluation", "linear: lr x0.1 at epochs (paper: two drops)", "linear_eval.milestones", None, (8, 16, 24)),
    Row("evaluation", "VOC07 SVM: input", "svm_eval.view", None, "squash"),
    Row("evaluation", "VOC07 SVM: input size", "svm_eval.view_size", None, 224),
    Row("evaluation", "VOC07 SVM: pooling", "svm_eval.pooling", None, "vissl"),
    Row("evaluation", "VOC07 SVM: AP", "svm_eval.ap", None, "voc"),
    Row("evaluation", "VOC07 SVM: costs", "svm_eval.costs", None, (0.01, 0.1, 1, 2, 5, 10, 15, 20, 50, 100, 1000)),
    Row("evaluation", "VOC07 SVM: folds", "svm_eval.folds", None, 3),
    Row("evaluation", "VOC07 SVM: max iterations", "svm_eval.max_iter", None, 2000),
    Row("evaluation", "detection: model", "detector.arch", "c4", "c4"),
    Row("evaluation", "detection: iterations (VOC07+12)", "detection_train.iterations", 25000, 25000),
    Row("evaluation", "detection: lr x0.1 at", "detection_train.steps", (17000,), (17000,)),
    Row("evaluation", "detection: images per batch", "detection_train.batch_size", 16, 16),
    Row("evaluation", "detection: BatchNorm", "detector.norm", "frozen", "frozen"),
    Row("evaluation", "detection: lr", "detection_train.lr", ByMethod(0.003, 0.02), ByMethod(0.002, 0.02),
        value=lambda c: _detection_setting(c, "lr")),
    Row("evaluation", "detection: warm-up iterations", "detection_train.warmup_iters", ByMethod(1000, 100),
        ByMethod(1000, 100), value=lambda c: _detection_setting(c, "warmup_iters")),
    Row("evaluation", "detection: test scale", "detector.test_scale", 800, 800),
)


@dataclass
class Line:
    """A row as a config has it: `status` is "same", "differs", "deviation", "swept", "not trained" or "info"."""

    row: Row
    ours: Any
    status: str

    @property
    def pretraining(self) -> bool:
        return self.row.section in PRETRAINING


@dataclass
class Card:
    lines: list[Line] = field(default_factory=list)

    def differences(self, pretraining_only: bool = False) -> list[Line]:
        """The lines that differ from the reference (every section, or the pre-training ones only)."""
        return [ln for ln in self.lines if ln.status == "differs" and (ln.pretraining or not pretraining_only)]

    def deviations(self) -> list[Line]:
        return [ln for ln in self.lines if ln.status == "deviation"]


def matches(value: Any, reference: Any) -> bool:
    """Whether `value` is `reference` (floats to 1e-9 relative, sequences element by element, AnyOf: any)."""
    if isinstance(reference, AnyOf):
        return any(matches(value, r) for r in reference.values)
    if isinstance(reference, (tuple, list)) or isinstance(value, (tuple, list)):
        return (isinstance(value, (tuple, list)) and isinstance(reference, (tuple, list))
                and len(value) == len(reference) and all(matches(v, r) for v, r in zip(value, reference)))
    if isinstance(reference, bool) or isinstance(value, bool) or reference is None or value is None:
        return value == reference and type(value) is type(reference)
    if isinstance(reference, (int, float)) and isinstance(value, (int, float)):
        return math.isclose(value, reference, rel_tol=1e-9, abs_tol=1e-12)
    return value == reference


def card_of(c: Config, swept: Sequence[str] = ()) -> Card:
    """The card of the operative values `c`; `swept` keys (a sweep's axes) may differ from the reference."""
    card = Card()
    for row in ROWS:
        if not row.applies(c):
            continue
        ours = row.value(c) if row.value is not None else c[row.key]
        reference = row.paper if row.paper is not None else row.vissl
        if isinstance(reference, ByMethod):
            reference = reference.of(c.method)
        if reference is None:
            status = "info"
        elif row.section == "optimisation" and not row.deviation and c.method not in PAPER_SCHEDULES:
            status = "info"
        elif row.key in swept:
            status = "swept"
        elif row.section != "method" and row.section in PRETRAINING and not c.trains:
            status = "not trained"
        elif matches(ours, reference):
            status = "same"
        else:
            status = "deviation" if row.deviation else "differs"
        card.lines.append(Line(row, ours, status))
    return card


def recipe_card(files: Sequence[str | Path], bindings: Sequence[str] = ()) -> Card:
    """The card of the config `files` + `bindings`."""
    text = config.parse(files, bindings, finalize=False)
    return card_of(Config(_unscoped(config.bindings_of(text))))


def sweep_cards(path: str | Path, bindings: Sequence[str] = (), gin_files: Sequence[str] = ()
                ) -> list[tuple[Any, Card]]:
    """(run, card) for every run of the sweep file `path`, each run's swept keys allowed to differ."""
    from pirl_ablate.sweep import load_sweep

    sweep = load_sweep(path, bindings, gin_files)
    cards = []
    for run in sweep.runs:
        config.parse_text(run.config, finalize=False)
        cards.append((run, card_of(Config(_unscoped(config.bindings_of(run.config))), swept=tuple(run.bindings))))
    gin.clear_config()
    return cards


def _unscoped(bound: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in bound.items() if "/" not in k}


def show_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(show_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return "-" if value is None else str(value)


def card_text(card: Card, title: str) -> str:
    """The card as plain lines, one per row under its section: `key = value   paper ...   VISSL ...   mark`."""
    lines = [title]
    section = None
    width = min(48, max((len(f"{ln.row.key} = {show_value(ln.ours)}") for ln in card.lines), default=0))
    for ln in card.lines:
        r = ln.row
        if r.section != section:
            section = r.section
            lines.append(f"  {section}")
        mark = {"same": "", "info": "", "swept": "  swept", "not trained": "  (not trained)",
                "deviation": f"  deviation: {r.deviation} (back: {r.switch})",
                "differs": "  DIFFERS"}[ln.status]
        lines.append(f"    {f'{r.key} = {show_value(ln.ours)}':<{width}}  paper {show_value(r.paper):<12} "
                     f"VISSL {show_value(r.vissl):<12} {r.what}{mark}")
    return "\n".join(lines)
