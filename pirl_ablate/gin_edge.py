"""The gin edge: the one module that registers the core's configurables with gin, under the names gin files use.

The core (`methods/ losses/ models/ transforms/ data/ evaluate/`) is plain classes and functions; none of it imports
gin. Here each registry (transforms, methods, negative sources, datasets, evaluation protocols) is subscribed to:
every entry, built-in or registered later (a user's `@register_transform` in a module a gin file imports), becomes
`gin.external_configurable` under its gin name. The other configurables the core defines are registered below
(`Backbone`, `MemoryBank`, `loader`, `knn_eval`, ...). gin's external configurables are wrappers: calling the
class or function as written still takes no bindings. So the edges call the wrapper (`configured(name)`), or hand
the core `GIN`, a `Configuration` whose `bind(name, fn)` is that wrapper: `pirl_ablate.build` for training,
`run_evaluations` below for evaluation. A configurable subclass built through its wrapper takes its own bindings
only (`NPID.*`, not `PIRL.*`; `moco_v2.*`, not `image.*`). The edges' own settings are configurables where they are
defined (`train.*` and `heads.*` in `pirl_ablate.build`, `sweep.*` in `pirl_ablate.sweep.spec`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import gin

from pirl_ablate import config
from pirl_ablate.data import DATASETS, LoaderOptions
from pirl_ablate.data.voc import write_synthetic_voc
from pirl_ablate.evaluate import PROTOCOLS, EvalSettings
from pirl_ablate.evaluate import run_evaluations as evaluate_run
from pirl_ablate.evaluate.detection import build_detector, train_detector
from pirl_ablate.evaluate.knn import knn_scores
from pirl_ablate.evaluate.linear import train_linear_probe
from pirl_ablate.evaluate.registry import runs_data_parallel
from pirl_ablate.losses import NEGATIVES, MemoryBank
from pirl_ablate.methods import METHODS
from pirl_ablate.models import Backbone
from pirl_ablate.registry import Configuration, Entry, Registry
from pirl_ablate.transforms import TRANSFORMS

F = TypeVar("F", bound=Callable[..., Any])

_CONFIGURED: dict[str, tuple[Any, Callable]] = {}  # gin name -> (the object as written, gin's wrapper of it)


def external(obj: F, name: str, denylist: Sequence[str] = ()) -> F:
    """Register `obj` with gin as `name` (arguments in `denylist` are not configurable); its gin-aware wrapper."""
    wrapper = gin.external_configurable(obj, name, denylist=list(denylist) or None)
    _CONFIGURED[name] = (obj, wrapper)
    return wrapper


def configured(name: str) -> Callable:
    """gin's wrapper of the configurable registered here as `name`: calling it fills in the bound arguments."""
    return _CONFIGURED[name][1]


def build(registry: Registry, name: str, **kwargs: Any) -> Any:
    """The entry `name` of `registry` built with `kwargs`, its gin bindings filling the arguments not given."""
    entry = registry.entry(name)
    return (configured(entry.gin_name) if entry.gin_name else entry.obj)(**kwargs)


def expose(registry: Registry, denylist: Sequence[str] = ()) -> None:
    """Register every entry of `registry` that has a gin name with gin (`external`): those it holds now and each
    later one as it is registered."""

    def register(entry: Entry) -> None:
        if entry.gin_name:
            external(entry.obj, entry.gin_name, denylist)

    registry.subscribe(register)


class GinConfiguration(Configuration):
    """A `Configuration` answering from gin's current config."""

    def bind(self, name: str, fn: F, scope: str | None = None) -> F:
        obj, wrapper = _CONFIGURED.get(name, (fn, fn))
        if obj is not fn:
            raise ValueError(f"gin name `{name}` is registered for {obj!r}, not {fn!r}")
        if scope is None:
            return wrapper

        def scoped(*args: Any, **kwargs: Any) -> Any:
            with gin.config_scope(scope):
                return wrapper(*args, **kwargs)

        return scoped  # type: ignore[return-value]

    def values(self, name: str) -> dict[str, Any]:
        return dict(gin.get_bindings(name))


GIN = GinConfiguration()

for _registry in (TRANSFORMS, METHODS, NEGATIVES, DATASETS):
    expose(_registry)
expose(PROTOCOLS, denylist=["ctx"])
external(Backbone, "Backbone")
external(MemoryBank, "MemoryBank", denylist=["size", "dim", "generator"])
external(LoaderOptions, "loader")
external(write_synthetic_voc, "synthetic_voc")
external(EvalSettings, "evaluation")
external(knn_scores, "knn_eval")
external(train_linear_probe, "linear_probe")
external(build_detector, "detector")
external(train_detector, "detection_train", denylist=["model", "annotations", "out_dir", "device", "source"])


def data_parallel_protocols(protocols: Sequence[str], bindings: Sequence[str] = ()) -> set[str]:
    """Those of `protocols` that, configured by `bindings` (gin text), run over all ranks of a process group
    (`pirl_ablate.evaluate.registry.runs_data_parallel`: detection; linear in its online mode)."""
    config.parse((), bindings)
    return {p for p in protocols if p in PROTOCOLS and runs_data_parallel(p, GIN)}


def run_evaluations(run_dir: str | Path, protocols: Sequence[str], dataset: str | None = None,
                    layers: Sequence[str] = ("res5",), *, gin_files: Sequence[str] = (),
                    bindings: Sequence[str] = ()) -> dict[str, dict]:
    """`pirl_ablate.evaluate.run_evaluations` configured by `gin_files` and `bindings` (`evaluation.*`, each
    protocol's settings under its gin name, `linear_probe.*`, `knn_eval.*`, `detector.*`, `loader.*`, ...); a
    module a gin file imports may register protocols of its own. Used by `pirl-ablate eval` and by sweeps."""
    config.parse(gin_files, bindings)
    return evaluate_run(run_dir, protocols, dataset, layers, settings=configured("evaluation")(),
                        configuration=GIN, loader_options=configured("loader")())
