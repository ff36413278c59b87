"""Folder locks: one process at a time drives a sweep folder or writes a run folder.

A lock is an `fcntl.flock` on `<folder>/.lock`, held for as long as the process runs the work; the kernel drops it
when the process ends, however it ends (SIGKILL included), so a stale lock file never blocks anyone. While it holds
the lock the process writes who it is into the file ({"pid", "host", "command", "since"}), so the one that is
refused can say who holds it.

flock works across processes of one machine and on local file systems; on NFS it is emulated with POSIX locks by
Linux (since 2.6.12), which also covers processes on other hosts.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

from pirl_ablate.errors import UserError
from pirl_ablate.runs import LinkRefused, no_link, now

LOCK_FILE = ".lock"
_HELD: set[str] = set()  # lock files this process holds: taking one again inside is a no-op


class FolderBusy(UserError):
    """Another process holds the folder's lock."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str, *, wait: bool = False, name: str = LOCK_FILE
                ) -> Iterator[Path]:
    """Hold `folder`/`name` (.lock) for the duration of the block, or raise FolderBusy naming the holder.

    what: the work the lock protects, for the message ("sweep", "run"). wait: block until the holder ends instead
    of raising (saying once, on stderr, whom it waits for). name: another lock file, for work of which a folder
    holds several at once (an evaluation per protocol: `eval_lock`). Re-entrant within one process.
    """
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    if key in _HELD:  # this process holds it already (a sweep job around the training it calls)
        yield path
        return
    fd = _open_own(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            own = name == LOCK_FILE
            busy = f"{Path(folder)}: " + (f"this {what} folder is in use by " if own else f"its {what} is run by "
                                          ) + holder(path)
            if not wait:
                raise FolderBusy(f"{busy}; wait for it to end or stop it"
                                 + (" (another --out gives a separate folder)" if own else "")) from None
            print(f"{busy}; waiting for it to end", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        holder_record = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                         "since": now()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder_record) + "\n").encode("utf-8"), 0)
        _HELD.add(key)
        try:
            yield path
        finally:
            _HELD.discard(key)
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def eval_lock(run_dir: str | os.PathLike, protocol: str) -> contextlib.AbstractContextManager[Path]:
    """`folder_lock` of one protocol's evaluation of a run (`run_dir`/.eval-<protocol>.lock): two evaluations of
    one run and protocol never run at once (the second is refused, naming the first); other protocols, and the
    training that holds the run's .lock, go on beside it."""
    return folder_lock(run_dir, f"{protocol} evaluation", name=f".eval-{protocol}.lock")


def _open_own(path: Path) -> int:
    """A descriptor of the lock file `path`, created if missing; LinkRefused (nothing opened) if it is a symbolic
    link or a file with other names too (a hard link): the holder record would overwrite a file that is not the
    lock's."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            no_link(path)
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        what = "a hard link" if info.st_nlink > 1 else "not a file"
        raise LinkRefused(f"{path}: is not a lock file of its own ({what}); pirl-ablate writes nothing through a "
                          "link: remove it and run again")
    return fd


def holder(path: str | os.PathLike) -> str:
    """'pid N on HOST (COMMAND) since T' from a lock file, or 'another process' if it does not say yet."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        return f"pid {record['pid']} on {record['host']} ({record['command']}) since {record['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
