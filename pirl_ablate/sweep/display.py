"""What `pirl-ablate status` shows: per run its state, epoch / total, last loss, last kNN, health warnings, elapsed
time and an estimate of the time left, read from the run folders (and, through `run_states`, the scheduler);
`--watch` redraws it in place (rich Live) until no run is queued or running.

An error appears once: runs that failed for the same reason point at one numbered line under the table, so a
dataset missing for six runs is one line, not six copies wrapped inside a narrow column.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from pirl_ablate.console import Fit
from pirl_ablate.health import TERMS
from pirl_ablate.report.results import operative_values
from pirl_ablate.runs import STATUS_DONE, STATUS_FAILED, STATUS_PENDING, STATUS_RUNNING, RunDir, UnreadableFile
from pirl_ablate.sweep.state import RunState, run_states

# each loss term's alignment margin (mean positive - mean negative cosine; > 0: the term works), in TERMS' order
ALIGN_HEADER = "align t I"
STATE_STYLE = {STATUS_DONE: "green", STATUS_FAILED: "bold red", STATUS_RUNNING: "yellow", STATUS_PENDING: "dim"}


@dataclass(frozen=True)
class RunProgress:
    """How far a run got: `epoch` of `total` (None: unknown), the last metrics row's loss, the last kNN monitor
    (a fraction), the last row's health numbers (`pirl_ablate.health`: each term's alignment margin, relative
    invariance, bank uniformity), health warnings (result.json's, else the last row's), seconds since its first
    start (to its end once it ended) and the estimated seconds left (mean epoch time x epochs left; None when not
    running or when training is over and only evaluation is left)."""

    epoch: int | None = None
    total: int | None = None
    loss: float | None = None
    knn: float | None = None
    warnings: list[str] = field(default_factory=list)
    elapsed_s: float | None = None
    eta_s: float | None = None
    margins: dict[str, float] = field(default_factory=dict)  # per loss term: mean positive - mean negative score
    rel_invariance: float | None = None
    uniformity: float | None = None


def run_progress(run_dir: str | Path, state: str, now: _dt.datetime | None = None) -> RunProgress:
    run = RunDir(run_dir)
    rows, meta, result = _readable(run.metrics, []), _readable(run.meta, None) or {}, _readable(run.result, None) or {}
    total = operative_values(run.config_path, ["train.epochs"]).get("config:train.epochs", result.get("epochs"))
    total = total if isinstance(total, int) else None
    last = rows[-1] if rows else {}
    knn = next((r["knn_top1"] for r in reversed(rows) if isinstance(r.get("knn_top1"), (int, float))), None)
    warnings = result.get("warnings") or last.get("warnings") or []
    elapsed = _elapsed(meta, result, now)
    epoch = last.get("epoch") if isinstance(last.get("epoch"), int) else (0 if state == STATUS_RUNNING else None)
    eta = None
    epoch_times = [r["epoch_s"] for r in rows if isinstance(r.get("epoch_s"), (int, float))]
    if state == STATUS_RUNNING and total is not None and epoch is not None and epoch < total and epoch_times:
        eta = sum(epoch_times) / len(epoch_times) * (total - epoch)  # (evaluation time after training: unknown)
    return RunProgress(epoch=epoch, total=total, loss=last.get("loss") if isinstance(last.get("loss"), float) else None,
                       knn=knn, warnings=[str(w) for w in warnings] if isinstance(warnings, list) else [str(warnings)],
                       elapsed_s=elapsed, eta_s=eta, margins=_margins(last),
                       rel_invariance=_number(last, "rel_invariance"), uniformity=_number(last, "uniformity"))


def run_elapsed(run_dir: str | Path, now: _dt.datetime | None = None) -> float | None:
    """Seconds since the run's first start (to its end once it ended), from meta.json and result.json only (cheap
    enough for every run of a sweep at every poll); None before it started."""
    run = RunDir(run_dir)
    return _elapsed(_readable(run.meta, None) or {}, _readable(run.result, None) or {}, now)


def _elapsed(meta: dict[str, Any], result: dict[str, Any], now: _dt.datetime | None) -> float | None:
    start, end = _time(meta.get("start")), _time(result.get("end") or meta.get("end"))
    return ((end or now or _dt.datetime.now(_dt.timezone.utc)) - start).total_seconds() if start else None


def _number(row: dict[str, Any], key: str) -> float | None:
    value = row.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _margins(row: dict[str, Any]) -> dict[str, float]:
    terms = {term: (_number(row, f"pos_sim_{term}"), _number(row, f"neg_sim_{term}")) for term in TERMS}
    return {term: pos - neg for term, (pos, neg) in terms.items() if pos is not None and neg is not None}


def _readable(read: Callable[[], Any], default: Any) -> Any:
    """read(), or `default` for a garbled file: the run's state already names it (sweep.state), progress shows
    nothing of it."""
    try:
        return read()
    except (UnreadableFile, ValueError):
        return default


def _time(stamp: Any) -> _dt.datetime | None:
    try:
        return _dt.datetime.fromisoformat(str(stamp)) if stamp else None
    except ValueError:
        return None


def sweep_time_left(finished_s: Sequence[float], running_elapsed_s: Sequence[float], queued: int,
                    parallelism: int) -> float | None:
    """Seconds until the sweep's last run ends, or None while no run has finished (nothing to estimate from).

    Every run is assumed to take the mean of the finished runs' durations `finished_s`: a running run has that
    less its elapsed time left (at least 0), and the `queued` runs start, one per slot, on whichever of the
    `parallelism` slots frees first (the local executor's `local.parallelism`, SLURM's `array_parallelism`).
    """
    if not finished_s:
        return None
    mean = sum(finished_s) / len(finished_s)
    slots = sorted(max(mean - e, 0.0) for e in running_elapsed_s)
    slots += [0.0] * max(parallelism - len(slots), 0)
    for _ in range(queued):
        slots[0] += mean
        slots.sort()
    return max(slots, default=0.0)


def duration(seconds: float | None) -> str:
    """"1h 02m", "3m 05s", "42s"; "" when unknown."""
    if seconds is None:
        return ""
    s = int(round(max(seconds, 0)))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


# ------------------------------------------------------------------------------------------------------ table
def status_view(record: dict[str, Any], folder: Path, states: Sequence[RunState] | None = None,
                now: _dt.datetime | None = None) -> Group:
    """The sweep's runs as a table (one row per run of the sweep record) and each distinct error once under it."""
    runs = record["runs"]
    if states is None:
        states = run_states([folder / r["run_id"] for r in runs], record.get("evaluate", ()))
    axes = record.get("axes", [])
    has_variants = any(r.get("variant") is not None for r in runs)
    counts = {k: sum(s.state == k for s in states) for k in STATE_STYLE}
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    table = Table(title=f"{record['name']} ({record.get('executor')}): {summary}", title_justify="left")
    table.add_column("run id", style="cyan", no_wrap=True)
    if has_variants:
        table.add_column("variant")
    for axis in axes:
        table.add_column(axis, justify="right")
    for name, justify in (("seed", "right"), ("state", "left"), ("epoch", "right"), ("loss", "right"),
                          ("kNN", "right"), (ALIGN_HEADER, "right"), ("inv", "right"), ("unif", "right"),
                          ("elapsed", "right"), ("left", "right"), ("notes", "left")):
        table.add_column(name, justify=justify, no_wrap=name != "notes")  # (narrower: stacked, by Fit)
    errors: dict[str, list[str]] = {}
    for run, state in zip(runs, states):
        p = run_progress(folder / run["run_id"], state.state, now)
        notes = [Text(f"⚠ {w}", style="yellow") for w in p.warnings]
        if state.detail and state.state == STATUS_FAILED:
            errors.setdefault(state.detail, []).append(run["run_id"])
            notes.append(Text(f"error [{list(errors).index(state.detail) + 1}]", style="red"))
        elif state.detail:
            notes.append(Text(state.detail, style="dim"))
        bindings = run.get("bindings", {})
        table.add_row(
            run["run_id"], *([run.get("variant") or ""] if has_variants else []),
            *(repr(bindings[a]) if a in bindings else "" for a in axes), str(run.get("seed")),
            Text(state.state, style=STATE_STYLE.get(state.state, "")),
            f"{p.epoch}/{p.total}" if p.epoch is not None and p.total is not None else "",
            f"{p.loss:.3f}" if p.loss is not None else "", f"{100 * p.knn:.1f}%" if p.knn is not None else "",
            " ".join(f"{p.margins[t]:+.2f}" if t in p.margins else "·" for t in TERMS) if p.margins else "",
            f"{p.rel_invariance:.2f}" if p.rel_invariance is not None else "",
            f"{p.uniformity:.2f}" if p.uniformity is not None else "",
            duration(p.elapsed_s) if state.state != STATUS_PENDING else "",
            f"~{duration(p.eta_s)}" if p.eta_s is not None else "", Text(" ").join(notes))
    lines = [Text(f"[{i}] {reason}  ({len(ids)} run{'s' if len(ids) > 1 else ''}: {', '.join(ids)})", style="red")
             for i, (reason, ids) in enumerate(errors.items(), 1)]
    return Group(Fit(table), *lines)


def sweep_live(states: Sequence[RunState]) -> bool:
    """Whether any run of the sweep is still queued or running (a job lives for it)."""
    return any(s.live for s in states)


def watch(record: dict[str, Any], folder: Path, interval_s: float = 2.0) -> list[RunState]:
    """Redraw `status_view` every `interval_s` seconds until no run is queued or running; the final states."""
    from rich.live import Live

    from pirl_ablate.console import out

    def states_now() -> list[RunState]:
        return run_states([folder / r["run_id"] for r in record["runs"]], record.get("evaluate", ()))

    states = states_now()
    with Live(status_view(record, folder, states), console=out, auto_refresh=False) as live:
        while sweep_live(states):
            time.sleep(interval_s)
            states = states_now()
            live.update(status_view(record, folder, states), refresh=True)
    return states
