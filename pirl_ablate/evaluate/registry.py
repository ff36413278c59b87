"""The evaluation-protocol registry: `@register_protocol("name")` on a function `protocol(ctx, **settings) -> dict`.

A registered protocol is reachable from `pirl-ablate eval --protocol name`, a sweep's `sweep.evaluate` and the
reports (which read `evals/<name>-<dataset>.json`) as soon as its module is imported (a gin file's `import`, like a
transform's). Its keyword arguments are its settings, gin-configurable under `gin_name` (`name` by default:
`my_protocol.k = 5`). It returns {"metrics": {GROUP: {METRIC: float}}, ...extras}; `run_evaluations` adds the
protocol, dataset, BN state, image size and wall time and writes the result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pirl_ablate.registry import PLAIN, Configuration, Registry

PROTOCOLS = Registry("protocol")
# the protocols that can run over a launcher's processes (torchrun, SLURM tasks), each with the rule that says
# whether its settings make it do so (`runs_data_parallel`)
DATA_PARALLEL: dict[str, Callable[[dict[str, Any]], bool]] = {}


def register_protocol(name: str, *, gin_name: str | None = None, configurable: bool = True,
                      data_parallel: bool | Callable[[dict[str, Any]], bool] = False
                      ) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Decorator: register the protocol `name` (see the module docstring). `data_parallel`: True when it splits its
    work over the ranks of a torch.distributed process group itself, or a rule `settings -> bool` when only some of
    its settings do (the linear protocol's online mode); the others run in one process."""
    register = PROTOCOLS.register(name, gin_name=gin_name, configurable=configurable)

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        register(fn)
        if data_parallel:
            DATA_PARALLEL[name] = data_parallel if callable(data_parallel) else (lambda settings: True)
        return fn

    return decorator


def protocol_settings(name: str, configuration: Configuration) -> dict[str, Any]:
    """The keyword defaults of protocol `name` with the values `configuration` binds under its gin name."""
    entry = PROTOCOLS.entry(name)
    return (configuration if entry.gin_name else PLAIN).settings(entry.gin_name or name, entry.obj)


def runs_data_parallel(name: str, configuration: Configuration) -> bool:
    """Whether protocol `name`, with the settings `configuration` gives it, runs over all ranks of a process group
    (so that a job of several processes runs it on every one of them, and the others on rank 0 alone)."""
    rule = DATA_PARALLEL.get(name)
    return rule is not None and rule(protocol_settings(name, configuration))


def protocols() -> list[str]:
    """The registered protocol names, sorted."""
    return PROTOCOLS.names()
