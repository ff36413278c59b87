"""The benchmarks' timing loop: wall times of calls, each between two device synchronisations, after warm-up calls.

    from timing import median_ms, seconds, timings     # benchmarks/ is on sys.path for `python benchmarks/x.py`

    median_ms(step, repeats=5, device=device)           # median of 5 timed calls after 1 untimed one, in ms
    timings({"a": f, "b": g}, repeats=3)                # interleaved rounds: {"a": [s, s, s], "b": [...]}
    elapsed, result = seconds(lambda: work(), device)   # one call

On CUDA every timed call starts and ends with `torch.cuda.synchronize`, so a time covers the kernels the call
queued, not only their launch; on the CPU there is nothing to wait for.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def sync(device: torch.device | str | None) -> None:
    """Wait for the work queued on `device` (CUDA); nothing elsewhere."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], T], device: torch.device | str | None = None) -> tuple[float, T]:
    """(wall seconds of one call of `fn` between two synchronisations of `device`, its result)."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def timings(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device | str | None = None,
            warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of `repeats` calls of each function, after `warmup` untimed calls of each; the functions are called
    in turns, round by round, so that a change in the machine's load touches all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(seconds(fn, device)[0])
    return times


def median_ms(fn: Callable[[], object], repeats: int, device: torch.device | str | None = None,
              warmup: int = 1) -> float:
    """Median milliseconds of `repeats` calls of `fn` after `warmup` untimed ones."""
    return 1000 * statistics.median(timings({"fn": fn}, repeats, device, warmup)["fn"])
