"""The user cache every derived or downloaded file goes to: $PIRL_ABLATE_CACHE, else $XDG_CACHE_HOME/pirl_ablate,
else ~/.cache/pirl_ablate."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    if os.environ.get("PIRL_ABLATE_CACHE"):
        return Path(os.environ["PIRL_ABLATE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pirl_ablate"
