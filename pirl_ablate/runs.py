"""The run folder: the one writer every command that produces results goes through.

Layout of a run folder::

    config.gin        operative gin config (what was actually used)
    meta.json         run id, seed, bindings, git revision, package versions, host, start/end time
    metrics.jsonl     one JSON object per line (per epoch), appended; on a restart rewritten to the rows of the
                      training its checkpoint holds (pirl_ablate.train)
    tensorboard/      the same numbers as TensorBoard events, and a grid of the training views
    checkpoints/      last.pt, written atomically
    evals/<name>.json evaluation results, one file per protocol (and dataset)
    result.json       written last: {"status": "done"|"failed", ...}

Every file except metrics.jsonl is written to a temporary file in the same folder, flushed, fsynced and renamed
over the target, so a killed process leaves either the previous file or the new one, never half of one. Files get
the mode a plain open() would give them (0666 less the user's umask): `pirl_ablate.files`, the layer under this one.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import platform
import socket
import subprocess
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from pirl_ablate.files import (
    TMP_SUFFIX,
    DiskFull,
    LinkRefused,
    NotWritable,
    UnreadableFile,
    atomic_torch_save,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    disk_full_named,
    json_default,
    no_link,
    read_json,
    read_json_object,
    read_jsonl,
)

PACKAGES = ("pirl-ablate", "torch", "torchvision", "kornia", "gin-config", "submitit", "pandas", "numpy",
            "scikit-learn")

STATUS_DONE = "done"
STATUS_FAILED = "failed"
STATUS_RUNNING = "running"
STATUS_PENDING = "pending"


# -------------------------------------------------------------------------------------------------- provenance
def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_revision(cwd: str | os.PathLike | None = None) -> str | None:
    """The git commit of the code (with '-dirty' for uncommitted changes), or None outside a checkout."""
    cwd = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# --------------------------------------------------------------------------------------------------- run folder
class RunDir:
    """A run folder. `start()` records provenance; `finish()`/`fail()` write result.json last."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # paths
    @property
    def config_path(self) -> Path:
        return self.path / "config.gin"

    @property
    def meta_path(self) -> Path:
        return self.path / "meta.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def result_path(self) -> Path:
        return self.path / "result.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def evals_dir(self) -> Path:
        return self.path / "evals"

    # writing
    def start(self, config: str, *, seed: int | None, run_id: str | None = None,
              bindings: dict[str, Any] | None = None, **extra: Any) -> dict:
        """Create the folder; write config.gin and meta.json. A restart keeps the first start time."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_path, config)
        previous = self._meta_to_update()
        meta = {
            **previous,
            "run_id": run_id or previous.get("run_id") or self.path.name,
            "seed": seed,
            "bindings": bindings if bindings is not None else previous.get("bindings", {}),
            "git_revision": git_revision(),
            "versions": package_versions(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "start": previous.get("start") or now(),
            "restarts": previous.get("restarts", -1) + 1,
            "last_start": now(),
            "end": None,
            **extra,
        }
        atomic_write_json(self.meta_path, meta)
        return meta

    def update_meta(self, **fields: Any) -> dict:
        meta = {**self._meta_to_update(), **fields}
        atomic_write_json(self.meta_path, meta)
        return meta

    def _meta_to_update(self) -> dict:
        """meta.json as it is, or {} when it is missing or unreadable (the writer then replaces it whole)."""
        try:
            return self.meta() or {}
        except UnreadableFile:
            return {}

    def write_config(self, config: str) -> None:
        atomic_write_text(self.config_path, config)

    def log_metrics(self, row: dict) -> str:
        """Append one JSON line (flushed and fsynced: a kill leaves at most a torn last line), and write the same
        numbers to the run's TensorBoard events (pirl_ablate.tensorboard). Returns the line."""
        from pirl_ablate.tensorboard import log_scalars

        with disk_full_named(self.metrics_path):
            self.path.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.metrics_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
            except OSError as e:
                if e.errno == errno.ELOOP:  # a symbolic link: its target is not ours to append to
                    no_link(self.metrics_path)
                raise
            line = json.dumps(row, sort_keys=True, default=json_default) + "\n"
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        log_scalars(self.path, row)
        return line

    def rewrite_metrics(self, lines: list[str]) -> None:
        """metrics.jsonl replaced (atomically) by exactly `lines`, as `log_metrics` returned them."""
        atomic_write_text(self.metrics_path, "".join(lines))

    def write_eval(self, name: str, result: dict) -> Path:
        return atomic_write_json(no_link(self.evals_dir) / f"{name}.json", result)

    def finish(self, **result: Any) -> dict:
        return self._write_result({"status": STATUS_DONE, **result})

    def fail(self, reason: str, **result: Any) -> dict:
        return self._write_result({"status": STATUS_FAILED, "reason": reason, **result})

    def retire_result(self) -> None:
        """A run about to run again: result.json moves to result.previous.json, so that the new attempt is not taken
        for finished (the previous outcome stays readable)."""
        if self.result_path.exists():
            os.replace(self.result_path, self.result_path.with_name("result.previous.json"))

    def _write_result(self, result: dict) -> dict:
        result = {**result, "end": now()}
        self.update_meta(end=result["end"])
        atomic_write_json(self.result_path, result)
        return result

    # reading: a file that exists but cannot be read raises UnreadableFile naming it
    def meta(self) -> dict | None:
        return _read_or_none(self.meta_path)

    def result(self) -> dict | None:
        return _read_or_none(self.result_path)

    def metrics(self) -> list[dict]:
        return read_jsonl(self.metrics_path)

    def evals(self) -> dict[str, dict]:
        if not self.evals_dir.is_dir():
            return {}
        return {p.stem: read_json_object(p) for p in sorted(self.evals_dir.glob("*.json"))}

    def status(self) -> str:
        """pending (nothing started), running (started, no result), done or failed."""
        result = self.result()
        if result is not None:
            return result.get("status", STATUS_FAILED)
        return STATUS_RUNNING if self.meta_path.exists() else STATUS_PENDING

    def is_done(self) -> bool:
        return self.status() == STATUS_DONE


def _read_or_none(path: Path) -> dict | None:
    try:
        return read_json_object(path)
    except FileNotFoundError:
        return None


def remove_orphan_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (`.<name>.<random>.tmp`) killed writers left in a run folder and its
    subfolders; call it only while holding the run folder's lock. Returns what was removed."""
    removed = []
    for p in Path(run_dir).rglob(f".*{TMP_SUFFIX}"):
        if p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


def iter_run_dirs(root: str | os.PathLike) -> Iterator[RunDir]:
    """Every run folder (a folder holding meta.json or result.json) under `root`, sorted by path."""
    root = Path(root)
    seen = set()
    for marker in ("meta.json", "result.json"):
        for p in root.rglob(marker):
            seen.add(p.parent)
    for p in sorted(seen):
        yield RunDir(p)


__all__ = [  # the run folder, and the file layer under it (pirl_ablate.files), importable from here as well
    "PACKAGES", "STATUS_DONE", "STATUS_FAILED", "STATUS_PENDING", "STATUS_RUNNING", "TMP_SUFFIX", "DiskFull",
    "LinkRefused", "NotWritable", "RunDir", "UnreadableFile", "atomic_torch_save", "atomic_write", "atomic_write_json",
    "atomic_write_text", "git_revision", "iter_run_dirs", "now", "package_versions", "read_json", "read_json_object",
    "read_jsonl", "remove_orphan_temporaries",
]
