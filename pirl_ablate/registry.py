"""Name -> factory registries behind `@register_transform`, `@register_method`, `@register_table`, ...

A registry holds the plain classes and functions as written. Listeners hear of every entry, those registered
before they subscribed and those registered later: the gin edge (`pirl_ablate.gin_edge`) subscribes and makes each
entry configurable under its gin name, so a new entry is usable from a gin file as soon as its module is imported.
`pirl-ablate list ...` reads `Registry.describe()`.

Core code that builds a configurable thing by name asks a `Configuration` for its configured values: the plain
one (`PLAIN`) configures nothing; the gin edge hands the core a `GinConfiguration` that fills in gin's bindings.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from pirl_ablate.errors import UnknownNameError, did_you_mean

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any  # the registered class or function, as written
    gin_name: str | None  # its name in gin files; None: gin does not see it
    doc: str  # the docstring's first paragraph, joined into one line
    params: dict[str, Any]  # keyword parameters and their defaults (inspect.Parameter.empty: required)


def _summary(obj: Any) -> str:
    """The docstring's first paragraph (its lines up to the first blank one) as one line: a summary that wraps over
    several source lines stays whole."""
    doc = (inspect.getdoc(obj) or "").strip()
    return " ".join(line.strip() for line in doc.split("\n\n", 1)[0].splitlines())


def signature_parameters(obj: Any) -> dict[str, inspect.Parameter] | None:
    """The parameters of function `obj`, or of class `obj`'s constructor, without `self` / `cls`; None when it has
    no signature (a builtin). The one signature reader of the registries, the gin error hints and the sweep checks."""
    try:
        sig = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)
    except (TypeError, ValueError):
        return None
    return {p.name: p for p in sig.parameters.values() if p.name not in ("self", "cls")}


def _params(obj: Any) -> dict[str, Any]:
    """The keyword parameters of `obj` and their defaults (`Entry.params`)."""
    params = signature_parameters(obj) or {}
    return {name: p.default for name, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


class Registry:
    """A named collection of factories of one kind ("transform", "loss", ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._listeners: list[Callable[[Entry], None]] = []

    def register(self, name: str, *, gin_name: str | None = None, configurable: bool = True
                 ) -> Callable[[T], T]:
        """Decorator: register `obj` as `name` (returned unchanged), configurable as `gin_name` (default: `name`).

        Duplicate names raise ValueError. Pass `configurable=False` for objects gin should not see. Every listener
        (`subscribe`) hears of the new entry.
        """

        def decorator(obj: T) -> T:
            if name in self._entries:
                prev = self._entries[name].obj
                raise ValueError(
                    f"{self.kind} `{name}` is already registered by "
                    f"{getattr(prev, '__module__', '?')}.{getattr(prev, '__qualname__', prev)}; pick another name"
                )
            entry = Entry(name=name, obj=obj, gin_name=(gin_name or name) if configurable else None,
                          doc=_summary(obj), params=_params(obj))
            self._entries[name] = entry
            for listener in self._listeners:
                listener(entry)
            return obj

        return decorator

    def subscribe(self, listener: Callable[[Entry], None]) -> None:
        """Call `listener(entry)` for every entry: those registered so far, now, and each later one as it comes."""
        self._listeners.append(listener)
        for entry in list(self._entries.values()):
            listener(entry)

    def get(self, name: str) -> Any:
        """The registered object; an unknown name raises UnknownNameError with close matches."""
        try:
            return self._entries[name].obj
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} `{name}`{did_you_mean(name, self._entries)}"
            ) from None

    def entry(self, name: str) -> Entry:
        self.get(name)
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def describe(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


F = TypeVar("F", bound=Callable[..., Any])


class Configuration:
    """Where the configured values of a configurable come from, for core code that builds one by name.

    `bind(name, fn)` is `fn` with the values configured under `name` filling the arguments a call does not give
    (`scope`: the values configured in that scope win, e.g. a dataset's "test" split); `values(name)` are those
    values. This one configures nothing (`fn` itself, no values); `pirl_ablate.gin_edge.GinConfiguration` answers
    from gin.
    """

    def bind(self, name: str, fn: F, scope: str | None = None) -> F:
        return fn

    def values(self, name: str) -> dict[str, Any]:
        return {}

    def settings(self, name: str, fn: Callable[..., Any]) -> dict[str, Any]:
        """`fn`'s keyword defaults with the values configured under `name` in their place (what a call of
        `bind(name, fn)` that gives no keywords would use)."""
        params = {key: p.default for key, p in (signature_parameters(fn) or {}).items()
                  if p.default is not inspect.Parameter.empty}
        params.update({k: v for k, v in self.values(name).items() if k in params})
        return params


PLAIN = Configuration()
