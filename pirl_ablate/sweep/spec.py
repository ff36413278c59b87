"""Sweep files: a gin file that includes a base config and binds `sweep.*`; expanded here into runs.

A sweep file, e.g. sweeps/lambda.gin (Figure 6)::

    include 'pirl_jigsaw.gin'
    sweep.name = 'lambda'
    sweep.grid = {'PIRL.lambda_': [0.0, 0.25, 0.5, 0.75, 1.0]}   # Cartesian product over every key
    sweep.zip = {'A.x': [1, 2], 'B.y': [3, 4]}                        # zipped axes: (1, 3), (2, 4)
    sweep.variants = {'PIRL': ["include 'pirl_jigsaw.gin'"],          # named configs: gin lines (bindings or
                      'Jigsaw': ["include 'jigsaw.gin'", 'X.y = 2']}  # includes) applied on top of the file
    sweep.seeds = [0, 1, 2]
    sweep.evaluate = ['linear', 'knn']                                 # on the pre-training dataset
    sweep.evaluate = {'svm': 'voc2007', 'linear': None}                # a dataset per protocol (None: the
    sweep.evaluate = ['svm:voc2007', 'linear']                         # pre-training one); the same as a list

Runs = variants x zip points x grid points x seeds. Each run's config is the sweep file, then the `--gin` files,
then the files its variant includes (any file already read, e.g. the scale they include, is skipped: see
pirl_ablate.config), then its lines (the variant's bindings, `key = value` for every swept key, the
seed binding, `--bind` overrides; a later binding wins; a baseline's own bindings, those of its lines and of
its included files' top level, are applied again after `--bind`: random init stays untrained under
`--bind train.epochs=...`), flattened with `gin.config_str()`. That text travels
with the job and is re-parsed in the worker: gin bindings live in a process-global registry that pickling does not
carry.

A value that is a string starting with '@' or '%' is written as a gin reference or macro (`'@resnet50'`);
any other value is written as a Python literal.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gin

from pirl_ablate import config
from pirl_ablate.errors import ConfigError, did_you_mean

EXECUTORS = ("local", "slurm", "debug")


# ------------------------------------------------------------------------------------------------ gin settings
@dataclass(frozen=True)
class SweepSettings:
    """What `sweep.*` binds (see `sweep_settings`)."""

    name: str | None
    grid: dict[str, list] | None
    zip: dict[str, list] | None
    variants: dict[str, list[str]] | None
    baselines: dict[str, list[str]] | None
    seeds: tuple[int, ...]
    evaluate: tuple[str, ...]  # 'protocol' or 'protocol:dataset' (`eval_targets` splits them)
    eval_layers: tuple[str, ...]
    executor: str
    job: str
    seed_binding: str | None


TRAINING_JOB = "pirl_ablate.build.run_training"  # sweep.job's default: pre-training one run of the sweep


@gin.configurable("sweep")
def sweep_settings(name: str | None = None, grid: dict | None = None, zip: dict | None = None,
                   variants: dict | None = None, baselines: dict | None = None, seeds: Sequence[int] = (0,),
                   evaluate: Sequence[str] | dict[str, str | None] = (),
                   eval_layers: Sequence[str] = ("res5",), executor: str = "local",
                   job: str = TRAINING_JOB, seed_binding: str | None = "train.seed"
                   ) -> SweepSettings:
    """The sweep a gin file binds.

    name: folder name under runs/ (default: the sweep file's stem). grid: {binding: values}, Cartesian product.
    zip: {binding: values}, all lists of one length, taken element-wise. variants: {name: gin line or lines}.
    baselines: {name: gin lines} run once per seed beside the sweep, not crossed with its axes (e.g.
    {'random init': ["include 'random_init.gin'"]}: smoke results are always reported beside random init).
    seeds: one run per seed, bound through `seed_binding` (train.seed). evaluate: protocols run after
    pre-training (pirl_ablate.evaluate.run_evaluations: linear, knn, invariance, semisup, svm, ...), each on the
    pre-training dataset or on the one it names: {'svm': 'voc2007'} or 'svm:voc2007' in a list (results:
    evals/<protocol>-<dataset>.json); the linear probe and SVMs on `eval_layers` (conv1, res2 ... res5).
    executor: local | slurm | debug (`--executor` overrides).
    job: dotted path of `fn(config_str, run_dir) -> dict` that trains one run (pirl_ablate.build.run_training).
    """
    return SweepSettings(name=name, grid=grid, zip=zip, variants=variants, baselines=baselines, seeds=tuple(seeds),
                         evaluate=_evaluate_items(evaluate), eval_layers=tuple(eval_layers), executor=executor, job=job,
                         seed_binding=seed_binding)


def _evaluate_items(evaluate: Sequence[str] | dict[str, str | None]) -> tuple[str, ...]:
    """`sweep.evaluate` as 'protocol' / 'protocol:dataset' strings (a dict {protocol: dataset or None} flattened;
    anything else is kept for `_check_settings` to refuse)."""
    if isinstance(evaluate, dict):
        return tuple(p if d is None else f"{p}:{d}" for p, d in evaluate.items())
    return tuple(evaluate) if isinstance(evaluate, (list, tuple)) else (evaluate,)


def eval_targets(evaluate: Sequence[str]) -> list[tuple[str, str | None]]:
    """[(protocol, dataset or None = the run's pre-training dataset)] of `SweepSettings.evaluate`."""
    return [(item.partition(":")[0], item.partition(":")[2] or None) for item in evaluate]


@dataclass(frozen=True)
class LocalSettings:
    parallelism: int
    threads_per_job: int
    timeout_min: int


@gin.configurable("local")
def local_settings(parallelism: int = 2, threads_per_job: int = 1, timeout_min: int = 24 * 60) -> LocalSettings:
    """The local executor: `parallelism` runs at a time, each with `threads_per_job` torch/OpenMP threads
    (2 x 1 fills this project's 2-core reference machine), killed after `timeout_min`."""
    return LocalSettings(parallelism=parallelism, threads_per_job=threads_per_job, timeout_min=timeout_min)


@dataclass(frozen=True)
class SlurmSettings:
    partition: str | None
    time_min: int
    nodes: int
    tasks_per_node: int
    gpus_per_node: int
    cpus_per_task: int
    mem_gb: float
    array_parallelism: int
    signal_delay_s: int
    max_num_timeout: int
    additional: dict[str, Any] = field(default_factory=dict)


@gin.configurable("slurm")
def slurm_settings(partition: str | None = None, time_min: int = 60, nodes: int = 1, tasks_per_node: int = 1,
                   gpus_per_node: int = 0, cpus_per_task: int = 1, mem_gb: float = 4,
                   array_parallelism: int = 32, signal_delay_s: int = 90, max_num_timeout: int = 3,
                   additional: dict | None = None) -> SlurmSettings:
    """The SLURM executor (gin/cluster/*.gin bind these). One job array per sweep, at most `array_parallelism`
    runs at a time; `tasks_per_node` > 1 starts one process per GPU for DDP. `signal_delay_s` before the time
    limit a job checkpoints and requeues itself, at most `max_num_timeout` times. `additional`: extra sbatch
    options ({'qos': 'high'})."""
    return SlurmSettings(partition=partition, time_min=time_min, nodes=nodes, tasks_per_node=tasks_per_node,
                         gpus_per_node=gpus_per_node, cpus_per_task=cpus_per_task, mem_gb=mem_gb,
                         array_parallelism=array_parallelism, signal_delay_s=signal_delay_s,
                         max_num_timeout=max_num_timeout, additional=dict(additional or {}))


# ------------------------------------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class Run:
    """One point of a sweep. `config` is the full gin text the worker re-parses."""

    run_id: str
    variant: str | None
    bindings: dict[str, Any]
    seed: int
    config: str


@dataclass(frozen=True)
class Sweep:
    name: str
    path: Path
    settings: SweepSettings
    local: LocalSettings
    slurm: SlurmSettings
    runs: list[Run]
    axes: list[str]  # swept binding keys, in file order


def run_id(bindings: dict[str, Any], seed: int, variant: str | None) -> str:
    """Stable id of a run: a short hash of its sorted bindings, seed and variant (not of the base config, so an
    edited base config keeps the ids and a re-run skips runs already done; bindings under the configurables' first
    names, `config.first_key`, so a renamed configurable keeps them too)."""
    key = json.dumps({"bindings": sorted((config.first_key(k), repr(v)) for k, v in bindings.items()), "seed": seed,
                      "variant": variant}, sort_keys=True)
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]


def gin_value(value: Any) -> str:
    """A swept value as gin text: '@x' / '%X' strings stay references, anything else is a Python literal."""
    if isinstance(value, str) and value[:1] in ("@", "%"):
        return value
    return repr(value)


def load_sweep(path: str | os.PathLike, bindings: Sequence[str] = (), gin_files: Sequence[str] = ()) -> Sweep:
    """Parse, validate and expand a sweep file. Any mistake raises ConfigError (file:line: reason) before anything
    is submitted."""
    files = [config.resolve_config_file(path), *(config.resolve_config_file(f) for f in gin_files)]
    config.parse(files, bindings, finalize=False)
    settings, local, slurm = sweep_settings(), local_settings(), slurm_settings()
    sweep_file = files[0]
    _check_settings(settings, files)
    grid = _axes(settings.grid, "grid", files)
    zipped = _axes(settings.zip, "zip", files)
    if settings.zip:
        lengths = {k: len(v) for k, v in zipped.items()}
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"{_where(files, 'sweep.zip')}: sweep.zip axes differ in length {lengths}; zipped "
                              "axes need one value each per point")
    if overlap := sorted(set(grid) & set(zipped)):
        raise ConfigError(f"{_where(files, overlap[0])}: {overlap[0]} is in both sweep.grid and sweep.zip")
    variants = _variants(settings.variants, files)
    baselines = _variants(settings.baselines, files, what="baselines") if settings.baselines is not None else []

    grid_points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    zip_points = [dict(zip(zipped, combo)) for combo in zip(*zipped.values())] if zipped else [{}]
    points = [*((False, *p) for p in itertools.product(variants, zip_points, grid_points, settings.seeds)),
              *((True, *p) for p in itertools.product(baselines, [{}], [{}], settings.seeds))]
    runs, checked = [], set()
    for baseline, (variant, includes, lines), zip_point, grid_point, seed in points:
        swept = {**zip_point, **grid_point}
        run_lines = [*lines, *(f"{k} = {gin_value(v)}" for k, v in swept.items())]
        if settings.seed_binding:
            run_lines.append(f"{settings.seed_binding} = {int(seed)}")
        # a baseline is defined by its own bindings (random init: train.epochs = 0): --bind does not override them
        own = _own_bindings(includes, lines) if baseline and bindings else []
        try:
            text = config.parse([*files, *includes], [*run_lines, *bindings, *own], finalize=False)
        except ConfigError as e:
            after = "sweep.baselines" if variant in (settings.baselines or {}) else "sweep.variants"
            where = _where(files, variant, after=after) if variant else _where(files, "sweep.")
            raise ConfigError(f"{where}: {'variant ' + repr(variant) + ': ' if variant else ''}{e}") from None
        if (baseline, variant) not in checked:  # a wrong-typed value fails here, not in every worker
            checked.add((baseline, variant))
            after = "sweep.baselines" if baseline else "sweep.variants"
            _check_line_types(lines, _where(files, variant, after=after) if variant else _display(sweep_file))
            _check_line_types(bindings, "--bind")
        runs.append(Run(run_id(swept, seed, variant), variant, swept, int(seed), text))
    gin.clear_config()
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{_display(sweep_file)}: the sweep expands to the same run twice "
                          "(a repeated value?)")
    return Sweep(name=settings.name or sweep_file.stem, path=sweep_file, settings=settings, local=local,
                 slurm=slurm, runs=runs, axes=[*zipped, *grid])


# ------------------------------------------------------------------------------------------------- validation
def _check_settings(s: SweepSettings, files: Sequence[Path]) -> None:
    if s.executor not in EXECUTORS:
        raise ConfigError(f"{_where(files, 'sweep.executor')}: sweep.executor {s.executor!r} is not one of "
                          f"{', '.join(EXECUTORS)}{did_you_mean(s.executor, EXECUTORS)}")
    if not s.seeds or not all(isinstance(x, int) and not isinstance(x, bool) for x in s.seeds):
        raise ConfigError(f"{_where(files, 'sweep.seeds')}: sweep.seeds must be a non-empty list of integers, "
                          f"got {list(s.seeds)!r}")
    if len(set(s.seeds)) != len(s.seeds):
        raise ConfigError(f"{_where(files, 'sweep.seeds')}: sweep.seeds repeats a seed: {list(s.seeds)!r}")
    _check_evaluate(s.evaluate, files)
    if s.name is not None and (not isinstance(s.name, str) or not re.fullmatch(r"[\w.\-]+", s.name)):
        raise ConfigError(f"{_where(files, 'sweep.name')}: sweep.name {s.name!r} must be a folder name "
                          "(letters, digits, _ . -)")
    for what, value in (("grid", s.grid), ("zip", s.zip), ("variants", s.variants)):
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{_where(files, 'sweep.' + what)}: sweep.{what} must be a dict, got "
                              f"{type(value).__name__}")
    if s.grid is not None and not s.grid and not s.zip and not s.variants:
        raise ConfigError(f"{_where(files, 'sweep.grid')}: sweep.grid is empty: give at least one "
                          "{'Configurable.param': [values]}")


def _check_evaluate(evaluate: Sequence, files: Sequence[Path]) -> None:
    """Every `sweep.evaluate` item names a protocol (and, after ':', a registered dataset), each protocol once."""
    from pirl_ablate.data.registry import DATASETS
    from pirl_ablate.evaluate import PROTOCOLS, protocols

    where = _where(files, "sweep.evaluate")
    seen = set()
    for item in evaluate:
        if not isinstance(item, str):
            raise ConfigError(f"{where}: sweep.evaluate item {item!r} must be a protocol name ('svm') or "
                              "'protocol:dataset' ('svm:voc2007'), or the dict {'svm': 'voc2007'}")
        protocol, dataset = eval_targets([item])[0]
        if protocol not in PROTOCOLS:
            raise ConfigError(f"{where}: sweep.evaluate protocol {protocol!r} is not one of "
                              f"{', '.join(protocols())}{did_you_mean(protocol, protocols())}")
        if dataset is not None and dataset not in DATASETS.names():
            raise ConfigError(f"{where}: sweep.evaluate dataset {dataset!r} (for {protocol}) is not a registered "
                              f"dataset{did_you_mean(dataset, DATASETS.names())}")
        if protocol in seen:
            raise ConfigError(f"{where}: sweep.evaluate names {protocol!r} twice")
        seen.add(protocol)


def _axes(axes: dict | None, what: str, files: Sequence[Path]) -> dict[str, list]:
    out: dict[str, list] = {}
    for key, values in (axes or {}).items():
        where = _where(files, key, after=f"sweep.{what}")
        if not isinstance(key, str):
            raise ConfigError(f"{where}: sweep.{what} key {key!r} must be a binding name string like "
                              "'PIRL.lambda_'")
        if not isinstance(values, (list, tuple)):
            raise ConfigError(f"{where}: sweep.{what}[{key!r}] must be a list of values, got {values!r}")
        if not values:
            raise ConfigError(f"{where}: sweep.{what}[{key!r}] is empty: give at least one value")
        expected = _check_binding(key, where)
        for v in values:
            _check_type(key, v, expected, where, what)
        out[key] = list(values)
    return out


def _check_binding(key: str, where: str) -> Any:
    """Check that `[scope/]Configurable.param` (or a macro) exists; return its current value or default
    (inspect.Parameter.empty when unknown)."""
    selector = key.rsplit("/", 1)[-1]
    if "." not in selector:  # a macro: must be defined by the config
        try:
            return gin.query_parameter(f"%{selector}")
        except ValueError:
            raise ConfigError(f"{where}: macro `{selector}` is not defined in the config "
                              f"(define `{selector} = ...` before sweeping it)") from None
    name, param = selector.rsplit(".", 1)
    if config.configurable_target(name) is None:
        raise ConfigError(f"{where}: unknown configurable `{name}` in `{key}`"
                          f"{did_you_mean(name, config.configurable_names())}")
    params = config.configurable_parameters(name)
    if params is None:
        return inspect.Parameter.empty
    if param not in params:
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return inspect.Parameter.empty
        raise ConfigError(f"{where}: `{name}` has no parameter `{param}`{did_you_mean(param, params)}")
    try:
        return gin.query_parameter(key)
    except ValueError:
        return params[param].default


def _type_ok(value: Any, expected: Any) -> bool:
    """Whether `value` has the type of `expected`, a parameter's binding or default (an int is fine for a float).
    Parameters without a plain default (None, required, a class or reference) and gin references pass."""
    if not isinstance(expected, (bool, int, float, str, list, tuple)) or isinstance(value, str) and value[:1] in "@%":
        return True
    if isinstance(expected, bool):
        return isinstance(value, bool)
    if isinstance(expected, (int, float)):
        return isinstance(value, (int, float) if isinstance(expected, float) else int) and not isinstance(value, bool)
    if isinstance(expected, str):
        return isinstance(value, str)
    return isinstance(value, (list, tuple))


def _check_type(key: str, value: Any, expected: Any, where: str, what: str) -> None:
    """A swept value must have the type of the parameter's current binding or default (`_type_ok`)."""
    if not _type_ok(value, expected):
        raise ConfigError(f"{where}: sweep.{what}[{key!r}] value {value!r} is {type(value).__name__}, "
                          f"expected {type(expected).__name__} (like {expected!r})")


def _check_line_types(lines: Sequence[str], where: str) -> None:
    """Each binding in gin `lines` has the type of its parameter's default (`_type_ok`): `train.epochs = 'two'` in a
    variant or a --bind is one line before anything is submitted, not a failure of every job."""
    for key, value in config.bindings_of("\n".join(lines)).items():
        name, _, param = key.rsplit("/", 1)[-1].rpartition(".")
        parameter = (config.configurable_parameters(name) or {}).get(param) if name else None
        if parameter is not None and not _type_ok(value, parameter.default):
            raise ConfigError(f"{where}: {key} = {value!r} is {type(value).__name__}, expected "
                              f"{type(parameter.default).__name__} (like {parameter.default!r})")


def _variants(variants: dict | None, files: Sequence[Path], what: str = "variants"
              ) -> list[tuple[str | None, list[Path], list[str]]]:
    """[(name, gin files it includes, its other gin lines)] of `sweep.variants` (or `sweep.baselines`); includes
    resolve against the sweep file's folder, gin/ and the current directory, and are parsed as files (so their own
    includes resolve against them)."""
    if variants is None:
        return [(None, [], [])]
    if not isinstance(variants, dict) or not variants:
        raise ConfigError(f"{_where(files, 'sweep.' + what)}: sweep.{what} must be a non-empty dict "
                          "{'name': [gin lines]}")
    out = []
    for name, lines in variants.items():
        where = _where(files, str(name), after=f"sweep.{what}")
        if isinstance(lines, str):
            lines = [lines]
        if not isinstance(name, str) or not isinstance(lines, (list, tuple)) or not all(
                isinstance(x, str) for x in lines):
            raise ConfigError(f"{where}: sweep.{what}[{name!r}] must map a name to gin lines, e.g. "
                              "{'PIRL': [\"include 'pirl_jigsaw.gin'\", 'PIRL.lambda_ = 0.5']}")
        includes, bindings = [], []
        for line in lines:
            m = config.INCLUDE.fullmatch(line.strip())
            if m is None:
                bindings.append(line)
                continue
            try:
                includes.append(config.resolve_config_file(m.group("path"), base=files[0].parent))
            except ConfigError as e:
                raise ConfigError(f"{where}: variant {name!r}: {e}") from None
        out.append((name, includes, bindings))
    return out


def _own_bindings(includes: Sequence[Path], lines: Sequence[str]) -> list[str]:
    """The bindings a baseline makes itself, as gin lines: those written at the top level of its included files
    (not of the files they include in turn) and its own lines."""
    own: dict[str, Any] = {}
    for path in includes:
        own.update(config.bindings_of(path.read_text(encoding="utf-8")))
    own.update(config.bindings_of("\n".join(lines)))
    return [f"{key} = {gin_value(value)}" for key, value in own.items()]


def _where(files: Sequence[Path], needle: str, after: str | None = None) -> str:
    """`file:line` of the first line holding `needle` (after the line holding `after`, if given)."""
    for f in files:
        lines = f.read_text(encoding="utf-8").splitlines()
        start = 0
        if after is not None:
            start = next((i for i, line in enumerate(lines) if after in line), 0)
        for i in range(start, len(lines)):
            if needle in lines[i]:
                return f"{_display(f)}:{i + 1}"
    return _display(files[0])


def _display(path: Path) -> str:
    """A path relative to the current directory when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
