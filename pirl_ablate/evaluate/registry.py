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

from pirl_ablate.registry import Registry

PROTOCOLS = Registry("protocol")
DATA_PARALLEL: set[str] = set()  # the protocols that run over a launcher's processes (torchrun, SLURM tasks)


def register_protocol(name: str, *, gin_name: str | None = None, configurable: bool = True,
                      data_parallel: bool = False) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Decorator: register the protocol `name` (see the module docstring); `data_parallel`: it splits its work over
    the ranks of a torch.distributed process group itself (the others run in one process)."""
    register = PROTOCOLS.register(name, gin_name=gin_name, configurable=configurable)

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        register(fn)
        if data_parallel:
            DATA_PARALLEL.add(name)
        return fn

    return decorator


def protocols() -> list[str]:
    """The registered protocol names, sorted."""
    return PROTOCOLS.names()
