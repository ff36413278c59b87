"""User-facing errors: printed by the CLI as one line, exit status 2, no traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in what the user gave us (a file, a binding, a name, a value).

    The message is one line that names the file/key/value and says what would be right.
    """


class ConfigError(UserError, ValueError):
    """A gin file or binding that cannot be used."""


class UnknownNameError(UserError, KeyError):
    """A registry lookup of a name that was never registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class DataError(UserError, ValueError):
    """A dataset that is missing, corrupt or too small for what was asked."""


def close_matches(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Names from `candidates` that look like `name` (typos, case), best first."""
    candidates = list(candidates)
    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)
    return [lowered[h] for h in hits]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean `x`?)' or a list of what is valid when nothing is close."""
    candidates = sorted(candidates)
    hits = close_matches(name, candidates)
    if hits:
        return " (did you mean " + " or ".join(f"`{h}`" for h in hits) + "?)"
    if len(candidates) <= 12:
        return " (valid: " + ", ".join(candidates) + ")"
    return ""
