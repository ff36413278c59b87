"""Writing and reading results files safely: the layer under `pirl_ablate.runs` (the run folder) and every other
writer of results (TensorBoard events, feature caches, checkpoints, reports).

Every file is written to a temporary file in the same folder, flushed, fsynced and renamed over the target, so a
killed process leaves either the previous file or the new one, never half of one; files get the mode a plain open()
would give them (0666 less the user's umask). Nothing is written through a symbolic link (`no_link`). A full disk,
a folder that cannot be written, a link and a file that is not what pirl-ablate writes are each one UserError naming
the path.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from pirl_ablate.errors import UserError

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


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(fh)` on a temporary file beside `path`, then rename it over `path`.

    If `write` raises (or the process dies) the previous content of `path` is untouched; a temporary file left by
    a killed process is removed by `remove_orphan_temporaries` when its run starts again.
    A full disk raises DiskFull ("disk full writing PATH") and leaves no temporary file behind.
    """
    path = Path(path)
    with disk_full_named(path):
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
def disk_full_named(path: Path) -> Iterator[None]:
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
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import torch

    return atomic_write(path, lambda fh: torch.save(obj, fh))


def json_default(obj: Any) -> Any:
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
