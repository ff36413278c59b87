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
the mode a plain open() would give them (0666 less the user's umask).
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
import tempfile
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from pirl_ablate.errors import UserError

PACKAGES = ("pirl-ablate", "torch", "torchvision", "kornia", "gin-config", "submitit", "pandas", "numpy",
            "scikit-learn")

STATUS_DONE = "done"
STATUS_FAILED = "failed"
STATUS_RUNNING = "running"
STATUS_PENDING = "pending"
TMP_SUFFIX = ".tmp"
FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(UserError):
    """No space left (or quota exceeded) while writing a file; the file is left as it was."""


class NotWritable(UserError):
    """A results folder that cannot be written (read-only file system, permissions); nothing was written."""


class LinkRefused(UserError):
    """A file or folder pirl-ablate would write inside a results folder is a symbolic link."""


class UnreadableFile(UserError):
    """A results file that exists but is not what pirl-ablate writes (truncated, not UTF-8, not a JSON object)."""


# ----------------------------------------------------------------------------------------------- atomic writes
def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(fh)` on a temporary file beside `path`, then rename it over `path`.

    If `write` raises (or the process dies) the previous content of `path` is untouched; a temporary file left by
    a killed process is removed by `remove_orphan_temporaries` when its run starts again.
    A full disk raises DiskFull ("disk full writing PATH") and leaves no temporary file behind.
    """
    path = Path(path)
    with _disk_full_named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would outlive the rename: the mode open() would give
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    return path


@contextlib.contextmanager
def _disk_full_named(path: Path) -> Iterator[None]:
    """ENOSPC / EDQUOT (also as torch.save's RuntimeError around it) -> DiskFull naming `path`; a folder that
    cannot be written (read-only, another user's) -> NotWritable naming `path`."""
    try:
        yield
    except OSError as e:
        if e.errno in FULL:
            raise DiskFull(f"disk full writing {path} (free some space, or write elsewhere with --out)") from None
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise NotWritable(f"cannot write {path}: {e.strerror} (give a folder you can write to, e.g. --out "
                              "DIR, or make it writable)") from None
        raise
    except RuntimeError as e:  # torch.save reports a failed write as RuntimeError; the OSError is its cause
        if isinstance(e.__cause__ or e.__context__, OSError) and (e.__cause__ or e.__context__).errno in FULL:
            raise DiskFull(f"disk full writing {path} (free some space, or write elsewhere with --out)") from None
        raise


def no_link(path: str | os.PathLike) -> Path:
    """`path` as a Path, unless it is a symbolic link: LinkRefused naming it and its target. Writers check the files
    they append to and the folders inside a run folder they write into (evals/, checkpoints/, features/,
    tensorboard/), so that nothing is written outside the results folder through a link; files written whole are
    renamed over their target, which replaces a link rather than writing through it."""
    path = Path(path)
    if path.is_symlink():
        raise LinkRefused(f"{path}: is a symbolic link (to {os.readlink(path)}); pirl-ablate writes nothing through "
                          "a link: remove it and run again")
    return path


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import torch

    return atomic_write(path, lambda fh: torch.save(obj, fh))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All complete lines of a JSON-lines file (a torn last line from a killed writer is ignored)."""
    rows = []
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.endswith("\n"):
                rows.append(json.loads(line))
    return rows


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

        with _disk_full_named(self.metrics_path):
            self.path.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.metrics_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
            except OSError as e:
                if e.errno == errno.ELOOP:  # a symbolic link: its target is not ours to append to
                    no_link(self.metrics_path)
                raise
            line = json.dumps(row, sort_keys=True, default=_json_default) + "\n"
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


def read_json_object(path: str | os.PathLike) -> dict:
    """A JSON object file; FileNotFoundError if it is missing, UnreadableFile (naming it) if it is truncated, not
    UTF-8, not JSON or not an object."""
    try:
        obj = read_json(path)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise UnreadableFile(f"{path}: unreadable ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(obj, dict):
        raise UnreadableFile(f"{path}: unreadable (a JSON {type(obj).__name__}, not an object)")
    return obj


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
