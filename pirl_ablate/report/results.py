"""The one results loader: every run folder under a root into one long pandas DataFrame.

Layout of the frame (one row per run x evaluation x group x metric, "long" so that any table is a filter plus a
pivot)::

    run_id   sweep   variant   seed   status   reason   wall_s   start   end   path
    <one column per gin binding any run swept, e.g. "PIRL.lambda_"; NaN where a run did not bind it>
    protocol   dataset   group   metric   value

- `protocol`/`dataset` come from `evals/<protocol>-<dataset>.json` ("linear", "knn", "invariance", "semisup");
  `group` is a layer ("res5") or a label fraction ("1%"), `metric` e.g. "top1"; `value` a float as written.
- The numeric entries of result.json's "final" appear with protocol "final" (dataset and group "").
- A run with no metric at all (running, failed, missing, or done without evaluations) still has exactly one row,
  with protocol, metric and value missing, so that no run is ever silently dropped.
- `status` is done | failed | running (meta.json, no result.json yet) | pending (an expected run whose folder was
  created by the sweep but not started) | missing (an expected run with no folder).
- Expected runs come from every sweep record (`sweep.json`, written by `pirl-ablate sweep` into its sweep folder
  before anything is submitted: the runs exactly as expanded and submitted) under the root, plus any passed in.
- `sweep` is meta.json's "sweep", else the name of the folder holding the run folder.
- `config:<binding>` columns (only for the bindings asked for with `config_keys`) hold the value the run's operative
  config (config.gin) gives that binding, e.g. for runs started with `pirl-ablate train --bind` rather than a sweep.

`frame.attrs["bindings"]` lists the binding columns; `frame.attrs["left_out"]` lists (run id, reason) for what was
read but left out: an unreadable evaluation file or sweep record, a second copy of a run folder (same sweep and run
id). An unreadable meta.json or result.json makes its run failed, with the file named as the reason.

Histograms (invariance evaluations, Figure 4) stay in their
files; `read_histograms(frame)` reads them for the rows that need them.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pirl_ablate import config
from pirl_ablate.runs import (
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_PENDING,
    STATUS_RUNNING,
    UnreadableFile,
    read_json_object,
)

STATUS_MISSING = "missing"

RUN_COLUMNS = ("run_id", "sweep", "variant", "seed", "status", "reason", "wall_s", "start", "end", "path")
METRIC_COLUMNS = ("protocol", "dataset", "group", "metric", "value")


SWEEP_RECORD = "sweep.json"  # pirl_ablate.sweep.drive.write_sweep_record: {"name", "runs": [{run_id, ...}]}


@dataclass(frozen=True)
class ExpectedRun:
    """A run a sweep asks for (its sweep record or the expansion of its file), whether or not it ever started.
    `folder`: where its run folder goes (default: <results root>/<sweep>/<run_id>)."""

    run_id: str
    sweep: str
    bindings: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    variant: str | None = None
    folder: Path | None = None


def load_results(root: str | os.PathLike, expected: Iterable[ExpectedRun] = (),
                 config_keys: Sequence[str] = ()) -> pd.DataFrame:
    """Every run folder under `root` (any depth), plus a row for each expected run (from the sweep records under
    `root` and from `expected`) that never started.

    An expected run matches a folder by (sweep, run_id). `config_keys`: gin bindings whose operative values
    (config.gin) become `config:<binding>` columns.
    """
    root = Path(root)
    records: list[dict[str, Any]] = []
    binding_names: dict[str, None] = {f"config:{k}": None for k in config_keys}
    seen: set[tuple[str, str]] = set()
    run_paths, sweep_records = _walk(root)
    left_out: list[tuple[str, str]] = []
    expected = [*(e for path in sweep_records for e in _read_sweep_record(path, left_out)), *expected]
    first_copy: dict[tuple[str, str], Path] = {}
    for run_path in run_paths:
        run, rows = _read_run(run_path, root, left_out)
        key = (run["sweep"], run["run_id"])
        if key in first_copy:  # a copied run folder is the same run, not another seed
            left_out.append((run["run_id"], f"{run_path}: a copy of run {run['run_id']} (read from "
                                            f"{first_copy[key]}), counted once"))
            continue
        first_copy[key] = run_path
        if config_keys:
            run["bindings"].update(operative_values(run_path / "config.gin", config_keys))
        binding_names.update(dict.fromkeys(run["bindings"]))
        seen.add((run["sweep"], run["run_id"]))
        records.extend(_flatten(run, rows))
    for exp in expected:
        if (exp.sweep, exp.run_id) in seen:
            continue
        seen.add((exp.sweep, exp.run_id))
        point = ", ".join([*([f"variant {exp.variant}"] if exp.variant else []),
                           *(f"{k}={v!r}" for k, v in exp.bindings.items()), f"seed {exp.seed}"])
        folder = exp.folder or root / exp.sweep / exp.run_id
        if folder.is_dir():
            status, reason = STATUS_PENDING, f"submitted, not started ({point})"
        else:
            status, reason = STATUS_MISSING, f"no run folder {folder} (not run yet: {point})"
        run = {"run_id": exp.run_id, "sweep": exp.sweep, "variant": exp.variant, "seed": exp.seed,
               "status": status, "reason": reason, "wall_s": None, "start": None, "end": None, "path": None,
               "bindings": _hashable(exp.bindings)}
        binding_names.update(dict.fromkeys(run["bindings"]))
        records.extend(_flatten(run, []))
    columns = [*RUN_COLUMNS, *binding_names, *METRIC_COLUMNS]
    frame = pd.DataFrame.from_records(records, columns=columns)
    frame["value"] = frame["value"].astype(float)
    frame["wall_s"] = frame["wall_s"].astype(float)
    frame.attrs["bindings"] = list(binding_names)
    frame.attrs["left_out"] = left_out
    return frame


def runs_of(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run: the run columns and its bindings (the metric columns dropped)."""
    cols = [*RUN_COLUMNS, *frame.attrs.get("bindings", [])]
    return frame.drop_duplicates(subset=["sweep", "run_id"])[cols].reset_index(drop=True)


def read_histograms(frame: pd.DataFrame) -> dict[tuple[str, str], dict[str, list[float]]]:
    """{(run_id, dataset): {"edges": [...], "counts": [...]}} for every invariance row of `frame` with a histogram."""
    out: dict[tuple[str, str], dict[str, list[float]]] = {}
    inv = frame[(frame["protocol"] == "invariance") & frame["path"].notna()]
    for run_id, dataset, path in inv[["run_id", "dataset", "path"]].drop_duplicates().itertuples(index=False):
        data = _load_json(Path(path) / "evals" / f"invariance-{dataset}.json")
        hist = (data or {}).get("histogram")
        if hist and hist.get("edges") and hist.get("counts"):
            out[(run_id, dataset)] = {"edges": list(map(float, hist["edges"])),
                                      "counts": list(map(float, hist["counts"]))}
    return out


# ------------------------------------------------------------------------------------------------------ reading
def _walk(root: Path) -> tuple[list[Path], list[Path]]:
    """(run folders: holding meta.json or result.json, sorted; sweep records: sweep.json files, sorted).
    Run folders are not descended into (checkpoints, evals); hidden folders (.submitit) are skipped."""
    runs: list[Path] = []
    sweeps: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        if "meta.json" in filenames or "result.json" in filenames:
            runs.append(Path(dirpath))
            dirnames.clear()  # a run folder does not hold other run folders
            continue
        if SWEEP_RECORD in filenames:
            sweeps.append(Path(dirpath) / SWEEP_RECORD)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    return sorted(runs), sorted(sweeps)


def _read_sweep_record(path: Path, left_out: list[tuple[str, str]]) -> list[ExpectedRun]:
    record = _load_json(path) or {}
    if "_unreadable" in record:
        left_out.append((path.parent.name, record["_unreadable"]))
        return []
    name = record.get("name") or path.parent.name
    return [ExpectedRun(run_id=str(r["run_id"]), sweep=name, bindings=r.get("bindings") or {}, seed=r.get("seed"),
                        variant=r.get("variant"), folder=path.parent / str(r["run_id"]))
            for r in record.get("runs", []) if isinstance(r, dict) and "run_id" in r]


def _load_json(path: Path) -> Any:
    """A JSON object file, None if missing; {"_unreadable": reason} if it is truncated, not UTF-8 or not an object
    (a hand-edited or foreign file: the run is reported, not the crash)."""
    try:
        return read_json_object(path)
    except FileNotFoundError:
        return None
    except UnreadableFile as e:
        return {"_unreadable": str(e)}


def _read_run(path: Path, root: Path, left_out: list[tuple[str, str]]
              ) -> tuple[dict[str, Any], list[tuple[str, str, str, str, Any]]]:
    """The run's columns and its metric rows; an unreadable evaluation file is appended to `left_out` as
    (run id, reason) and skipped."""
    meta = _load_json(path / "meta.json")
    if meta is None:  # a run folder (it has result.json) that lost meta.json
        meta = {"_unreadable": f"{path / 'meta.json'}: missing (the run's sweep point and seed are lost; run it "
                               "again)"}
    result = _load_json(path / "result.json")
    parent = path.parent.name if path.parent != root else ""
    no_meta = "_unreadable" in meta  # without its meta.json a run has no sweep point: never a data row
    if no_meta:
        status, reason, meta, result = STATUS_FAILED, meta["_unreadable"], {}, None
    elif result is None:
        status, reason = STATUS_RUNNING, f"started {meta.get('start') or '?'}, no result.json yet"
    elif "_unreadable" in result:
        status, reason, result = STATUS_FAILED, result["_unreadable"], None
    else:
        status = result.get("status", STATUS_FAILED)
        reason = result.get("reason") if status != STATUS_DONE else None
    run = {
        "run_id": str(meta.get("run_id") or path.name),
        "sweep": meta.get("sweep") or parent,
        "variant": meta.get("variant"),
        "seed": meta.get("seed"),
        "status": status,
        "reason": reason,
        "wall_s": (result or {}).get("wall_s"),
        "start": meta.get("start"),
        "end": meta.get("end"),
        "path": str(path),
        "bindings": _hashable(meta.get("bindings") or {}),
    }
    rows: list[tuple[str, str, str, str, Any]] = []
    for name, value in ((result or {}).get("final") or {}).items():
        if _is_number(value):
            rows.append(("final", "", "", name, value))
    evals_dir = path / "evals"
    names = sorted(n for n in os.listdir(evals_dir) if n.endswith(".json")) if evals_dir.is_dir() else []
    for name in names if not no_meta else ():
        data = _load_json(evals_dir / name) or {}
        if "_unreadable" in data:
            left_out.append((str(run["run_id"]), data["_unreadable"]))
            continue
        stem = name[:-len(".json")]
        protocol = data.get("protocol") or stem.split("-", 1)[0]
        dataset = data.get("dataset") or (stem.split("-", 1) + [""])[1]
        for group, metrics in (data.get("metrics") or {}).items():
            for metric, value in (metrics or {}).items():
                if _is_number(value):
                    rows.append((protocol, dataset, str(group), metric, value))
    return run, rows


def operative_values(config_path: Path, keys: Sequence[str]) -> dict[str, Any]:
    """{"config:<key>": value} for the `keys` that config.gin binds (read by gin's parser, `config.bindings_of`: the
    last binding of a key wins; gin references and macros are their text). A config.gin that is not UTF-8 gives what
    its decodable lines bind (bytes that are not UTF-8 read as U+FFFD); one that is not gin, what its lines that are
    gin on their own bind."""
    try:
        text = config_path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    try:
        bound = config.bindings_of(text)
    except config.GIN_ERRORS:
        bound = {}
        for line in text.splitlines():
            with contextlib.suppress(*config.GIN_ERRORS):
                bound.update(config.bindings_of(line))
    wanted = set(keys)
    return _hashable({f"config:{key}": str(value) if isinstance(value, str) else value
                      for key, value in bound.items() if key in wanted})


def _flatten(run: dict[str, Any], rows: list[tuple[str, str, str, str, Any]]) -> Iterator[dict[str, Any]]:
    base = {k: run[k] for k in RUN_COLUMNS}
    base.update(run["bindings"])
    if not rows:
        yield {**base, "protocol": None, "dataset": None, "group": None, "metric": None, "value": None}
    for protocol, dataset, group, metric, value in rows:
        yield {**base, "protocol": protocol, "dataset": dataset, "group": group, "metric": metric,
               "value": float(value)}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _hashable(bindings: dict[str, Any]) -> dict[str, Any]:
    """Binding values usable as group keys: lists and dicts become their JSON text; names keep no prefix unless
    they would shadow a fixed column; a configurable renamed since the run was recorded takes its current name."""
    out = {}
    for key, value in bindings.items():
        key = config.current_key(key)
        name = f"binding:{key}" if key in RUN_COLUMNS or key in METRIC_COLUMNS else key
        out[name] = json.dumps(value, sort_keys=True) if isinstance(value, (list, dict, tuple)) else value
    return out
