"""The kill -9 and resume harness the training tests share: one config trained twice at once, straight through and
SIGKILLed after its first checkpoint then resumed, through `pirl-ablate train` in subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sweep_jobs import PATIENCE_S

from pirl_ablate import checkpoint

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str) -> subprocess.Popen:
    """`pirl-ablate -q ARGS` in a subprocess with one OpenMP thread, run from the repository."""
    return subprocess.Popen([sys.executable, "-m", "pirl_ablate.cli", "-q", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def train_cli(cfg: Path, out: Path) -> subprocess.Popen:
    """`pirl-ablate -q train CFG --out OUT` in a subprocess (`cli`)."""
    return cli("train", str(cfg), "--out", str(out))


def whole_and_killed(cfg: Path, folder: Path, epochs: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train `cfg` (`epochs` epochs) into folder/whole and folder/killed at once; kill -9 the second after its
    first checkpoint (asserting it was interrupted before the end, without a result.json), resume it, and return
    both runs' last checkpoints (whole, killed-and-resumed)."""
    whole, killed = train_cli(cfg, folder / "whole"), train_cli(cfg, folder / "killed")
    last = folder / "killed" / "checkpoints" / "last.pt"
    deadline = time.time() + PATIENCE_S
    while not last.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # into the next epoch
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert not (folder / "killed" / "result.json").exists()
    assert checkpoint.load(last)["epoch"] < epochs  # it really was interrupted
    resumed = train_cli(cfg, folder / "killed")
    assert resumed.wait(timeout=PATIENCE_S) == 0, resumed.stderr.read()
    assert whole.wait(timeout=PATIENCE_S) == 0, whole.stderr.read()
    return checkpoint.load(folder / "whole" / "checkpoints" / "last.pt"), checkpoint.load(last)
